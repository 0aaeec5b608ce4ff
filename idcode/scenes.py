"""The scene adapter SDK: what an adapter sees of a scan, what it decides, and the history of
earlier decisions it may consult.

An adapter is a policy over the verifier's verdict, the code's coarse attributes and the
scene data from the terminal's trust bundle. It does no I/O: the terminal runtime (or a
test) hands it a ``Scan`` and a ``History`` and acts on the ``Decision`` only after it is in
the journal. See docs/adapters.md.

Privacy across scenes: a terminal never journals or uploads the card pseudonym itself, only
a *subject*, the pseudonym keyed with its scene's key (HMAC-SHA256, truncated). Each scene's
key is derived from the city's key, so the logs of two scenes cannot be joined without it.
A scene whose sites are separate businesses (a shop, a bus operator, a library) declares
``subject_scope = "site"``: each site then gets a key of its own, so two merchants' journals
cannot be joined either. A relying party's terminals (a hospital's kiosks) get that party's
own subject key instead, so their subjects are the pairwise ones its desk got
(``SceneData.linked_subjects``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_serializer,
)

from idcode import b64url
from idcode.claims import Card
from idcode.errors import SceneError as SceneError
from idcode.reasons import Reason
from idcode.text import unstorable_reason
from idcode.verifier import Trust, Verdict

#: The scenes idcode ships adapters for (in idcode_adapters). More come from other packages
#: through the ``idcode.scenes`` entry point group: see scene_names and docs/adapters.md.
#: ``Reason.OK.value``, read once: an enum member's value is a property call, and every
#: admission names it.
_OK = Reason.OK.value
SCENES = (
    "community",
    "parking",
    "tourism",
    "eldercare",
    "hospital",
    "merchant",
    "employment",
    "transport",
    "culture",
)
ENTRY_POINT_GROUP = "idcode.scenes"
SCENE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: A site: a community, a car park, a shop, a bus operator (as the service takes it).
SITE_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_SITE = re.compile(SITE_PATTERN)
SUBJECT_BYTES = 12  # 96 bits: no collision among a city's cards, short in every log line
SUBJECT_PATTERN = r"^[0-9a-f]{24}$"
_SUBJECT = re.compile(SUBJECT_PATTERN)
SCENE_KEY_BYTES = 32
_SCENE_KEY_LABEL = b"idcode/scene-subject/v1/"
_SITE_KEY_LABEL = b"idcode/site-subject/v1/"
#: ``SceneAdapter.subject_scope``: one subject key for the whole scene, or one per site.
SCENE_SCOPE = "scene"
SITE_SCOPE = "site"
DAY = 86_400

#: A scene result value: coarse scalars only (a fee in fen, a ticket class, a count).
ResultValue = str | int | bool | None
#: At most this many results per decision, names of this shape, texts this long: a scene
#: reports coarse outcomes, never free text about a person. The service refuses uploads that
#: break these rules; the decider refuses decisions that do, so a test finds it first.
MAX_RESULTS = 20
RESULT_NAME = re.compile(r"[a-z0-9_]{1,32}")
MAX_RESULT_TEXT = 64
MAX_RESULT_INTEGER = 2**53 - 1

#: Settlement columns the service writes itself (a record's kind and its subject).
SETTLEMENT_RESERVED = ("record", "subject")

#: The reason of a decision whose adapter raised: the gate stays shut (fail closed).
ADAPTER_ERROR = "adapter_error"
#: The reason of a decision whose adapter answered a reason outside its scene's closed set
#: (a typo, or an admission with another reason than ``ok``): denied, fail closed.
UNDECLARED_REASON = "undeclared_reason"


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.sha256)


#: A keyed hash (key, data) -> 32 bytes: HMAC-SHA256 by default, the crypto profile's
#: (``CryptoProfile.mac``, HMAC-SM3 under ``gm``) at the service.
KeyedHash = Callable[[bytes, bytes], bytes]


def scene_subject_key(city_key: bytes, scene: str, *, mac: KeyedHash = _hmac_sha256) -> bytes:
    """The key a scene's terminals use to turn pseudonyms into subjects, derived from the
    city's key with ``mac``; the city's key never leaves the service."""
    if not SCENE_NAME.fullmatch(scene):
        raise SceneError("a scene name is 1-32 of a-z, 0-9 and _, starting with a letter")
    return mac(city_key, _SCENE_KEY_LABEL + scene.encode("ascii"))


def site_subject_key(
    city_key: bytes, scene: str, site: str, *, mac: KeyedHash = _hmac_sha256
) -> bytes:
    """The key of one site's terminals in a scene of ``subject_scope = "site"`` (a shop, a bus
    operator): a card has another subject at every site, so two sites cannot join their logs.
    Another label than the scenes', and a site cannot hold "/", so no site's key is a scene's
    or another site's."""
    if not SCENE_NAME.fullmatch(scene):
        raise SceneError("a scene name is 1-32 of a-z, 0-9 and _, starting with a letter")
    if not _SITE.fullmatch(site):
        raise SceneError("a site is 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'")
    label = _SITE_KEY_LABEL + scene.encode("ascii") + b"/" + site.encode("ascii")
    return mac(city_key, label)


