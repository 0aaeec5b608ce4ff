"""Times the API answers with: always with their offset (UTC, written ``Z``).

SQLite gives back the times it stores without their offset, and a model field typed plain
``datetime`` writes such a time without one: a client then reads it in its own zone. Every
time in a response model is ``UtcTime``, which takes one without an offset as the UTC it
was stored as.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator

from idcode.service.models import as_utc

UtcTime = Annotated[datetime, AfterValidator(as_utc)]
