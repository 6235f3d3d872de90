"""ISO 3166-1 alpha-2 country codes, checked against the real list (pycountry)."""

import functools
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BeforeValidator

from control_plane.domain.types import input_pattern


@functools.cache
def _alpha2_codes() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


def is_country_code(code: str) -> bool:
    """Whether ``code`` is an assigned ISO 3166-1 alpha-2 code (``XX`` is not)."""
    return code in _alpha2_codes()


def _upper(value: object) -> object:
    # ASCII first: Unicode upper-cases a dotless i (U+0131) to "I", a look-alike of a real code.
    if isinstance(value, str) and not value.isascii():
        raise ValueError("must be an ASCII ISO 3166-1 alpha-2 code")
    return value.strip().upper() if isinstance(value, str) else value


def _check(code: str) -> str:
    if not is_country_code(code):
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


#: A country code field: case-insensitive on input, stored upper-case, checked against ISO.
CountryCode = Annotated[
    str,
    BeforeValidator(_upper),
    AfterValidator(_check),
    input_pattern(
        "^[A-Za-z]{2}$",
        "An assigned ISO 3166-1 alpha-2 country code (XX and other unassigned codes are "
        "refused); any case, stored upper-case.",
    ),
]
