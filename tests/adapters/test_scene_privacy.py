"""Privacy across scenes: journals and uploads carry subjects keyed per scene, never the card
pseudonym, and the same card cannot be recognised from one scene's logs in another's."""

from __future__ import annotations

import json
from pathlib import Path

from idcode.claims import Programme
from idcode.decider import Decider
from idcode.scenes import load_adapter
from idcode.terminal.journal import Journal, JournalReplay
from idcode.testing import TestIssuer, random_card


def test_same_card_gets_unrelated_subjects_in_two_scenes_and_no_pseudonym_is_journaled(
    tmp_path: Path,
) -> None:
    issuer = TestIssuer()
    card = random_card(programmes=Programme.MEAL_SUBSIDY)
    journals: dict[str, bytes] = {}
    uploads: dict[str, str] = {}
    scenes: list[tuple[str, dict[str, object], dict[str, str]]] = [
        ("tourism", {}, {}),
        ("eldercare", {"meal_windows": []}, {"mode": "canteen"}),
    ]
    for scene, data, options in scenes:
        journal = Journal(tmp_path / f"{scene}.sqlite3")
        try:
            decider = Decider(
                issuer.bundle(scene, data=data),
                load_adapter(scene),
                prefix=issuer.prefix,
                replay=JournalReplay(journal),
                options=options,
            )
            scan, decision = decider.decide(issuer.mint(card), issuer.now, journal)
            entry = journal.record("00000000-0000-4000-8000-000000000001", scan, decision)
            uploads[scene] = json.dumps(entry.to_upload())
        finally:
            journal.close()
        journals[scene] = b"".join(path.read_bytes() for path in tmp_path.glob(f"{scene}.sqlite3*"))

    tourism = json.loads(uploads["tourism"])["subject"]
    canteen = json.loads(uploads["eldercare"])["subject"]
    assert tourism == issuer.subject(card, "tourism")
    assert canteen == issuer.subject(card, "eldercare")
    assert tourism != canteen
    for scene, raw in journals.items():
        assert card.pseudonym not in raw and card.pseudonym.hex().encode() not in raw, scene
        assert card.pseudonym.hex() not in uploads[scene]
    assert canteen.encode() not in journals["tourism"]
    assert tourism.encode() not in journals["eldercare"]
