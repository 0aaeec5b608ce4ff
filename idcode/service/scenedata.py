"""Scene data per scene and site (residents, permits, tariffs, rules): validated by the scene's
adapter, with people named by card id turned into the scene's subjects, and delivered to that
site's terminals in their trust bundles.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idcode.errors import RequestRefused, SceneError
from idcode.scenes import (
    load_adapter,
    scene_names,
    subject_of,
)
from idcode.service.cards import record_audit
from idcode.service.models import (
    CardRecord,
    SceneDataRecord,
)
from idcode.service.pii import PersonalDataVault
from idcode.terminaltoken import MAX_TOKEN_LIFETIME, TERMINAL_AUDIENCE, terminal_token
from idcode.text import unstorable_reason

__all__ = ["MAX_TOKEN_LIFETIME", "TERMINAL_AUDIENCE", "terminal_token"]  # re-exported


def scene_data(session: Session, scene: str, site: str) -> SceneDataRecord | None:
    return session.get(SceneDataRecord, (scene, site))


def scene_data_version(session: Session, scene: str, site: str) -> int:
    """The version of (scene, site)'s data, 0 when it has none, without reading the data."""
    return int(
        session.scalar(
            select(SceneDataRecord.version).where(
                SceneDataRecord.scene == scene, SceneDataRecord.site == site
            )
        )
        or 0
    )


def put_scene_data(
    session: Session,
    scene: str,
    site: str,
    document: dict[str, Any],
    actor: str,
    vault: PersonalDataVault,
) -> SceneDataRecord:
    """Replace the scene data of (scene, site); its version goes up by one.

    Every ``"card:<card id>"`` in the document becomes that card's subject for the scene (for
    the site, in a site-scoped scene: a shop, a bus operator, a library), so
    operators can name people by card while terminals only ever see subjects; then the
    scene's adapter validates the result. RequestRefused says why not: ``unknown_scene``,
    ``unknown_card`` or ``invalid_scene_data``.
    """
    if scene not in scene_names():
        raise RequestRefused("unknown_scene", f"scene must be one of {', '.join(scene_names())}")
    problem = unstorable_reason(document)
    if problem is not None:
        # Refused, not cleaned: PostgreSQL cannot read \u0000 in JSON as text, and an
        # unpaired surrogate is no text at all. The adapter would refuse neither.
        raise RequestRefused("invalid_scene_data", f"the scene data {problem}")
    if document.get("linked_subjects"):
        # The service fills it in for a relying party's terminals, from the party's links;
        # an operator's list would be in the scene's subjects, which no link ever matches.
        raise RequestRefused(
            "invalid_scene_data",
            "linked_subjects is filled in by the service from a relying party's links "
            "(PUT /v1/links/{subject}); leave it out",
        )
    document = _resolve_card_references(
        session, document, vault.terminal_subject_key(scene, site), vault.profile.hash_name
    )
    try:
        load_adapter(scene).parse_data(document)
    except SceneError as exc:
        raise RequestRefused("invalid_scene_data", str(exc)) from None
    record = session.get(SceneDataRecord, (scene, site))
    if record is None:
        record = SceneDataRecord(scene=scene, site=site, document=document, version=1)
        session.add(record)
    else:
        record.document = document
        record.version += 1
    record_audit(
        session,
        actor,
        "scene.update",
        detail={"scene": scene, "site": site, "version": record.version},
    )
    return record


CARD_REFERENCE = "card:"
MAX_SCENE_DATA_DEPTH = 32
_LOOKUP_CHUNK = 1000


def _resolve_card_references(
    session: Session, document: dict[str, Any], subject_key: bytes, hash_name: str
) -> dict[str, Any]:
    """The document with each ``card:<id>`` text value replaced by the card's subject
    (keyed with ``hash_name``, the crypto profile's hash, as its terminals key theirs)."""
    references: set[str] = set()

    def collect(value: Any, depth: int) -> None:
        if depth > MAX_SCENE_DATA_DEPTH:
            # Bounds the recursion here and below; no scene's data nests half as deep.
            raise RequestRefused("invalid_scene_data", "scene data nests too deeply")
        if isinstance(value, str) and value.startswith(CARD_REFERENCE):
            references.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                collect(item, depth + 1)

    collect(document, 0)
    if not references:
        return document
    card_ids: dict[str, str] = {}  # reference -> card id as stored
    for reference in sorted(references):
        try:
            card_ids[reference] = str(uuid.UUID(reference.removeprefix(CARD_REFERENCE)))
        except ValueError:
            raise RequestRefused("unknown_card", f"{reference[:64]!r} names no card") from None
    wanted = sorted(set(card_ids.values()))
    pseudonyms: dict[str, bytes] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        rows = session.execute(
            select(CardRecord.id, CardRecord.pseudonym).where(CardRecord.id.in_(chunk))
        )
        pseudonyms.update((card_id, pseudonym) for card_id, pseudonym in rows)
    missing = sorted(ref for ref, card_id in card_ids.items() if card_id not in pseudonyms)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise RequestRefused("unknown_card", f"{missing[0]!r} names no card{more}")
    subjects = {
        reference: subject_of(subject_key, pseudonyms[card_id], hash_name)
        for reference, card_id in card_ids.items()
    }

    def replace(value: Any) -> Any:
        if isinstance(value, str):
            return subjects.get(value, value)
        if isinstance(value, dict):
            return {key: replace(item) for key, item in value.items()}
        if isinstance(value, list):
            return [replace(item) for item in value]
        return value

    resolved: dict[str, Any] = replace(document)
    return resolved
