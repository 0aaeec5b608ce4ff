"""The social insurance bureau's self-service kiosk (社保自助终端) against a development service:
a citizen shows a code with consent for the bureau, the kiosk identifies them once and shows
their eligibility for the minimum living allowance, the disability allowances and veterans'
benefits from their programme flags; codes without that consent, with consent for another
party or shown twice are refused. See README.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from idcode.terminaltoken import relying_party_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import Example

BUREAU = "武汉市人力资源和社会保障局"
PURPOSE = "benefit_eligibility"
#: What the kiosk asks for: the flags and where the citizen is registered. No name, no ID
#: number: eligibility needs neither, and the kiosk's screen faces the hall.
ATTRIBUTES = ["programmes", "residency"]
KIOSK = "kiosk-1"


@dataclass(frozen=True)
class Benefit:
    """A benefit the kiosk shows, and the programme flag (as disclosed) that makes a citizen
    eligible for it."""

    key: str
    title: str
    programme: str


BENEFITS = (
    Benefit("minimum_living_allowance", "最低生活保障 minimum living allowance", "low_income"),
    Benefit("disability_allowances", "残疾人两项补贴 disability allowances", "disability"),
    Benefit("veterans_benefits", "退役军人优待抚恤 veterans' benefits", "veteran"),
)
#: Where a citizen who is not enrolled applies: a registered resident or a residence-permit
#: holder at their street office, anyone else where their household is registered.
APPLY_AT = {
    "registered": ("street office", "apply at your street office (街道)"),
    "permit": ("street office", "apply at your street office (街道)"),
}
APPLY_ELSEWHERE = ("household", "apply where your household is registered (户籍地)")

#: What the kiosk's screen tells the citizen for each refusal: the code's problem, never who.
TELL = {
    "code_used": "this code has been used: please show a new one",
    "no_consent": f"this code carries no consent: in the app choose {BUREAU} and agree",
    "consented_to_another_party": "your consent is for another organisation: choose the bureau",
    "purpose_mismatch": "you agreed for another service: choose benefit eligibility",
    "revoked": "your citizen card is not active: please go to the card desk",
    "expired": "this code has expired: please show a new one",
}
TELL_OTHERWISE = "this code cannot be read: please show a new one"


def eligibility(disclosed: dict[str, Any]) -> tuple[dict[str, bool], tuple[str, str]]:
    """Each benefit's eligibility from the disclosed programme flags, and where to apply for
    those the citizen is not enrolled in (from the disclosed residency)."""
    programmes = set(disclosed.get("programmes") or ())
    eligible = {benefit.key: benefit.programme in programmes for benefit in BENEFITS}
    return eligible, APPLY_AT.get(str(disclosed.get("residency")), APPLY_ELSEWHERE)


def new_party_key(path: Path) -> dict[str, Any]:
    """Generate the bureau's Ed25519 key into ``path`` (owner-only), as the kiosk software
    does when it is installed; returns the public JWK the operator registers."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)  # a new key each run: this run registers the bureau anew
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return jwk


class Kiosk:
    """The kiosk software: it signs each request with the bureau's key, identifies the citizen
    once and shows the eligibility; it keeps nothing of the answer."""

    def __init__(self, example: Example, party_id: str, key_file: Path) -> None:
        self.example, self.party_id = example, party_id
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self.key = key
        self.visits: list[dict[str, Any]] = []

    def scan(self, caption: str, code: str) -> None:
        token = relying_party_token(self.party_id, self.key)  # single-use: one per request
        body = {"code": code, "purpose": PURPOSE, "counter": KIOSK}
        status, answer = self.example.ask("POST", "/v1/identify", token, body)
        visit: dict[str, Any] = {"scan": caption, "status": status}
        if status != 200:
            reason = answer.get("reason", "")
            print(f"{caption} → {status} {reason}\n    kiosk: {TELL.get(reason, TELL_OTHERWISE)}")
            self.visits.append({**visit, "outcome": reason})
            return
        eligible, (where, apply_text) = eligibility(answer["attributes"])
        print(f"{caption} → identified (subject {answer['subject'][:8]}…)")
        for benefit in BENEFITS:
            shown = (
                "eligible (enrolled)" if eligible[benefit.key] else f"not enrolled: {apply_text}"
            )
            print(f"    {benefit.title}: {shown}")
        self.visits.append(
            {
                **visit,
                "outcome": "identified",
                "subject": answer["subject"],
                "eligible": eligible,
                "apply_at": where,
            }
        )


