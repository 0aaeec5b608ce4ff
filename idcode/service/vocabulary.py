"""The closed vocabularies of a card as the API spells them, as named enums in the OpenAPI
document: the lower-case names of ``idcode.claims``' members, the one spelling a verdict,
scene data and the CLI use too (docs/api.md, "Names: one spelling")."""

from __future__ import annotations

from enum import StrEnum


class Residency(StrEnum):
    """The card holder's residency (``idcode.claims.Residency``)."""

    UNKNOWN = "unknown"
    REGISTERED = "registered"
    PERMIT = "permit"
    NON_RESIDENT = "non_resident"


class Programme(StrEnum):
    """A city programme the card is enrolled in (``idcode.claims.Programme``)."""

    HOME_CARE = "home_care"
    MEAL_SUBSIDY = "meal_subsidy"
    DISABILITY = "disability"
    LOW_INCOME = "low_income"
    VETERAN = "veteran"
    STUDENT = "student"


class AgeBand(StrEnum):
    """The holder's coarse age band (``idcode.claims.AgeBand``); never the birth date."""

    UNKNOWN = "unknown"
    UNDER_6 = "under_6"
    AGE_6_17 = "age_6_17"
    AGE_18_59 = "age_18_59"
    AGE_60_64 = "age_60_64"
    AGE_65_69 = "age_65_69"
    AGE_70_79 = "age_70_79"
    AGE_80_PLUS = "age_80_plus"