def terminal_subject_key(
    city_key: bytes, scene: str, site: str, *, mac: KeyedHash = _hmac_sha256
) -> bytes:
    """The subject key of a terminal of ``scene`` at ``site`` (not a relying party's): the
    scene's key, or the site's where the scene's adapter has ``subject_scope = "site"``."""
    if load_adapter(scene).subject_scope == SITE_SCOPE:
        return site_subject_key(city_key, scene, site, mac=mac)
    return scene_subject_key(city_key, scene, mac=mac)


def subject_of(scene_key: bytes, pseudonym: bytes, hash_name: str = "sha256") -> str:
    """The pseudonym keyed for one scene, as the hex text journals and uploads carry: HMAC
    with ``hash_name``, the crypto profile's (``CryptoProfile.hash_name``; "sm3" under GM)."""
    return hmac.digest(scene_key, pseudonym, hash_name)[:SUBJECT_BYTES].hex()


def encode_scene_key(key: bytes) -> str:
    return b64url.encode(key)


def decode_scene_key(text: object) -> bytes:
    if not isinstance(text, str):
        raise SceneError("the scene's subject key is missing from the trust bundle")
    try:
        key = b64url.decode(text)
    except b64url.Base64UrlError as exc:
        raise SceneError(f"the scene's subject key: {exc}") from None
    if len(key) != SCENE_KEY_BYTES:
        raise SceneError(f"the scene's subject key must be {SCENE_KEY_BYTES} bytes")
    return key


#: At most this many linked subjects in one terminal's scene data, and in one relying party's
#: links (idcode.service.relyingparties): the trust bundle that carries them is at most 8 MiB
#: (bundle.MAX_BUNDLE_BYTES) and each subject takes about 36 bytes of it, so some 230,000 fit;
#: 200,000 leaves room for the rest of the bundle. A large hospital's patients over years can
#: exceed it: docs/identity.md says what such a party does (its own subject list on its kiosks).
#: It also bounds a kiosk's memory (about 22 MB as a Python set).
MAX_LINKED_SUBJECTS = 200_000


def _linked_subject(text: str) -> str:
    if _SUBJECT.fullmatch(text) is None:
        # The text itself is left out: what was sent in place of a subject may be a patient
        # number or an ID number, and this message reaches the operator's logs.
        raise ValueError(
            "a linked subject is 24 lowercase hex characters (idcode.scenes.subject_of), "
            "never a patient number, card id or other identifier"
        )
    return text


LinkedSubject = Annotated[
    str,
    AfterValidator(_linked_subject),
    WithJsonSchema({"type": "string", "pattern": SUBJECT_PATTERN}),
]


