"""CEL conditions: compiling them, naming syntax errors, and feeding them only what they read.

A policy's ``cel`` rules are compiled once per policy-set version with the Rust-backed
``common-expression-language`` package, and only once they keep the bounds on length,
nesting and estimated cost (``policy.bounds``): the extension crashes or stalls the
process on expressions that do not. Whatever the extension raises, a Rust panic
included, becomes a syntax error when compiling and a failed condition when running.

Evaluating a compiled program is cheap (well under a microsecond for a typical condition),
but handing it Python values is not: every string crosses into Rust one by one, about a
microsecond each. So instead of converting whole workloads and nodes, each expression is
read once for the fields of ``workload`` and ``node`` it uses (``node.zone``,
``workload.labels["team"]``), and only those are handed over. The same projection of a node
is its *profile*: nodes with equal profiles give equal answers, so node conditions run once
per distinct profile rather than once per node.

The projection is found textually and errs towards taking more: any use of a variable
other than ``var.field`` (``node["zone"]``, ``size(node)``) hands over the whole value, and
any use of a map field other than ``var.field.key``, ``var.field["key"]`` or
``"key" in var.field`` hands over the whole field. Taking more costs time, never correctness.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from control_plane.policy import bounds

#: The variables a condition may read; see docs/policy.md for their fields.
VARIABLES = frozenset({"workload", "node", "datasets", "models"})
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_NOT_IDENT = r"(?![A-Za-z0-9_])"
_FIELD = re.compile(rf"\s*\.\s*({_IDENT}){_NOT_IDENT}(?!\s*\()")
_KEY = re.compile(
    rf"""\s*(?:\[\s*(?:"([^"\\\n]*)"|'([^'\\\n]*)')\s*\]|\.\s*({_IDENT}){_NOT_IDENT}(?!\s*\())"""
)
_BOUND = re.compile(
    rf"\.\s*(?:all|exists|exists_one|map|filter|transformList|transformMap)\s*\(\s*"
    rf"({_IDENT})\s*,(?:\s*({_IDENT})\s*,)?"
)
#: ``"key" in`` just before a variable, the literal being the whole left operand (so not
#: ``prefix + "key" in ...``, where the key is computed).
_MEMBERSHIP = re.compile(r"""(?:^|[(\[,?:]|&&|\|\|)\s*(?:"([^"\\\n]*)"|'([^'\\\n]*)')\s+in\s+$""")
#: What may follow ``var.field`` and make it something other than the operand of ``in``.
_FOLLOWS = re.compile(r"\s*[.\[(]")
_COMPREHENSION = re.compile(rf"\s*\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*({_IDENT})\s*,")
_SIZE_METHOD = re.compile(r"\s*\.\s*size\s*\(\s*\)")
_SIZE_CALL_BEFORE = re.compile(r"(?<![A-Za-z0-9_.])size\s*\(\s*$")
_CLOSE = re.compile(r"\s*\)")
_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(?:Syntax error:\s*)?(.*)")

#: Which fields of a variable a condition reads: field name to the keys it reads in that
#: field (``None``: the whole field). ``None`` instead of a mapping: the whole variable.
Projection = Mapping[str, frozenset[str] | None] | None


class CelSyntaxError(ValueError):
    """A CEL expression does not parse; ``position`` is ``line:column`` (1-based)."""

    def __init__(self, position: str, detail: str) -> None:
        self.position = position
        self.detail = detail
        super().__init__(f"syntax error at {position}: {detail}")


@dataclass(frozen=True, slots=True)
class Refused:
    """Stands in for the program of a stored expression that the bounds refuse now.

    Policy sets accepted before a bound existed (or tightened) must still compile, but
    such a rule must not run: it reads nothing, and ``run`` fails it closed with
    ``reason``.
    """

    reason: str

    def variables(self) -> list[str]:
        """What it reads: nothing, as it never runs."""
        return []


#: A condition's program: compiled, or refused (``Refused``).
Program = cel.Program | Refused


def compile_expression(source: str) -> cel.Program:
    """Compile ``source`` if it keeps the bounds, or say what is wrong with it.

    Raises ``bounds.CelBoundError`` when it is too long, nests too deeply or may cost too
    much (checked first: those are what crash or stall the extension), and
    ``CelSyntaxError`` when it does not parse.
    """
    try:
        bounds.check(source)
    except bounds.CelUnreadableError as exc:
        # Length and bracket nesting are checked by now, so the extension can safely say
        # what is wrong; if it finds nothing wrong, the cost cannot be bounded: refuse.
        _compile(source)
        raise bounds.CelBoundError(f"its cost cannot be estimated: {exc}") from None
    return _compile(source)


def _compile(source: str) -> cel.Program:
    """``cel.compile``, its report turned into a ``CelSyntaxError``, a panic included."""
    try:
        return cel.compile(source)
    except ValueError as exc:
        # The report quotes the expression first, which may span lines, then the position.
        report = str(exc)
        match = _POSITION.search(report)
        if match is None:
            raise CelSyntaxError(
                "?", report.splitlines()[0] if report else "does not parse"
            ) from None
        line, column, detail = match.groups()
        raise CelSyntaxError(f"{line}:{column}", detail.strip()) from None
    except BaseException as exc:
        if not is_panic(exc):
            raise
        # Seen when the extension formats the report of a syntax error far into the text.
        raise CelSyntaxError("?", f"the CEL parser failed: {describe_error(exc)}") from None


