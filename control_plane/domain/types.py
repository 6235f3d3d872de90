"""Validated field types shared by every request model, and the base of request bodies.

Each type says what a field may hold (a slug, a label, a short text, a count that fits
PostgreSQL) once, so the 422 a bad value gets names the same rule wherever it is sent.
"""

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)


class Input(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than ignored."""

    model_config = ConfigDict(extra="forbid")


def _normalise_slug(value: object) -> object:
    # Lower-case before the pattern check (StringConstraints checks the pattern first).
    return value.strip().lower() if isinstance(value, str) else value


def storable_text(value: str) -> str:
    """Refuse NUL, which PostgreSQL text cannot hold, so the error names the field."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: A short identifier: lower-case letters, digits and inner hyphens; input is lower-cased.
Slug = Annotated[
    str,
    BeforeValidator(_normalise_slug),
    StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
]
#: A label key as Kubernetes spells them: an optional DNS prefix, then a name.
LabelKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
    ),
]
LabelValue = Annotated[str, StringConstraints(max_length=256), AfterValidator(storable_text)]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=256), AfterValidator(storable_text)
]
Description = Annotated[str, StringConstraints(max_length=4000), AfterValidator(storable_text)]
#: Fits PostgreSQL's bigint; larger numbers are refused by validation, not by the database.
BigCount = Annotated[int, Field(ge=0, le=2**63 - 1)]
SmallCount = Annotated[int, Field(ge=0, le=2**31 - 1)]