class SceneData(BaseModel):
    """Scene data every scene understands; each adapter extends it with its own fields.

    Unknown fields are refused, so an operator's typo is a 422 when the data is set, not a
    silently ignored rule at the gate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    utc_offset_minutes: int = Field(
        default=480,
        ge=-720,
        le=840,
        description="Where a scene's 'day' starts: local midnight at this UTC offset (China: 480).",
    )
    allow_stale: bool = Field(
        default=False,
        description="Keep deciding with a trust bundle past its max-age (with a warning).",
    )
    linked_subjects: frozenset[LinkedSubject] = Field(
        default=frozenset(),
        max_length=MAX_LINKED_SUBJECTS,
        description=(
            "Subjects a relying party (a hospital) has linked to its own records, keyed with "
            "that party's subject key. Filled in by the service for terminals that belong to "
            "a relying party (docs/identity.md); empty elsewhere."
        ),
    )

    @field_serializer("linked_subjects")
    def _linked_subjects_as_sorted_list(self, subjects: frozenset[str]) -> list[str]:
        # A list, so that a dump is JSON and reads back with parse_data; sorted, so that the
        # same data always dumps to the same text.
        return sorted(subjects)


@dataclass(frozen=True)
class SceneContext:
    """What an adapter knows about where it runs: its scene, site, data and subject key."""

    scene: str
    site: str
    data: SceneData
    subject_key: bytes
    trust: Trust  # for adapters that verify more than codes (community visitor passes)
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: The hash of the subjects' HMAC: the crypto profile's of the terminal's trust bundle
    #: ("sha256", or "sm3" under GM), as the service keys the subjects it lists with.
    hash_name: str = "sha256"
    # The HMAC with the key already absorbed: each subject then costs a copy and the
    # message's blocks, half of hmac.digest's work (a subject is made for every scan).
    _keyed: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyed", hmac.new(self.subject_key, digestmod=self.hash_name))

    def subject(self, pseudonym: bytes) -> str:
        """``subject_of(subject_key, pseudonym, hash_name)``."""
        keyed = self._keyed.copy()
        keyed.update(pseudonym)
        return keyed.digest()[:SUBJECT_BYTES].hex()

    def day_start(self, at: int) -> int:
        """The start of the local day (scene data's UTC offset) that ``at`` falls in."""
        offset = self.data.utc_offset_minutes * 60
        return (at + offset) // DAY * DAY - offset


@dataclass(frozen=True, slots=True)
class Scan:
    """One presented code: its text, the verifier's verdict, when, and its scene subject."""

    text: str
    verdict: Verdict
    at: int
    subject: str | None = None  # None when the code could not be decoded

    @property
    def card(self) -> Card | None:
        claims = self.verdict.claims
        return claims.card if claims is not None else None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the terminal does: admit or deny, one machine-readable reason, and coarse results.

    ``reason`` is ``ok`` for an admission, the verdict's reason for a code that did not
    verify, or one of the scene's own denial reasons. ``action`` names what happened
    (``entry``, ``exit``, ``meal``, ``check_in`` ...). ``subject`` replaces the scan's subject
    when the decision is about something else (a visitor pass).
    """

    admitted: bool
    reason: str
    action: str = ""
    result: Mapping[str, ResultValue] = field(default_factory=lambda: MappingProxyType({}))
    subject: str | None = None

    @classmethod
    def admit(cls, action: str, *, subject: str | None = None, **result: ResultValue) -> Decision:
        return cls(True, _OK, action, MappingProxyType(result), subject)

    @classmethod
    def deny(
        cls, reason: str, action: str = "", *, subject: str | None = None, **result: ResultValue
    ) -> Decision:
        return cls(False, str(reason), action, MappingProxyType(result), subject)

    def __post_init__(self) -> None:
        check_scene_result(self.result)


def check_scene_result(result: Mapping[str, object]) -> None:
    """Refuse scene results the service would refuse: too many, odd names, long texts,
    values that are not coarse scalars. Raises SceneError."""
    if not result:
        return  # most admissions and denials carry none: nothing to check
    if len(result) > MAX_RESULTS:
        raise SceneError(f"at most {MAX_RESULTS} scene results")
    for name, value in result.items():
        if not isinstance(name, str) or not RESULT_NAME.fullmatch(name):
            raise SceneError("scene result names are 1-32 of a-z, 0-9 and _")
        if value is not None and not isinstance(value, str | int | bool):
            raise SceneError(f"scene result {name!r} must be a text, integer or boolean")
        if isinstance(value, str) and len(value) > MAX_RESULT_TEXT:
            raise SceneError(f"scene result {name!r} is over {MAX_RESULT_TEXT} characters")
        if isinstance(value, str) and (problem := unstorable_reason(value)) is not None:
            raise SceneError(f"scene result {name!r} {problem}, which cannot be stored")
        if isinstance(value, int) and abs(value) > MAX_RESULT_INTEGER:
            # Beyond this a JSON reader in JavaScript rounds it, and it would no longer fit a
            # PostgreSQL bigint should the column ever be typed.
            raise SceneError(f"scene result {name!r} is beyond +-(2**53 - 1)")


@dataclass(frozen=True, slots=True)
class Event:
    """A journaled decision, as an adapter sees it in the history."""

    event_id: str
    at: int
    subject: str | None
    admitted: bool
    reason: str
    action: str
    result: Mapping[str, ResultValue]


class History(Protocol):
    """Earlier decisions at this terminal (and the terminals sharing its journal). "Newest"
    means most recently journaled, whatever the time stamps say (the clocks of lanes sharing
    a journal may differ a little). The journal implements it; ``MemoryHistory`` is the
    in-memory one for tests."""

    def last(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        since: int = 0,
        admitted: bool | None = True,
    ) -> Event | None:
        """The newest matching event at or after ``since``."""
        ...

    def count(
        self,
        *,
        since: int,
        subject: str | None = None,
        action: str | None = None,
        admitted: bool | None = True,
    ) -> int:
        """How many matching events there are at or after ``since``."""
        ...


class MemoryHistory:
    """A History in a list: for tests, examples and anything that need not survive a restart."""

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.events: list[Event] = list(events)

    def add(self, event: Event) -> None:
        self.events.append(event)

    def _matching(
        self, subject: str | None, action: str | None, since: int, admitted: bool | None
    ) -> Iterable[Event]:
        for event in reversed(self.events):
            if (
                event.at >= since
                and (subject is None or event.subject == subject)
                and (action is None or event.action == action)
                and (admitted is None or event.admitted == admitted)
            ):
                yield event

    def last(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        since: int = 0,
        admitted: bool | None = True,
    ) -> Event | None:
        return next(iter(self._matching(subject, action, since, admitted)), None)

    def count(
        self,
        *,
        since: int,
        subject: str | None = None,
        action: str | None = None,
        admitted: bool | None = True,
    ) -> int:
        return sum(1 for _ in self._matching(subject, action, since, admitted))


class SceneAdapter(ABC):
    """Base class of scene adapters. A subclass names its ``scene``, its ``Data`` model and
    its denial ``reasons``, and implements ``decide_valid`` for codes that verified.

    ``decide`` denies every code the verifier refused with the verifier's reason; override it
    only to accept something other than a citizen code (as the community gate does for
    visitor passes).
    """

    scene: ClassVar[str]
    Data: ClassVar[type[SceneData]] = SceneData
    #: The scene's own denial reasons, beside the verifier's (docs/adapters.md lists them).
    reasons: ClassVar[tuple[str, ...]] = ()
    #: The actions its decisions name.
    actions: ClassVar[tuple[str, ...]] = ()
    #: ``"scene"``: every terminal of the scene has the scene's subject key (a community gate,
    #: where the city runs every site). ``"site"``: each site has its own, so sites that are
    #: separate businesses (shops, bus operators, libraries) cannot join their logs.
    subject_scope: ClassVar[str] = SCENE_SCOPE
    #: Put the scan's subject in each decision line, for the site's own software (a library's
    #: loan system finds its member by it). Only with ``subject_scope = "site"``: a scene-wide
    #: subject would let one site's software follow a citizen into the others.
    subject_in_decision_line: ClassVar[bool] = False

    #: The columns of the scene's daily settlement, one row per subject (a bus operator's
    #: clearing file, a merchant's discounts): names of scene-result shape, integer values
    #: (counts, fen). Empty: the scene has no settlement. See ``settle``.
    settlement_columns: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.subject_scope not in (SCENE_SCOPE, SITE_SCOPE):
            raise SceneError(f"{cls.__name__}.subject_scope must be 'scene' or 'site'")
        if cls.subject_in_decision_line and cls.subject_scope != SITE_SCOPE:
            raise SceneError(
                f"{cls.__name__}: subject_in_decision_line needs subject_scope = 'site' "
                "(a scene-wide subject would link the citizen across its sites)"
            )
        for column in cls.settlement_columns:
            if not RESULT_NAME.fullmatch(column) or column in SETTLEMENT_RESERVED:
                raise SceneError(
                    f"{cls.__name__}: settlement column {column!r} is not 1-32 of a-z, 0-9 "
                    f"and _, or is one of {', '.join(SETTLEMENT_RESERVED)}"
                )

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        """Refuse terminal options (``--option NAME=VALUE``) that no scene data can make right,
        a missing or unknown ``lane`` say, with a SceneError naming them. ``idcode terminal
        run`` calls it before anything else, so such a terminal does not start; an adapter
        calls it from ``__init__`` too. Options that depend on the scene data (a bus line the
        operator lists) are checked in ``__init__``, when a bundle is adopted."""
        return  # the default: a scene without options takes any (they are not used)

    @classmethod
    def settle(cls, data: SceneData, events: Sequence[Event]) -> Mapping[str, int]:
        """One subject's row of one day's settlement at one site: an integer for each of
        ``settlement_columns``, from that subject's events of the day at the site's terminals
        (admissions and denials, oldest first; what the terminals journaled and uploaded).
        ``data`` is the site's scene data as the service holds it now. Pure: no I/O. The
        service sums each column into the day's totals (docs/adapters.md, Settlement)."""
        raise NotImplementedError(f"the {cls.scene} scene has no settlement")

    def __init__(self, context: SceneContext) -> None:
        self.context = context
        self.data = context.data

    @classmethod
    def parse_data(cls, document: Mapping[str, Any]) -> SceneData:
        """The scene data from a trust bundle (or an operator's PUT), validated strictly.

        The data is JSON, so it is validated as JSON in pydantic's strict mode: an integer
        must be a JSON integer (not ``true``, ``"200"`` or ``2.5``), a flag ``true`` or
        ``false`` (not ``1`` or ``"yes"``); NaN and Infinity, which Python's JSON decoder
        lets through, are refused. Every terminal then reads the data as the operator meant.
        """
        try:
            text = json.dumps(dict(document), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SceneError(f"{cls.scene} scene data is not JSON: {exc}") from None
        try:
            return cls.Data.model_validate_json(text, strict=True)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'data'}: {error['msg']}"
                for error in exc.errors()[:5]
            )
            raise SceneError(f"{cls.scene} scene data is not valid: {problems}") from None

    @classmethod
    def known_reasons(cls) -> frozenset[str]:
        """The scene's closed set of reasons: the verifier's, the decider's own
        (``adapter_error``, ``undeclared_reason``) and the adapter's ``reasons``."""
        return frozenset(
            {reason.value for reason in Reason} | {ADAPTER_ERROR, UNDECLARED_REASON}
        ).union(cls.reasons)

    def decide(self, scan: Scan, history: History) -> Decision:
        if not scan.verdict.valid or scan.card is None or scan.subject is None:
            return Decision.deny(scan.verdict.reason.value)
        return self.decide_valid(scan, scan.card, scan.subject, history)

    @abstractmethod
    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        """The scene's policy for a code that verified (signature, time, status, replay)."""


