"""Helpers for integrators' tests: mint codes and build trust in two lines.

    issuer = TestIssuer()
    code = issuer.mint(age_band=AgeBand.AGE_65_69)
    verdict = verify(code, issuer.trust(), now=issuer.now)

and for a scene adapter, a signed trust bundle and an in-memory terminal:

    issuer = TestIssuer()
    gate = TestTerminal(issuer.bundle("tourism", data={"daily_capacity": 2}))
    decision = gate.scan(issuer.mint(age_band=AgeBand.AGE_65_69))

Keys (issuer, city root and the city's subject key) are generated in memory for each
``TestIssuer`` and never touch the disk.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.bundle import TrustBundle, sign_bundle, verify_bundle
from idcode.claims import PSEUDONYM_LENGTH, AgeBand, Card, CodeClaims, Programme, Residency
from idcode.codetext import DEFAULT_DEPLOYMENT, prefix_for
from idcode.cose import Algorithm
from idcode.decider import Decider
from idcode.devicecode import (
    MAX_CREDENTIAL_LIFETIME,
    DeviceKey,
    device_prefix,
    issue_credential,
    make_device_code,
)
from idcode.idnumber import check_digit
from idcode.issuer import DEFAULT_TTL, mint_code, sign_code
from idcode.keys import IssuerKey
from idcode.keystore import RootKey
from idcode.replay import ReplayCache
from idcode.scenes import (
    SCENE_KEY_BYTES,
    SCENES,
    Decision,
    Event,
    MemoryHistory,
    SceneAdapter,
    encode_scene_key,
    load_adapter,
    scene_names,
    scene_subject_key,
    subject_of,
    terminal_subject_key,
)
from idcode.statuslist import StatusList
from idcode.verifier import DEFAULT_CLOCK_SKEW, Trust

#: The site of a TestIssuer's bundles and subjects unless a test names one.
DEFAULT_SITE = "test-site"


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
    root: RootKey = field(init=False)
    city_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.key = IssuerKey.generate(self.kid, self.alg)
        self.root = RootKey("R", Ed25519PrivateKey.generate())
        self.city_key = secrets.token_bytes(SCENE_KEY_BYTES)

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

    def credential(
        self,
        device_key: Any,
        card: Card | None = None,
        *,
        expires_at: int | None = None,
    ) -> bytes:
        """A credential blob certifying ``device_key`` (a private Ed25519 or P-256 key) for
        ``card`` (random by default), valid 7 days from this issuer's ``now`` by default."""
        return issue_credential(
            self.key,
            random_card() if card is None else card,
            DeviceKey.from_public_key(device_key.public_key()),
            self.now + MAX_CREDENTIAL_LIFETIME if expires_at is None else expires_at,
        )

    def device_code(
        self,
        device_key: Any,
        blob: bytes | None = None,
        *,
        at: int | None = None,
        code_id: bytes | None = None,
        **card_attributes: object,
    ) -> str:
        """A device code (docs/code-format.md section 8) made by ``device_key`` ``at`` (this
        issuer's ``now`` by default) with ``blob`` (a fresh credential for a random card built
        from ``card_attributes`` by default), as a phone makes it offline."""
        if blob is None:
            blob = self.credential(device_key, random_card(**card_attributes))  # type: ignore[arg-type]
        return make_device_code(
            blob,
            device_key,
            prefix=device_prefix(self.prefix),
            now=self.now if at is None else at,
            code_id=code_id,
        )

    def sign(self, claims: CodeClaims) -> str:
        """Sign arbitrary (valid) claims, e.g. with a chosen code id or times."""
        return sign_code(claims, self.key, self.prefix)

    def trust(self, clock_skew: int = DEFAULT_CLOCK_SKEW) -> Trust:
        """Trust in exactly this issuer's key and algorithm."""
        return Trust.of(
            [self.key.public], prefix=self.prefix, algorithms=[self.alg], clock_skew=clock_skew
        )

    def subject(self, card_or_pseudonym: Card | bytes, scene: str, site: str = DEFAULT_SITE) -> str:
        """The card's subject in ``scene`` (at ``site``, where the scene is site-scoped: a
        shop, a bus operator): what scene data (residents, permits) lists and what journals
        record."""
        pseudonym = (
            card_or_pseudonym.pseudonym
            if isinstance(card_or_pseudonym, Card)
            else card_or_pseudonym
        )
        return subject_of(self.subject_key(scene, site), pseudonym)

    def subject_key(self, scene: str, site: str = DEFAULT_SITE) -> bytes:
        """The subject key the service gives a terminal of ``scene`` at ``site`` (not a relying
        party's): the scene's, or the site's own in a site-scoped scene. A scene no installed
        adapter knows (an adapter under test, handed to TestTerminal) is taken as scene-wide."""
        if scene in SCENES or scene in scene_names():
            return terminal_subject_key(self.city_key, scene, site)
        return scene_subject_key(self.city_key, scene)

    def visitor_pass(
        self,
        host: Card | str,
        community: str = "test-site",
        *,
        valid_from: int | None = None,
        valid_until: int | None = None,
        at: int | None = None,
        pass_id: bytes | None = None,
    ) -> str:
        """A visitor pass from resident ``host`` (a card, or its community subject) for
        ``community`` (a community bundle's site), issued ``at`` (default ``now``), valid
        from ``valid_from`` (default: when issued) to ``valid_until`` (default: a day later).
        """
        from idcode.visitorpass import issue_pass

        issued = self.now if at is None else at
        start = issued if valid_from is None else valid_from
        subject = self.subject(host, "community") if isinstance(host, Card) else host
        text, _ = issue_pass(
            self.key,
            code_prefix=self.prefix,
            community=community,
            host=bytes.fromhex(subject),
            valid_from=start,
            valid_until=start + 86_400 if valid_until is None else valid_until,
            now=issued,
            pass_id=pass_id,
        )
        return text

    def bundle(
        self,
        scene: str,
        site: str = DEFAULT_SITE,
        data: Mapping[str, Any] | None = None,
        *,
        revoked: Iterable[int] = (),
        status_size: int = 1024,
        at: int | None = None,
        max_age: int = 48 * 3600,
        version: int = 1,
        subject_key: bytes | None = None,
        revoked_devices: Iterable[bytes] = (),
    ) -> TrustBundle:
        """A trust bundle for one terminal of ``scene`` at ``site``, signed by this issuer's
        root key and checked as a terminal checks it. ``revoked``: status-list indices.
        ``subject_key``: the key the terminal turns pseudonyms into subjects with; by default
        the scene's (or the site's, in a site-scoped scene), derived from the city's key; a
        relying party's own key for its kiosks."""
        status = StatusList(status_size)
        for index in revoked:
            status.set(index, True)
        token = sign_bundle(
            self.root,
            version=version,
            issued_at=self.now if at is None else at,
            max_age=max_age,
            keys=[self.key.public],
            status=status,
            scene={
                "scene": scene,
                "site": site,
                "version": 1,
                "data": dict(data or {}),
                "subject_key": encode_scene_key(
                    self.subject_key(scene, site) if subject_key is None else subject_key
                ),
            },
            revoked_devices=revoked_devices,
        )
        return verify_bundle(token, self.root.public_jwk)


