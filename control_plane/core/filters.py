"""List filters that name stored objects: checked to exist before a list is searched.

A filter that names a zone, site or tenant nobody stored can match nothing, so answering
it with an empty page would read as "there are none" when the caller misspelt a name.
Their format is the filter model's business (``Slug``, ``CountryCode``, enums: request
validation refuses a bad one, naming ``query.<parameter>``); whether they exist is this
helper's, the one every list service calls with its filter model. It finds the fields
marked ``domain.types.References`` and checks them all in one query, and a 422 names every
unknown one the same way request validation names a parameter.
"""

import functools
from typing import Any, LiteralString

from pydantic import BaseModel

from control_plane.core.db import DbConnection, fetch_all, load_queries
from control_plane.core.errors import InvalidInputError
from control_plane.domain.types import References

#: The tables a filter may name; ``filters.sql`` knows each of them.
TABLES = frozenset({"zone", "site", "tenant"})


def _query() -> LiteralString:
    return load_queries("control_plane.core", "filters.sql")["unknown_references"]


@functools.cache
def _referenced(model: type[BaseModel]) -> tuple[tuple[str, str, str], ...]:
    """The model's fields that name stored objects: (field, query parameter, table).

    Worked out once per filter model, not on every list request.
    """
    found = []
    for name, field in model.model_fields.items():
        for marker in field.metadata:
            if isinstance(marker, References):
                if marker.table not in TABLES:
                    raise TypeError(f"{model.__name__}.{name}: no table {marker.table!r}")
                found.append((name, field.alias or name, marker.table))
    return tuple(found)


def check_references(conn: DbConnection, filters: BaseModel) -> None:
    """Refuse filters naming a zone, site or tenant that does not exist: 422, every one.

    Each is named as its query parameter (``query.zone``), with the value and
    ``unknown zone 'jpp'`` as the message. Filters left out are not checked.
    """
    named = [
        (parameter, table, value)
        for name, parameter, table in _referenced(type(filters))
        if (value := getattr(filters, name)) is not None
    ]
    if not named:
        return
    params: dict[str, Any] = {
        "tables": [table for _, table, _ in named],
        "values": [value for _, _, value in named],
    }
    unknown = fetch_all(conn, _query(), params)
    if unknown:
        problems = []
        for row in unknown:
            parameter, table, value = named[row["ordinal"] - 1]
            problems.append((f"query.{parameter}", f"unknown {table} {value!r}", value))
        raise InvalidInputError.for_fields(problems)