def _plugins() -> dict[str, EntryPoint]:
    """Adapters other packages register for scenes of their own (entry points)."""
    return {
        point.name: point
        for point in entry_points(group=ENTRY_POINT_GROUP)
        if SCENE_NAME.fullmatch(point.name) and point.name not in SCENES
    }


def scene_names() -> tuple[str, ...]:
    """Every scene this installation knows: the built-in ones, then those of plugins."""
    return SCENES + tuple(sorted(_plugins()))


def load_adapter(name: str) -> type[SceneAdapter]:
    """The adapter class of a scene: a built-in one (``parking``:
    ``idcode_adapters.parking.Adapter``), one a plugin registers under the ``idcode.scenes``
    entry point group, or one named directly as ``module:Class``."""
    try:
        if ":" in name:
            module_name, _, class_name = name.partition(":")
            adapter = getattr(import_module(module_name), class_name)
        elif name in SCENES:
            adapter = import_module(f"idcode_adapters.{name}").Adapter
        elif (plugin := _plugins().get(name)) is not None:
            adapter = plugin.load()
        else:
            raise SceneError(
                f"unknown scene {name[:40]!r}: known are {', '.join(scene_names())} "
                "(or give an adapter as module:Class)"
            )
    except (ImportError, AttributeError, ValueError) as exc:
        if isinstance(exc, SceneError):
            raise
        raise SceneError(f"cannot load the adapter {name!r}: {exc}") from None
    if not (isinstance(adapter, type) and issubclass(adapter, SceneAdapter)):
        raise SceneError(f"{name!r} is not a SceneAdapter")
    if ":" not in name and adapter.scene != name:
        raise SceneError(f"the adapter registered for {name!r} is for scene {adapter.scene!r}")
    return adapter
