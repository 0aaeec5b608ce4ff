"""The closed vocabularies of identification: what a relying party may ask for, in which sector,
for which purposes. One place for the service, the citizen's app and a counter's software.

docs/identity.md explains each attribute and the consent rules around them.
"""

from __future__ import annotations

import re
from types import MappingProxyType

#: Every attribute a relying party may ask for, with what it discloses. Nothing else can be
#: registered, consented to or disclosed.
ATTRIBUTES = MappingProxyType(
    {
        "name": "the name on the citizen card",
        "id_number": "the national ID number (GB 11643, 18 characters)",
        "sex": "female or male, as the ID number states it",
        "birth_date": "the birth date, YYYY-MM-DD",
        "residency": "registered, permit, non_resident or unknown",
        "age_band": "a coarse age band (under_6 ... age_80_plus), never the birth date",
        "programmes": "the city programmes the card is enrolled in (meal_subsidy, home_care ...)",
    }
)
#: The attributes that identify a person by themselves: a consent screen shows them apart.
IDENTIFYING = frozenset({"name", "id_number", "sex", "birth_date"})

#: The sectors of city services a relying party belongs to (the city plan's list).
SECTORS = MappingProxyType(
    {
        "government": "government service halls and offices",
        "social_insurance": "social insurance",
        "employment": "employment services and job fairs",
        "health": "hospitals, clinics and health services",
        "utilities": "water, power, gas and other public utilities",
        "transport": "public transport",
        "culture_tourism": "libraries, museums, venues and tourism",
        "education": "schools and training",
        "commerce": "merchants and other businesses",
    }
)

#: A purpose a relying party registers and names at each identification (``registration``,
#: ``benefit_application``): short, lower case, so that the disclosure record reads the same
#: everywhere and no free text about a person can be put into it.
PURPOSE = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_PURPOSES = 16
#: A counter's label (``window-3``, ``desk-2f-east``) in the disclosure record.
COUNTER = re.compile(r"[A-Za-z0-9._-]{1,64}")