class TestTerminal:
    """An in-memory terminal: the verifier and a scene adapter over a bundle, with replay
    state and a history, deciding as the terminal runtime does (without a journal file).

    ``adapter`` defaults to the scene's adapter from ``idcode_adapters``; ``options`` are the
    terminal's own settings (``lane``, ``mode``), as ``idcode terminal run --option`` gives them.

    Where a terminal would deny with ``adapter_error`` (the adapter raised) or
    ``undeclared_reason`` (it answered a reason outside its scene's closed set, or admitted
    with another reason than ``ok``), a test terminal raises SceneError naming the defect, so
    a typo in an adapter fails its first test. ``strict=False`` denies as a terminal does.
    """

    __test__ = False

    def __init__(
        self,
        bundle: TrustBundle,
        adapter: type[SceneAdapter] | None = None,
        *,
        deployment: str = DEFAULT_DEPLOYMENT,
        algorithms: Iterable[Algorithm] = (Algorithm.EDDSA, Algorithm.ES256),
        options: Mapping[str, str] | None = None,
        history: MemoryHistory | None = None,
        strict: bool = True,
    ) -> None:
        if adapter is None:
            adapter = load_adapter(str(bundle.scene.get("scene")))
        # Terminals that share a journal (a car park's entry and exit lanes) share a history.
        self.history = MemoryHistory() if history is None else history
        self.decider = Decider(
            bundle,
            adapter,
            prefix=prefix_for(deployment),
            replay=ReplayCache(),
            algorithms=algorithms,
            options=options,
            strict=strict,
        )
        self.now = bundle.issued_at

    def scan(self, code: str, at: int | None = None) -> Decision:
        """Decide on ``code`` at ``at`` (default: the terminal's ``now``) and remember the
        decision in the history, as the journal would."""
        now = self.now if at is None else at
        scan, decision = self.decider.decide(code, now, self.history)
        self.history.add(
            Event(
                event_id=uuid.uuid4().hex,
                at=now,
                subject=decision.subject or scan.subject,
                admitted=decision.admitted,
                reason=decision.reason,
                action=decision.action,
                result=decision.result,
            )
        )
        return decision


def random_id_number(birth: date | None = None, region: str = "420102") -> str:
    """A made-up national ID number with a valid GB 11643 check digit (default region:
    Wuhan, Jiang'an District), for tests that enrol cards."""
    birth = birth or date(
        1950 + secrets.randbelow(60), 1 + secrets.randbelow(12), 1 + secrets.randbelow(28)
    )
    first_17 = f"{region}{birth:%Y%m%d}{secrets.randbelow(1000):03d}"
    return first_17 + check_digit(first_17)
