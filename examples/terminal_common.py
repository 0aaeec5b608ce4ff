"""What the terminal examples share: the requests an operator and a citizen's app make to the
service, the idcode commands they run, and printing the terminal's decisions. Each
examples/<example>/<example>.py uses it to tell its scene's story (see that README.md); the
service-hall counter, which has no terminal, uses its requests."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

from idcode.testing import random_id_number

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # the largest answer an example reads
REPO = Path(__file__).resolve().parents[1]  # idcode runs here: scripts/run's keys/ and data/


def idcode(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run an idcode command (this virtualenv's CLI) and return what it printed; stop the
    example if it fails. Its log (stderr) is shown only then."""
    done = subprocess.run(
        [sys.executable, "-m", "idcode.cli", *args],
        cwd=REPO,
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"idcode {' '.join(args[:2])} failed:\n{done.stderr}")
    return done.stdout


class Example:
    """One run of an example against the service: its scene, site and work directory."""

    def __init__(
        self,
        scene: str,
        site: str,
        script: str,
        parser: argparse.ArgumentParser,
        *,
        terminals: bool = True,
    ):
        parser.add_argument("--server", default="http://127.0.0.1:8000")
        parser.add_argument("--workdir", type=Path, help="terminal files (default: ./work)")
        parser.add_argument("--json", action="store_true", help="end with the decisions as JSON")
        self.args = parser.parse_args()
        self.server: str = self.args.server.rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            parser.error("--server must be an http:// or https:// URL")
        self.scene, self.site, self.here = scene, site, Path(script).resolve().parent
        self.workdir: Path = (self.args.workdir or self.here / "work").resolve()
        self.call("GET", "/healthz")  # before anything else: is the service there?
        if terminals:
            # New terminals each run: one holding the previous run's trust bundle would decide
            # with the previous scene data until its first sync.
            shutil.rmtree(self.workdir / "terminals", ignore_errors=True)
            (self.workdir / "terminals").mkdir(parents=True)
        else:  # a counter: its key and queue numbers, no terminals
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.operator = os.environ.get("IDCODE_OPERATOR_TOKEN") or (
            idcode("dev-token", "--admin").strip()  # development only
        )
        self.decisions: list[dict[str, Any]] = []
        self._citizen_tokens: dict[str, str] = {}
        self._root_written = False

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        """One JSON request to the service; a problem+json answer stops the example."""
        return self.ask(method, path, token, body, refusals=False)[1]

    def ask(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        *,
        refusals: bool = True,
    ) -> tuple[int, Any]:
        """One JSON request whose refusal is part of the story: its status and JSON answer,
        the problem document of a 4xx answer included. Anything else stops the example, as
        every refusal does with ``refusals=False``."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        # The URL is the --server the user gave, checked to be http(s) above.
        request = urllib.request.Request(  # noqa: S310
            self.server + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, json.loads(response.read(MAX_ANSWER_BYTES))
        except HTTPError as exc:
            problem = exc.read(2000).decode(errors="replace")
            if refusals and 400 <= exc.code < 500:
                try:
                    return exc.code, json.loads(problem)
                except ValueError:
                    pass  # not the service's problem document: stop below
            sys.exit(f"{method} {path}: {exc.code} {problem}")
        except URLError as exc:
            sys.exit(f"cannot reach {self.server} ({exc.reason}); is scripts/run running?")
        except (OSError, http.client.HTTPException, ValueError, RecursionError) as exc:
            # An answer that is not the service's JSON (another program on the port, a proxy):
            # say so and stop, rather than a traceback.
            sys.exit(
                f"{method} {path}: not an answer from the idcode service ({type(exc).__name__})"
            )

    def enrol(self, name: str, birth: date | None = None, **card: Any) -> str:
        """Enrol a card with a made-up ID number (which holds the birth date); its id."""
        body = {"id_number": random_id_number(birth), "name": name, **card}
        card_id: str = self.call("POST", "/v1/cards", self.operator, body)["id"]
        print(f"enrolled {name}: card {card_id} {json.dumps(card, ensure_ascii=False)}")
        return card_id

    def scene_data(self, **cards: str) -> dict[str, Any]:
        """scene.json, its "card:<name>" placeholders filled in with the cards' ids."""
        text = (self.here / "scene.json").read_text()
        for name, card_id in cards.items():
            text = text.replace(f"card:<{name}>", f"card:{card_id}")
        scene: dict[str, Any] = json.loads(text)
        return scene

    def put_scene(self, data: dict[str, Any]) -> None:
        path = f"/v1/scenes/{self.scene}/{self.site}"
        version = self.call("PUT", path, self.operator, data)["version"]
        print(f"scene data of {self.scene}/{self.site} set (version {version})")

    def citizen_token(self, card_id: str) -> str:
        """The citizen's ID token, as the city app's login gives it (development IdP here).
        Kept for the run, as the app keeps it for every code request until it expires (an
        hour): one ``idcode`` start per citizen, not per code."""
        if card_id not in self._citizen_tokens:
            self._citizen_tokens[card_id] = idcode("dev-token", card_id).strip()
        return self._citizen_tokens[card_id]

    def code(self, card_id: str) -> str:
        """A fresh code for the card, as the citizen's app asks for one."""
        code: str = self.call("POST", "/v1/codes", self.citizen_token(card_id))["code"]
        return code

    def provision(self, name: str, relying_party: str | None = None) -> Path:
        """Register a new terminal with the service and pin the city root key in it.
        ``relying_party``: the terminal belongs to that relying party (a hospital's kiosk)."""
        root = self.workdir / "root.json"
        if not self._root_written:  # once a run: every terminal pins the same root key
            root.write_text(idcode("keys", "jwks", "--root"))
            self._root_written = True
        terminal = self.workdir / "terminals" / name
        env = {**os.environ, "IDCODE_OPERATOR_TOKEN": self.operator}
        where = ["--scene", self.scene, "--site", self.site, "--server", self.server]
        if relying_party is not None:
            where += ["--relying-party", relying_party]
        idcode(
            "terminal", "provision", "--dir", str(terminal), *where, "--root", str(root), env=env
        )
        owner = f", a terminal of relying party {relying_party}" if relying_party else ""
        print(f"provisioned terminal {name} ({self.scene} at {self.site}{owner}) in {terminal}")
        return terminal

    def scan(self, terminal: Path, scans: list[tuple[str, str]], *flags: str) -> None:
        """Feed (caption, code) scans to `idcode terminal run` as a scanner would, and print
        each decision line it writes under its caption."""
        output = idcode("terminal", "run", "--dir", str(terminal), "--input", "stdin", *flags,
                        stdin="".join(code + "\n" for _, code in scans))  # fmt: skip
        decisions = [json.loads(line) for line in output.splitlines()]
        if len(decisions) != len(scans):
            sys.exit(f"{len(scans)} scans but {len(decisions)} decisions:\n{output}")
        for (caption, _), decision in zip(scans, decisions, strict=True):
            outcome = "admitted" if decision["admitted"] else decision["reason"]
            print(f"{caption} → {outcome}\n    {json.dumps(decision, ensure_ascii=False)}")
            self.decisions.append({"scan": caption, **decision})

    def finish(self, **more: Any) -> None:
        """With --json, print the summary: the example's name, its decisions and ``more``."""
        if self.args.json:
            example = self.here.name
            print(json.dumps({"example": example, "decisions": self.decisions, **more}))
