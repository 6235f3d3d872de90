"""Request bodies: JSON and YAML parsed one strict way, bounded in depth and size.

Every body the API reads goes through ``parse_json`` (JSON routes, from the route class in
``access.http``) or ``parse_yaml`` (policy documents), which refuse, as a 422 naming
``body``, what would otherwise cost memory, a traceback or a 500 further in:

* text that is not UTF-8, or strings with lone surrogates (JSON cannot render them back);
* numbers beyond Python's digit limit (``NaN`` and ``Infinity`` are read, and refused by
  the field they are sent for: request models forbid non-finite numbers, so the 422
  names that field);
* the same key twice in one object (JSON parsers disagree on which wins);
* nesting deeper than ``MAX_DEPTH`` (a ``[[[[...`` body would exhaust the stack);
* more than ``MAX_VALUES`` values in all, counted with YAML aliases expanded, so a few
  hundred bytes of nested aliases cannot become millions of values;
* YAML values JSON cannot carry (dates stay text, sets and binary are refused).

The size of a body is bounded while it is read (``core.routes.read_limited``, 413 naming
``body``); this module bounds what a body within that size can turn into. Pure: no I/O.
"""

import json
from typing import Any

import yaml

from control_plane.core.errors import InvalidInputError

#: Where a route says it takes more or less than ``DEFAULT_BODY_BYTES``: its OpenAPI
#: operation's ``x-max-body-bytes`` (``openapi_extra``), so the contract shows it too.
MAX_BODY_KEY = "x-max-body-bytes"
#: The largest body a route accepts unless it says otherwise (a 413 naming ``body``
#: beyond it): far above any request the API defines, far below what would hurt.
DEFAULT_BODY_BYTES = 1024 * 1024
#: Policy documents (``POST /v1/policies``, what-if): YAML is parsed in pure Python, so
#: their bound is lower; twenty policies are about 20 KB.
POLICY_BODY_BYTES = 256 * 1024
#: A bill of materials (``POST /v1/provenance/imports``): up to 10,000 rows of JSON.
BOM_BODY_BYTES = 4 * 1024 * 1024
#: An AdmissionReview (the ``/k8s`` webhooks): an object and, on UPDATE, its old version,
#: each up to the 1.5 MiB etcd stores.
ADMISSION_BODY_BYTES = 4 * 1024 * 1024
#: Containers within containers: policy documents need six levels, workloads three.
MAX_DEPTH = 32
#: Values (scalars and containers) in one body, YAML aliases expanded.
MAX_VALUES = 100_000


def _refuse(message: str) -> InvalidInputError:
    return InvalidInputError.for_field("body", message)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _refuse(f"key {_short(key)} appears twice in one object")
        found[key] = value
    return found


def _short(text: str, limit: int = 40) -> str:
    """``text`` quoted and cut for an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _path(parts: list[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def check_values(value: Any) -> None:
    """Refuse a parsed body that is too deep, too large, or not made of JSON's values.

    Too deep: more than ``MAX_DEPTH`` levels; too large: more than ``MAX_VALUES`` values;
    JSON's values: dicts with text keys, lists, UTF-8 encodable text, numbers, booleans
    and null. Iterative, and it stops at the first excess, so its cost is bounded
    by the limits and not by what aliases would expand to.
    """
    seen = 0
    stack: list[tuple[Any, int, list[str | int]]] = [(value, 1, [])]
    while stack:
        item, depth, where = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise _refuse(f"more than {MAX_VALUES} values (YAML aliases count as expanded)")
        if depth > MAX_DEPTH:
            raise _refuse(f"nested deeper than {MAX_DEPTH} levels at {_path(where)}")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise _refuse(f"key {key!r} at {_path(where) or 'the top'} is not text")
                _check_text(key, where)
                stack.append((child, depth + 1, [*where, key]))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, [*where, i]) for i, child in enumerate(item))
        elif isinstance(item, str):
            _check_text(item, where)
        elif item is not None and not isinstance(item, bool | int | float):
            kind = type(item).__name__
            raise _refuse(f"a {kind} at {_path(where)} is not a value JSON can carry")


def _check_text(text: str, where: list[str | int]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(f"text at {_path(where) or 'the top'} holds a lone surrogate") from None


def decode(data: bytes) -> str:
    """The body as text: UTF-8 (a byte-order mark is dropped), or a 422 naming ``body``."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(f"not UTF-8 text (byte {exc.start})") from None


def parse_json(data: bytes) -> Any:
    """Parse a JSON body under this module's rules; any refusal is a 422 naming ``body``."""
    text = decode(data)
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise _refuse(
            f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise _refuse(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # a number with more digits than Python converts
        raise _refuse(str(exc).split(";")[0]) from None
    check_values(value)
    return value


class _JsonSafeLoader(yaml.SafeLoader):
    """YAML's safe loader, made to yield JSON's values only and to stop at ``MAX_DEPTH``.

    Dates and times stay text (the timestamp resolver is dropped, as JSON has no dates);
    sets, binary and explicit timestamps are refused by ``check_values`` after loading;
    ``.nan`` and ``.inf`` are read as JSON's ``NaN`` is, and refused by their field.
    """

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, refusing to go deeper than ``MAX_DEPTH`` before recursing."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.get_mark()
                raise _refuse(
                    f"nested deeper than {MAX_DEPTH} levels at line {mark.line + 1},"
                    f" column {mark.column + 1}"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_JsonSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str, *, source: str | None = None) -> list[Any]:
    """Every YAML document in ``text`` (``---`` separates them), under this module's rules.

    ``source`` (a file name) leads error messages when given.
    """
    lead = f"{source}: " if source else ""
    try:
        documents = list(yaml.load_all(text, Loader=_JsonSafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInputError(f"{lead}not valid YAML or JSON{where}: {problem}") from None
    except InvalidInputError as exc:
        raise InvalidInputError(f"{lead}{exc.message}", details=exc.details) from None
    try:
        check_values(documents)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{lead}{exc.message}", details=exc.details) from None
    return [document for document in documents if document is not None]
