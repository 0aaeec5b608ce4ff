"""Demo cards for a development service, so a newcomer can ask for a code at once.

The ID numbers have valid GB 11643 check digits but are made up; the names are common
placeholders. ``idcode serve`` enrols them into an empty development database only.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idcode.idnumber import check_digit
from idcode.service.cards import NewCard, enrol
from idcode.service.models import CardRecord
from idcode.service.pii import PersonalDataVault
from idcode.service.vocabulary import Programme, Residency

DEMO_ACTOR = "idcode-demo"


def _id(first_17: str) -> str:
    return first_17 + check_digit(first_17)


DEMO_CARDS = [
    NewCard(
        id_number=_id("42010219500312002"),
        name="张秀英",
        phone="13800000001",
        residency=Residency.REGISTERED,
        programmes=[Programme.HOME_CARE, Programme.MEAL_SUBSIDY],
    ),
    NewCard(
        id_number=_id("42010519880615003"),
        name="李明",
        phone="13800000002",
        residency=Residency.REGISTERED,
    ),
    NewCard(
        id_number=_id("42011120120901004"),
        name="王小红",
        residency=Residency.PERMIT,
        programmes=[Programme.STUDENT],
    ),
    NewCard(
        id_number=_id("11010119580101005"),
        name="赵建国",
        residency=Residency.NON_RESIDENT,
        programmes=[Programme.VETERAN],
    ),
]


def enrol_demo_cards(sessions: sessionmaker[Session], vault: PersonalDataVault) -> int:
    """Enrol the demo cards if the database has no card yet; returns how many were enrolled."""
    with sessions() as session:
        if session.scalar(select(func.count()).select_from(CardRecord)):
            return 0
        for card in DEMO_CARDS:
            enrol(session, vault, card, DEMO_ACTOR)
        session.commit()
    return len(DEMO_CARDS)
