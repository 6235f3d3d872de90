"""Validated field types shared by every request model, and the base of request bodies.

Each type says what a field may hold (a slug, a label, a short text, a count that fits
PostgreSQL) once, so the 422 a bad value gets names the same rule wherever it is sent.

The text rules, for every text a person will read back (names, hostnames, labels,
descriptions): no control characters (a newline in a hostname forges a line in a table),
no bidirectional overrides (U+202E turns ``exe.txt`` into what looks like ``txt.exe``),
no NUL (PostgreSQL cannot store it); descriptions may hold line breaks and tabs.
Identifiers (slugs, country codes) are ASCII, checked before any case mapping: Unicode
lower-cases the Kelvin sign to ``k`` and upper-cases a dotless i (U+0131) to ``I``, which would
let a look-alike through an ASCII-only rule.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)


class Input(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than ignored.

    And non-finite numbers: ``NaN`` and ``Infinity`` reach a model when a client sends
    them (Python's JSON reads them), and would be stored or compared as if they were
    numbers; refused here, the 422 names the field.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: Labels per node, dataset, model, workload or selector.
MAX_LABELS = 64
#: Tenants one dataset or model may be granted to at once (grants in force), so the most
#: entries CEL's ``granted_to`` holds.
MAX_GRANTEES = 64

#: C0 and C1 controls and DEL, and the Unicode bidirectional formatting characters.
_UNREADABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: The same, but line breaks and tabs are allowed (free text over several lines).
_UNREADABLE_IN_PROSE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _refuse_unreadable(value: str, pattern: re.Pattern[str]) -> str:
    found = pattern.search(value)
    if found is not None:
        character = found.group()
        what = "NUL characters" if character == "\x00" else f"U+{ord(character):04X}"
        raise ValueError(f"must not contain {what} (control or bidirectional characters)")
    return value


def storable_text(value: str) -> str:
    """Refuse control and bidirectional characters (and NUL), so the error names the field."""
    return _refuse_unreadable(value, _UNREADABLE)


def storable_prose(value: str) -> str:
    """``storable_text`` for free text: line breaks and tabs are allowed."""
    return _refuse_unreadable(value, _UNREADABLE_IN_PROSE)


def printable(text: str) -> str:
    r"""``text`` with every control or bidirectional character shown as ``\uXXXX``.

    For output of values stored before these rules, or read from elsewhere: a table
    cell must never start a line or reverse the text after it.
    """
    return _UNREADABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def ascii_identifier(value: object) -> object:
    """Refuse a non-ASCII identifier before anything changes its case."""
    if isinstance(value, str) and not value.isascii():
        raise ValueError("must be ASCII (letters, digits and hyphens)")
    return value


def _normalise_slug(value: object) -> object:
    # Lower-case before the pattern check (StringConstraints checks the pattern first),
    # and only ASCII: Unicode case mapping turns look-alikes into letters.
    value = ascii_identifier(value)
    return value.strip().lower() if isinstance(value, str) else value


#: What ``str.strip()`` removes around ASCII text, as a JSON Schema (ECMA-262) class: tab,
#: line feed, vertical tab, form feed, carriage return, the separators 0x1C-0x1F, space.
STRIPPED = r"[\t-\r\x1c-\x1f ]*"


def input_pattern(pattern: str, description: str) -> WithJsonSchema:
    """The JSON schema of a text field whose input is stripped before ``pattern`` applies.

    The schema says what a request may send, so that a client (or schemathesis) that
    follows it is never refused for it: ``pattern`` (anchored) with the surrounding
    whitespace ``str.strip()`` removes.
    """
    body = pattern.removeprefix("^").removesuffix("$")
    return WithJsonSchema(
        {"type": "string", "pattern": f"^{STRIPPED}{body}{STRIPPED}$", "description": description},
        mode="validation",
    )


#: A short identifier: lower-case letters, digits and inner hyphens; input is lower-cased.
Slug = Annotated[
    str,
    BeforeValidator(_normalise_slug),
    StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
    input_pattern(
        r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
        "A slug: ASCII letters, digits and inner hyphens, at most 63; stored lower-cased.",
    ),
]


@dataclass(frozen=True, slots=True)
class References:
    """Marks a list filter's field as naming a stored object that must exist.

    ``table`` is what it names (``zone``, ``site``, ``tenant``): ``core.filters`` checks
    every field so marked in one query, so a misspelt zone is a 422 naming the query
    parameter rather than an empty page that reads as "there are none".
    """

    table: str


#: A list filter naming a residency zone: a slug that must exist (``core.filters``).
ZoneFilter = Annotated[Slug | None, References("zone")]
#: A list filter naming a site: a slug that must exist.
SiteFilter = Annotated[Slug | None, References("site")]
#: A list filter naming a tenant: a slug that must exist.
TenantFilter = Annotated[Slug | None, References("tenant")]

#: A label key as Kubernetes spells them: an optional DNS prefix, then a name.
LabelKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
    ),
]
LabelValue = Annotated[str, StringConstraints(max_length=256), AfterValidator(storable_text)]
#: A Kubernetes Node's name: a DNS subdomain (RFC 1123), lower case, at most 253 characters.
KubernetesNodeName = Annotated[
    str,
    StringConstraints(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=256), AfterValidator(storable_text)
]
Description = Annotated[str, StringConstraints(max_length=4000), AfterValidator(storable_prose)]
#: Labels as a request sets them: at most ``MAX_LABELS``.
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]
#: A merge patch of labels (a key set to null is removed): at most ``MAX_LABELS`` keys.
LabelPatch = Annotated[dict[LabelKey, LabelValue | None], Field(max_length=MAX_LABELS)]
#: A name, slug or id in a path or query parameter: any text PostgreSQL can compare with,
#: so NUL (which its text cannot hold) is refused with a 422 naming the parameter.
Lookup = Annotated[str, StringConstraints(pattern="^[^\x00]*$")]
#: The first integer PostgreSQL's bigint cannot hold. Bounds say ``lt=BIGINT_END`` rather
#: than ``le=2**63 - 1``: the OpenAPI document holds numbers as floats, which 2**63 is and
#: 2**63 - 1 is not, so the documented bound is the one validation applies.
BIGINT_END = 2**63
#: Fits PostgreSQL's bigint; larger numbers are refused by validation, not by the database.
BigCount = Annotated[int, Field(ge=0, lt=BIGINT_END)]
SmallCount = Annotated[int, Field(ge=0, le=2**31 - 1)]


T = TypeVar("T")


def _refuse_null(value: object) -> object:
    # A validator runs only for fields the request sets, so an omitted field stays None.
    if value is None:
        raise ValueError("may be changed but not removed")
    return value


def _without_null(schema: dict[str, Any]) -> None:
    """Drop null (and the default None) from a field's JSON schema: null is refused."""
    kept = [branch for branch in schema.pop("anyOf", []) if branch != {"type": "null"}]
    if len(kept) == 1:
        schema.update(kept[0])
    elif kept:
        schema["anyOf"] = kept
    schema.pop("default", None)


#: A field of an update body that may be left out (it stays as it is) but not set to null
#: ("may be changed but not removed"); its JSON schema has no null, as the server takes none.
Change = Annotated[T | None, BeforeValidator(_refuse_null), Field(json_schema_extra=_without_null)]
