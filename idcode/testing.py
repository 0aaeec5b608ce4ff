"""Helpers for integrators' tests: mint codes and build trust in two lines.

    issuer = TestIssuer()
    code = issuer.mint(age_band=AgeBand.AGE_65_69)
    verdict = verify(code, issuer.trust(), now=issuer.now)

Keys are generated in memory for each ``TestIssuer`` and never touch the disk.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import date

from idcode.claims import PSEUDONYM_LENGTH, AgeBand, Card, CodeClaims, Programme, Residency
from idcode.codetext import DEFAULT_DEPLOYMENT, prefix_for
from idcode.cose import Algorithm
from idcode.idnumber import check_digit
from idcode.issuer import DEFAULT_TTL, mint_code, sign_code
from idcode.keys import IssuerKey
from idcode.verifier import DEFAULT_CLOCK_SKEW, Trust


def random_card(
    *,
    status_index: int = 0,
    residency: Residency = Residency.REGISTERED,
    age_band: AgeBand = AgeBand.AGE_18_59,
    programmes: Programme = Programme.NONE,
    pseudonym: bytes | None = None,
) -> Card:
    """A card with a random pseudonym and the attributes given."""
    return Card(
        pseudonym=pseudonym if pseudonym is not None else secrets.token_bytes(PSEUDONYM_LENGTH),
        status_index=status_index,
        residency=residency,
        age_band=age_band,
        programmes=programmes,
    )


@dataclass
class TestIssuer:
    """An in-memory issuer with its own key, for tests of verifiers and scene adapters."""

    __test__ = False  # not a pytest test class despite its name

    alg: Algorithm = Algorithm.EDDSA
    kid: str = "T"
    deployment: str = DEFAULT_DEPLOYMENT
    now: int = field(default_factory=lambda: int(time.time()))
    key: IssuerKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = IssuerKey.generate(self.kid, self.alg)

    @property
    def prefix(self) -> str:
        return prefix_for(self.deployment)

    def mint(
        self,
        card: Card | None = None,
        *,
        at: int | None = None,
        ttl: int = DEFAULT_TTL,
        **card_attributes: object,
    ) -> str:
        """A code for ``card`` (or a random card built from ``card_attributes``) issued ``at``."""
        if card is None:
            card = random_card(**card_attributes)  # type: ignore[arg-type]
        code, _ = mint_code(
            card, self.key, prefix=self.prefix, now=self.now if at is None else at, ttl=ttl
        )
        return code

    def sign(self, claims: CodeClaims) -> str:
        """Sign arbitrary (valid) claims, e.g. with a chosen code id or times."""
        return sign_code(claims, self.key, self.prefix)

    def trust(self, clock_skew: int = DEFAULT_CLOCK_SKEW) -> Trust:
        """Trust in exactly this issuer's key and algorithm."""
        return Trust.of(
            [self.key.public], prefix=self.prefix, algorithms=[self.alg], clock_skew=clock_skew
        )


def random_id_number(birth: date | None = None, region: str = "420102") -> str:
    """A made-up national ID number with a valid GB 11643 check digit (default region:
    Wuhan, Jiang'an District), for tests that enrol cards."""
    birth = birth or date(
        1950 + secrets.randbelow(60), 1 + secrets.randbelow(12), 1 + secrets.randbelow(28)
    )
    first_17 = f"{region}{birth:%Y%m%d}{secrets.randbelow(1000):03d}"
    return first_17 + check_digit(first_17)
