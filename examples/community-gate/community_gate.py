"""A residential community gate against a development service: a resident enters with their
citizen code and a guest with the resident's visitor pass; a non-resident and a code shown
twice are refused. See README.md."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, for terminal_common
from terminal_common import Example


def main() -> None:
    example = Example(
        "community", "garden-court", __file__, argparse.ArgumentParser(description=__doc__)
    )

    # The operator enrols two people and uploads the community's resident roll (scene.json).
    resident = example.enrol("王芳", residency="registered")
    outsider = example.enrol("李强", residency="permit")  # lives in another community
    example.put_scene(example.scene_data(resident=resident))
    gate = example.provision("north-gate")

    # The resident invites a guest for the afternoon; the app sends the guest the pass.
    invitation = {
        "community": example.site,
        "valid_until": (datetime.now(UTC) + timedelta(hours=4)).isoformat(),
    }
    token = example.citizen_token(resident)
    guest_pass = example.call("POST", "/v1/visitor-passes", token, invitation)["pass"]

    resident_code = example.code(resident)
    example.scan(
        gate,
        [
            ("resident", resident_code),
            ("same code again", resident_code),
            ("non-resident", example.code(outsider)),
            ("guest with a visitor pass", guest_pass),
            ("the guest again, same pass", guest_pass),
        ],
    )
    example.finish()


if __name__ == "__main__":
    main()
