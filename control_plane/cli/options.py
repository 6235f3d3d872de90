"""Options and argument parsing that several ``sovctl`` resources share.

Paging, labels, descriptions and ``update`` change sets read the same on every command
that has them, so they are spelled once here (``output.py`` has ``-o/--output``).
"""

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import typer

#: ``--limit`` of a paginated listing (the API allows 1 to 500).
Limit = Annotated[int, typer.Option(min=1, max=500, help="Items per page.")]
#: ``--offset`` of a paginated listing.
Offset = Annotated[int, typer.Option(min=0, help="Items to skip.")]
#: ``--description`` on create; free text.
Description = Annotated[str, typer.Option(help="Free text.")]
#: ``--description`` on update; None leaves it as it is.
NewDescription = Annotated[str | None, typer.Option("--description", help="Free text.")]
#: ``--label key=value``, repeatable.
Labels = Annotated[
    list[str] | None, typer.Option("--label", help="key=value; repeat for more labels.")
]


def parse_labels(items: list[str] | None) -> dict[str, str]:
    """``--label key=value`` options as a dict (a bad one is a usage error)."""
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: use key=value", param_hint="--label")
        labels[key] = value
    return labels


def changes(fields: Mapping[str, Any], cleared: Iterable[str] = ()) -> dict[str, Any]:
    """An ``update`` command's PATCH body: the options given (not None); none is an error.

    The API leaves omitted fields as they are, so an option left out changes nothing; the
    fields named in ``cleared`` are sent as null (``--no-parent`` detaches a zone). A
    command that would change nothing at all is a usage error rather than a silent no-op.
    """
    body = {name: value for name, value in fields.items() if value is not None}
    body.update(dict.fromkeys(cleared))
    if not body:
        raise typer.BadParameter("nothing to change: give at least one option")
    return body