def main() -> None:
    example = Example(
        "benefits",
        KIOSK,
        __file__,
        argparse.ArgumentParser(description=__doc__),
        terminals=False,
    )

    # The operator registers the bureau with the public half of the kiosk's key, and the
    # city's talent market, another party a citizen may consent to.
    key_file = example.workdir / "bureau.key"
    bureau: dict[str, Any] = example.call(
        "POST",
        "/v1/relying-parties",
        example.operator,
        {
            "name": BUREAU,
            "sector": "social_insurance",
            "purposes": [PURPOSE],
            "attributes": ATTRIBUTES,
            "public_jwk": new_party_key(key_file),
        },
    )
    print(f"registered {BUREAU}: relying party {bureau['id']}, key in {key_file}")
    market_key = Ed25519PrivateKey.generate()  # it never identifies anyone here
    market: dict[str, Any] = example.call(
        "POST",
        "/v1/relying-parties",
        example.operator,
        {
            "name": "武汉人才市场",
            "sector": "employment",
            "purposes": ["job_registration"],
            "attributes": ["name", "age_band"],
            "public_jwk": OKPAlgorithm.to_jwk(market_key.public_key(), as_dict=True),
        },
    )
    print(f"registered 武汉人才市场: relying party {market['id']}")

    sun = example.enrol("孙丽", residency="registered", programmes=["low_income", "disability"])
    zhou = example.enrol("周强", residency="non_resident", programmes=["veteran"])
    tokens = {card: example.citizen_token(card) for card in (sun, zhou)}

    def with_consent(card: str, to: str, attributes: list[str], purpose: str) -> str:
        """The app's code with consent; prints what the app says will be disclosed."""
        disclose = {"to": to, "attributes": attributes, "purpose": purpose}
        issued = example.call("POST", "/v1/codes", tokens[card], {"disclose": disclose})
        told = issued["disclose"]
        print(
            f"app: a code that shows {told['name']} {', '.join(told['attributes'])}, once, "
            f"for {told['purpose']}"
        )
        code: str = issued["code"]
        return code

    kiosk = Kiosk(example, bureau["id"], key_file)
    code_a = with_consent(sun, bureau["id"], ATTRIBUTES, PURPOSE)
    kiosk.scan("citizen A, consent for the bureau", code_a)
    kiosk.scan("the same code again", code_a)
    plain: str = example.call("POST", "/v1/codes", tokens[zhou])["code"]
    kiosk.scan("citizen B, a code without consent", plain)
    to_market = with_consent(zhou, market["id"], ["age_band"], "job_registration")
    kiosk.scan("citizen B, consent for the talent market", to_market)
    kiosk.scan(
        "citizen B, consent for the bureau", with_consent(zhou, bureau["id"], ATTRIBUTES, PURPOSE)
    )

    # Citizen A reads, in the app, who was told what about her.
    record = example.call("GET", "/v1/me/disclosures", tokens[sun])
    print("citizen A's disclosure record:")
    for entry in record:
        print(
            f"    {entry['at']} {entry['relying_party']['name']} ({entry['counter']}): "
            f"{', '.join(entry['attributes'])} for {entry['purpose']}"
        )

    # Registered anew each run: deactivated, the app stops listing this run's parties.
    for party in (bureau, market):
        example.call("POST", f"/v1/relying-parties/{party['id']}/deactivate", example.operator)
    print(f"deactivated this run's relying parties ({BUREAU}, 武汉人才市场)")

    if example.args.json:
        disclosures = [
            {
                "relying_party": e["relying_party"]["name"],
                "purpose": e["purpose"],
                "attributes": e["attributes"],
                "counter": e["counter"],
            }
            for e in record
        ]
        summary = {
            "example": example.here.name,
            "relying_party": bureau["id"],
            "visits": kiosk.visits,
            "disclosures": disclosures,
        }
        print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