def unknown_variables(source: str, program: cel.Program) -> list[str]:
    """Identifiers that are neither our variables, CEL type names nor comprehension variables.

    A typo such as ``workloads.tenant`` would otherwise only show up as a runtime error
    on the first decision; this lets validation name it instead.
    """
    bound = {name for match in _BOUND.finditer(source) for name in match.groups() if name}
    return sorted(set(program.variables()) - VARIABLES - bounds.TYPE_NAMES - bound)


def projection(source: str, variable: str, *, binding: int | None = None) -> Projection:
    """The fields (and map keys) of ``variable`` that ``source`` reads; see the module doc.

    ``binding`` is the offset where a comprehension declares ``variable``; that
    occurrence is a declaration, not a read.
    """
    fields: dict[str, set[str] | None] = {}
    for occurrence in re.finditer(rf"(?<![A-Za-z0-9_]){re.escape(variable)}{_NOT_IDENT}", source):
        if occurrence.start() == binding:
            continue
        field = _FIELD.match(source, occurrence.end())
        if field is None:
            return None
        name = field.group(1)
        key_match = _KEY.match(source, field.end())
        membership = _MEMBERSHIP.search(source, 0, occurrence.start())
        if key_match is not None:
            key = next(group for group in key_match.groups() if group is not None)
        elif membership is not None and not _FOLLOWS.match(source, field.end()):
            # ``"team" in workload.labels`` reads whether that one key is there.
            key = membership.group(1) if membership.group(1) is not None else membership.group(2)
        else:
            key = None
        keys = fields.get(name, set())
        if key is None or keys is None:
            fields[name] = None
        else:
            keys.add(key)
            fields[name] = keys
    return {name: None if keys is None else frozenset(keys) for name, keys in fields.items()}


def element_projection(source: str, variable: str) -> Projection:
    """The fields of the elements of list ``variable`` that ``source`` reads.

    Elements are reached through comprehensions (``datasets.all(d, d.classification ==
    "public")``), so this is the projection of each comprehension's variable. Any other
    use of the list except its size hands over whole elements.
    """
    parts: list[Projection] = []
    for occurrence in re.finditer(rf"(?<![A-Za-z0-9_]){re.escape(variable)}{_NOT_IDENT}", source):
        comprehension = _COMPREHENSION.match(source, occurrence.end())
        if comprehension is not None:
            bound = comprehension.group(1)
            parts.append(projection(source, bound, binding=comprehension.start(1)))
        elif not (
            _SIZE_METHOD.match(source, occurrence.end())
            or (
                _SIZE_CALL_BEFORE.search(source, 0, occurrence.start())
                and _CLOSE.match(source, occurrence.end())
            )
        ):
            return None
    return merge_projections(parts)


def merge_projections(projections: Iterable[Projection]) -> Projection:
    """One projection that reads everything any of ``projections`` reads."""
    merged: dict[str, set[str] | None] = {}
    for each in projections:
        if each is None:
            return None
        for name, keys in each.items():
            if keys is None or (name in merged and merged[name] is None):
                merged[name] = None
            else:
                merged[name] = (merged.get(name) or set()) | keys
    return {name: None if keys is None else frozenset(keys) for name, keys in merged.items()}


def freeze(value: Any) -> Any:
    """A hashable copy of a projected value, so equal inputs share one dictionary key."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        return tuple(sorted((key, freeze(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one condition said: ``passed``, or why not (``error`` is set when it broke)."""

    passed: bool
    error: str | None = None


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic out of the extension (``pyo3_runtime.PanicException``).

    PyO3 derives it from ``BaseException``, so ``except Exception`` does not catch it, and
    it cannot be imported by name.
    """
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


def run(program: Program, context: cel.Context) -> Verdict:
    """Evaluate a condition; anything but ``true`` fails it, so a broken rule fails closed."""
    if isinstance(program, Refused):
        return Verdict(False, program.reason)
    try:
        result = program.execute(context)
    # The extension raises KeyError, TypeError, IndexError, ZeroDivisionError or
    # RuntimeError depending on what went wrong, or panics; all of them mean "not
    # satisfied", and none may take the request (or the worker) down with it.
    except BaseException as exc:
        if not (isinstance(exc, Exception) or is_panic(exc)):
            raise
        return Verdict(False, describe_error(exc))
    if result is True:
        return Verdict(True)
    if result is False:
        return Verdict(False)
    return Verdict(False, f"returned {type(result).__name__} {result!r}, not true or false")


def describe_error(exc: BaseException) -> str:
    """A short, readable form of a CEL runtime error."""
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r}" if exc.args else "no such key"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # The extension explains type errors at length; the first sentence says what happened.
    sentence, dot, _ = text.partition(". ")
    return sentence if dot else text
