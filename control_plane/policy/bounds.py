"""The bounds a CEL expression must keep, checked before the Rust extension ever sees it.

The ``common-expression-language`` extension parses and runs CEL in Rust, holding the
GIL, and nothing in it stops an expression that is too big: a long chain of member
selections overflows its stack and kills the process, and a few nested comprehensions
keep a request (and every other thread of the process) waiting for minutes. So an
expression is refused at validation, with a message saying which bound and by how much,
unless it keeps three bounds (see docs/policy.md, "Limits"):

* **length**: at most ``MAX_LENGTH`` characters. The extension crashed on about 19,000
  chained selections (39,000 characters) when compiling, 12,000 when running, and
  panicked reporting a syntax error past column 65,535; 4,000 characters stay far inside.
* **depth**: at most ``MAX_DEPTH`` levels. Every parenthesis, list, map, call, index,
  comprehension and ternary nests one level, and so does each link of a chain of
  selections, indexes or operators; a chain of ``&&`` or of ``||`` counts as one level,
  as the extension runs those without recursing. The extension's own parser stops at 96
  levels of brackets, and the chains that crash it are hundreds of times deeper.
* **cost**: the worst-case cost of one evaluation, estimated before it ever runs, as
  Kubernetes does, at most ``MAX_COST`` units. A unit is one evaluation step or one value
  copied (the extension copies what it selects and what it iterates over): 0.03 to 0.15
  microseconds measured, so the limit is some 10 to 50 ms of the GIL at worst. Each
  comprehension (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) multiplies the
  cost of its body by the most elements its range can have: a list literal's length, or
  the documented maximum of the field (``SCOPE``), such as the 64 datasets a workload may
  name. ``map`` and ``filter`` also pay for the list they build, which the extension
  copies at every step (so they are quadratic); comparing, concatenating or searching a
  list pays for its elements, and ``matches`` for compiling its pattern at every call.

The estimate reads the expression with a small parser of its own (CEL's grammar, read
loosely: the extension still decides what is valid). It builds no tree: each
subexpression comes out as an ``Estimate`` of its depth, its cost and what bounds its
value. An expression it cannot read goes to the extension for the syntax error; that is
safe because the length and the nesting of brackets have already been checked.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from control_plane.domain.fleet import ComponentClass
from control_plane.domain.types import MAX_GRANTEES, MAX_LABELS

#: The longest expression accepted, in characters.
MAX_LENGTH = 4000
#: The deepest nesting accepted (see the module docstring for what counts).
MAX_DEPTH = 32
#: The highest estimated cost of one evaluation accepted, in units of a step or a copy.
MAX_COST = 300_000

#: The most datasets, and the most models, a workload names (``WorkloadCreate``).
MAX_ASSETS = 64
#: The most storage zones a dataset or model lists (``StorageZones``).
MAX_STORAGE_ZONES = 64
#: The most GPUs a node reports (``Inventory.gpus``), so the most GPU models it has.
MAX_GPUS = 64
#: How many zones ``node.zones`` is counted as holding: the zone API does not limit how
#: deeply zones nest, and no real hierarchy comes near this.
MAX_ZONE_CHAIN = 64
#: What regular-expression matching costs: the extension compiles the pattern at every
#: call (a few microseconds for a simple pattern).
MATCHES_COST = 100


class CelBoundError(ValueError):
    """An expression too long, too deeply nested or too costly to accept; the message says which."""


class CelUnreadableError(ValueError):
    """The parser here cannot read an expression; the extension says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Value:
    """What bounds a value: its most elements (list) or entries (map, object), and theirs.

    ``element`` bounds each element of a list and each key of a map (what a comprehension
    binds); ``entry`` each value of a map; ``fields`` are an object's known fields.
    ``None`` for either means "not known": it is treated as ``UNKNOWN``. Scalars have
    ``size`` 0, and so do strings: no CEL operation here iterates over one.
    """

    size: int = 0
    element: "Value | None" = None
    entry: "Value | None" = None
    fields: Mapping[str, "Value"] | None = None


#: A string, number, boolean or null.
SCALAR = Value()
#: A value the estimate cannot bound otherwise: as big as the biggest collection CEL sees.
UNKNOWN = Value(
    size=max(MAX_ASSETS, MAX_LABELS, MAX_STORAGE_ZONES, MAX_GPUS, MAX_ZONE_CHAIN, MAX_GRANTEES)
)


def _join(first: Value, second: Value) -> Value:
    """A bound on a value that is either of the two."""
    if first is second:
        return first
    fields: dict[str, Value] | None = None
    if first.fields is not None and second.fields is not None:
        fields = dict(first.fields)
        for name, value in second.fields.items():
            fields[name] = _join(fields[name], value) if name in fields else value
    return Value(
        size=max(first.size, second.size),
        element=_join_known(first.element, second.element),
        entry=_join_known(first.entry, second.entry),
        fields=fields,
    )


def _join_known(first: Value | None, second: Value | None) -> Value | None:
    """``_join`` of what may be not known: not known if either is."""
    return None if first is None or second is None else _join(first, second)


def _object(**fields: Value) -> Value:
    """A map with known fields, such as ``workload``; its keys are strings."""
    entry = SCALAR
    for value in fields.values():
        entry = _join(entry, value)
    return Value(size=len(fields), element=SCALAR, entry=entry, fields=fields)


def _strings(size: int) -> Value:
    return Value(size=size, element=SCALAR)


_LABELS = Value(size=MAX_LABELS, element=SCALAR, entry=SCALAR)
_ASSET_FIELDS = {
    "name": SCALAR,
    "classification": SCALAR,
    "storage_zones": _strings(MAX_STORAGE_ZONES),
    "storage_countries": _strings(MAX_STORAGE_ZONES),
    "labels": _LABELS,
    "tenant": SCALAR,
    "granted_to": _strings(MAX_GRANTEES),
}
#: What bounds each variable CEL sees: its fields as ``engine.scope`` builds them, each
#: collection as large as the API lets it be (docs/policy.md, "Limits").
SCOPE: Mapping[str, Value] = {
    "workload": _object(
        tenant=SCALAR,
        labels=_LABELS,
        gpu_count=SCALAR,
        gpu_model=SCALAR,
        min_gpu_memory_bytes=SCALAR,
        mig_profile=SCALAR,
        classification=SCALAR,
        output=_object(name=SCALAR, zone=SCALAR, country=SCALAR),
    ),
    "datasets": Value(size=MAX_ASSETS, element=_object(**_ASSET_FIELDS)),
    "models": Value(
        size=MAX_ASSETS,
        element=_object(**_ASSET_FIELDS, supplier=SCALAR, origin_country=SCALAR, license=SCALAR),
    ),
    "node": _object(
        zone=SCALAR,
        zones=_strings(MAX_ZONE_CHAIN),
        country=SCALAR,
        status=SCALAR,
        drift_status=SCALAR,
        origin_country=SCALAR,
        component_origins=Value(size=len(ComponentClass), element=SCALAR, entry=SCALAR),
        provenance_status=SCALAR,
        labels=_LABELS,
        gpu_models=_strings(MAX_GPUS),
        gpu_count=SCALAR,
    ),
}


def _extent(value: Value) -> int:
    """How many values ``value`` holds, itself included: what comparing or copying walks."""
    if value.size == 0:
        return 1
    inner = max(
        _extent(value.element) if value.element is not None else 1,
        _extent(value.entry) if value.entry is not None else 1,
    )
    return 1 + value.size * inner


@dataclass(frozen=True, slots=True)
class Estimate:
    """A subexpression as the bounds see it: how deep it nests, what it costs, its value."""

    depth: int
    cost: int
    value: Value = SCALAR


def _element(value: Value) -> Value:
    return value.element if value.element is not None else UNKNOWN


def _entry(value: Value) -> Value:
    return value.entry if value.entry is not None else UNKNOWN


_TOKEN = re.compile(
    r"""(?P<space>[\t\n\f\r ]+|//[^\n]*)
    |(?P<string>[bB]?[rR]?(?:\"\"\"|'''|"|'))
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?
        |(?:[0-9]+\.[0-9]+|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|[0-9]+[uU]?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}])""",
    re.VERBOSE,
)
_OPENING = frozenset("([{")
_CLOSING = frozenset(")]}")
_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
#: The comprehension macros: the first argument names the variable bound to each element.
_COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
#: Comprehensions that build a list, copying it at every step.
_BUILDERS = frozenset({"map", "filter"})
#: Methods whose result is a scalar (any other may be a collection as far as bounds know).
_SCALAR_METHODS = frozenset({"size", "contains", "startsWith", "endsWith", "matches"})
#: CEL's type names, which read as identifiers (and convert, as functions).
TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn"}
)
#: Global functions whose result is a scalar.
_SCALAR_FUNCTIONS = TYPE_NAMES | {"size", "has", "matches", "timestamp", "duration"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    start: int


def _position(source: str, offset: int) -> str:
    """``line:column`` (1-based) of ``offset``, as syntax errors give it."""
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f"{line}:{column}"


def _string_end(source: str, start: int, opening: str) -> int:
    """Where the string literal that starts at ``start`` with ``opening`` (``r"``, ...) ends."""
    quote = opening.lstrip("bBrR")
    raw = "r" in opening.lower()
    position = start + len(opening)
    while position < len(source):
        if source.startswith(quote, position):
            return position + len(quote)
        char = source[position]
        if char == "\n" and len(quote) == 1:
            break
        position += 2 if char == "\\" and not raw else 1
    raise CelUnreadableError(f"unterminated string at {_position(source, start)}")


def _tokens(source: str) -> list[_Token]:
    """The tokens of ``source``; brackets nested deeper than ``MAX_DEPTH`` are refused here.

    The nesting is checked on the tokens, not on a parse, so that an expression the parser
    here cannot read still never reaches the extension with brackets nested too deep.
    """
    tokens: list[_Token] = []
    position = nesting = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise CelUnreadableError(
                f"unexpected {source[position]!r} at {_position(source, position)}"
            )
        kind = match.lastgroup or ""
        end = match.end()
        if kind == "string":
            end = _string_end(source, position, match.group())
        elif kind == "punct" and match.group() in _OPENING:
            nesting += 1
            if nesting > MAX_DEPTH:
                raise CelBoundError(
                    f"nests more than {MAX_DEPTH} levels deep at {_position(source, position)}"
                )
        elif kind == "punct" and match.group() in _CLOSING:
            nesting -= 1
        if kind != "space":
            tokens.append(_Token(kind, source[position:end], position))
        position = end
    tokens.append(_Token("end", "", len(source)))
    return tokens


class _Reader:
    """A recursive-descent reader of CEL's grammar that estimates instead of building a tree.

    The grammar (cel.dev's language definition), from the loosest binding down:
    ternary, ``||``, ``&&``, relations (``in`` among them), ``+ -``, ``* / %``, unary
    ``! -``, then member access (``.field``, ``.method(...)``, ``[index]``) on a primary
    (a literal, an identifier or a call, a parenthesis, a list, a map).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.position = 0
        self.nesting = 0
        #: Comprehension variables in scope, innermost last.
        self.bound: list[tuple[str, Value]] = []

    # -- tokens --------------------------------------------------------------------

    @property
    def token(self) -> _Token:
        return self.tokens[self.position]

    def at(self, text: str, ahead: int = 0) -> bool:
        """Whether the token ``ahead`` of the current one is the operator or name ``text``."""
        token = self.tokens[min(self.position + ahead, len(self.tokens) - 1)]
        return token.kind in ("punct", "name") and token.text == text

    def take(self) -> _Token:
        token = self.token
        if token.kind != "end":
            self.position += 1
        return token

    def expect(self, text: str) -> None:
        if not self.at(text):
            raise self.unexpected()
        self.take()

    def name(self) -> str:
        if self.token.kind != "name":
            raise self.unexpected()
        return self.take().text

    def unexpected(self) -> CelUnreadableError:
        token = self.token
        found = "the end" if token.kind == "end" else repr(token.text)
        return CelUnreadableError(f"unexpected {found} at {_position(self.source, token.start)}")

    def estimate(self, depth: int, cost: int, value: Value = SCALAR) -> Estimate:
        """An ``Estimate``, refused if it nests too deep."""
        if depth > MAX_DEPTH:
            raise self.too_deep()
        return Estimate(depth, cost, value)

    def too_deep(self) -> CelBoundError:
        where = _position(self.source, self.tokens[max(self.position - 1, 0)].start)
        return CelBoundError(f"nests more than {MAX_DEPTH} levels deep at {where}")

    # -- the grammar ---------------------------------------------------------------

    def expression(self) -> Estimate:
        """``or ["?" or ":" expression]``; every nested expression comes through here."""
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise self.too_deep()
        condition = self.disjunction()
        if self.at("?"):
            self.take()
            then = self.disjunction()
            self.expect(":")
            otherwise = self.expression()
            condition = self.estimate(
                1 + max(condition.depth, then.depth, otherwise.depth),
                1 + condition.cost + max(then.cost, otherwise.cost),
                _join(then.value, otherwise.value),
            )
        self.nesting -= 1
        return condition

    def disjunction(self) -> Estimate:
        return self.chain("||", self.conjunction)

    def conjunction(self) -> Estimate:
        return self.chain("&&", self.relation)

    def chain(self, operator: str, operand: Callable[[], Estimate]) -> Estimate:
        """Operands joined by ``&&`` or by ``||``: one level, and any operand may run."""
        parts = [operand()]
        while self.at(operator):
            self.take()
            parts.append(operand())
        if len(parts) == 1:
            return parts[0]
        return self.estimate(
            1 + max(p.depth for p in parts), len(parts) - 1 + sum(p.cost for p in parts)
        )

    def relation(self) -> Estimate:
        left = self.addition()
        while self.token.kind in ("punct", "name") and self.token.text in _RELATIONS:
            operator = self.take().text
            right = self.addition()
            if operator == "in":
                # A list is searched element by element; a map is looked up.
                walked = _extent(right.value) if right.value.entry is None else 1
            else:
                walked = min(_extent(left.value), _extent(right.value))
            left = self.estimate(
                1 + max(left.depth, right.depth), 1 + left.cost + right.cost + walked
            )
        return left

    def addition(self) -> Estimate:
        left = self.multiplication()
        while self.at("+") or self.at("-"):
            self.take()
            right = self.multiplication()
            value, copied = SCALAR, 0
            if left.value.size or right.value.size:
                # Lists: the result is a copy of both.
                copied = _extent(left.value) + _extent(right.value)
                value = Value(
                    size=left.value.size + right.value.size,
                    element=_join_known(left.value.element, right.value.element),
                )
            left = self.estimate(
                1 + max(left.depth, right.depth), 1 + left.cost + right.cost + copied, value
            )
        return left

    def multiplication(self) -> Estimate:
        left = self.unary()
        while self.at("*") or self.at("/") or self.at("%"):
            self.take()
            right = self.unary()
            left = self.estimate(1 + max(left.depth, right.depth), 1 + left.cost + right.cost)
        return left

    def unary(self) -> Estimate:
        operators = 0
        while self.at("!") or self.at("-"):
            self.take()
            operators += 1
        operand = self.member()
        if not operators:
            return operand
        return self.estimate(operand.depth + operators, operand.cost + operators)

    def member(self) -> Estimate:
        """A primary followed by any number of ``.field``, ``.method(...)`` and ``[index]``."""
        current = self.primary()
        while True:
            if self.at("."):
                self.take()
                name = self.name()
                if self.at("("):
                    current = self.method(current, name)
                else:
                    # The extension copies what it selects: a collection costs its extent.
                    selected = _select(current.value, name)
                    cost = current.cost + _extent(selected)
                    current = self.estimate(current.depth + 1, cost, selected)
            elif self.at("["):
                self.take()
                index = self.expression()
                self.expect("]")
                value = current.value
                found = _entry(value) if value.entry is not None else _element(value)
                depth = 1 + max(current.depth, index.depth)
                cost = current.cost + index.cost + _extent(found)
                current = self.estimate(depth, cost, found)
            elif self.at("{") and self.tokens[self.position - 1].kind == "name":
                # ``pkg.Message{field: value}``: a message, which the extension cannot run.
                current = self.message(current)
            else:
                return current

    def method(self, receiver: Estimate, name: str) -> Estimate:
        """``receiver.name(...)``: a comprehension when ``name`` is one, else a call."""
        self.expect("(")
        if name in _COMPREHENSIONS and self.token.kind == "name" and self.at(",", ahead=1):
            return self.comprehension(receiver, name)
        arguments = self.arguments(")")
        cost = 1 + receiver.cost + sum(a.cost for a in arguments)
        if name == "matches":
            cost += MATCHES_COST
        value = SCALAR if name in _SCALAR_METHODS else UNKNOWN
        return self.estimate(1 + max([receiver.depth, *(a.depth for a in arguments)]), cost, value)

    def comprehension(self, range_: Estimate, name: str) -> Estimate:
        """``range.all(v, body)`` and the others: the body runs once per element of the range."""
        variable = self.name()
        self.take()  # the comma
        self.bound.append((variable, _element(range_.value)))
        bodies = self.arguments(")")
        self.bound.pop()
        if not bodies:
            raise self.unexpected()
        times = range_.value.size
        # Iterating copies each element of the range.
        cost = range_.cost + _extent(range_.value) + times * (1 + sum(b.cost for b in bodies))
        value = SCALAR
        if name in _BUILDERS:
            # The extension copies the list it builds at every step (measured: quadratic).
            produced = bodies[-1].value if name == "map" else _element(range_.value)
            cost += times * (times + 1) // 2 * _extent(produced)
            value = Value(size=times, element=produced)
        depth = 1 + max([range_.depth, *(b.depth for b in bodies)])
        return self.estimate(depth, cost, value)

    def call(self, function: str) -> Estimate:
        """``function(...)``, a global function such as ``size`` or ``has``."""
        arguments = self.arguments(")")
        cost = 1 + sum(a.cost for a in arguments)
        if function == "matches":
            cost += MATCHES_COST
        if function == "dyn" and arguments:
            value = arguments[0].value
        else:
            value = SCALAR if function in _SCALAR_FUNCTIONS else UNKNOWN
        return self.estimate(1 + max([0, *(a.depth for a in arguments)]), cost, value)

    def empty(self, closing: str) -> None:
        """Skip the comma of an empty list, map or message (``[,]``), which CEL allows."""
        if self.at(",") and self.at(closing, ahead=1):
            self.take()

    def arguments(self, closing: str) -> list[Estimate]:
        """Expressions separated by commas up to ``closing`` (a trailing comma allowed)."""
        self.empty(closing)
        found: list[Estimate] = []
        while not self.at(closing):
            found.append(self.expression())
            if not self.at(","):
                break
            self.take()
        self.expect(closing)
        return found

    def message(self, name: Estimate) -> Estimate:
        """``{field: value, ...}`` after a message name."""
        self.take()
        self.empty("}")
        parts: list[Estimate] = []
        while not self.at("}"):
            self.name()
            self.expect(":")
            parts.append(self.expression())
            if not self.at(","):
                break
            self.take()
        self.expect("}")
        depth = 1 + max([name.depth, *(p.depth for p in parts)])
        return self.estimate(depth, 1 + name.cost + sum(p.cost for p in parts), UNKNOWN)

    def primary(self) -> Estimate:
        if self.token.kind in ("string", "number"):
            self.take()
            return self.estimate(1, 1)
        if self.at("."):
            self.take()  # a leading dot names the root scope
        if self.at("("):
            self.take()
            inner = self.expression()
            self.expect(")")
            return self.estimate(inner.depth + 1, inner.cost, inner.value)
        if self.at("["):
            self.take()
            return self.list_literal(self.arguments("]"))
        if self.at("{"):
            return self.map_literal()
        name = self.name()
        if self.at("("):
            self.take()
            return self.call(name)
        return self.estimate(1, 1, self.lookup(name))

    def list_literal(self, elements: list[Estimate]) -> Estimate:
        element = elements[0].value if elements else SCALAR
        for each in elements[1:]:
            element = _join(element, each.value)
        return self.estimate(
            1 + max([0, *(e.depth for e in elements)]),
            1 + sum(e.cost for e in elements),
            Value(size=len(elements), element=element),
        )

    def map_literal(self) -> Estimate:
        self.take()
        self.empty("}")
        keys: list[Estimate] = []
        values: list[Estimate] = []
        while not self.at("}"):
            keys.append(self.expression())
            self.expect(":")
            values.append(self.expression())
            if not self.at(","):
                break
            self.take()
        self.expect("}")
        key = entry = SCALAR
        for each_key, each_value in zip(keys, values, strict=True):
            key, entry = _join(key, each_key.value), _join(entry, each_value.value)
        parts = keys + values
        return self.estimate(
            1 + max([0, *(p.depth for p in parts)]),
            1 + sum(p.cost for p in parts),
            Value(size=len(keys), element=key, entry=entry),
        )

    def lookup(self, name: str) -> Value:
        """What bounds an identifier: a comprehension variable, a variable, or a type name."""
        for variable, value in reversed(self.bound):
            if variable == name:
                return value
        if name in SCOPE:
            return SCOPE[name]
        if name in ("true", "false", "null") or name in TYPE_NAMES:
            return SCALAR
        return UNKNOWN


def _select(value: Value, name: str) -> Value:
    """What bounds ``value.name``: a known field, else any value of the map."""
    if value.fields is not None and name in value.fields:
        return value.fields[name]
    return _entry(value)


def check(source: str) -> Estimate:
    """Refuse ``source`` with ``CelBoundError`` unless it keeps the length, depth and cost bounds.

    Returns the estimate of a whole expression. Raises ``CelUnreadableError`` for one the parser
    here cannot read: the caller lets the extension report the syntax error (safe, as the
    length and the nesting of brackets have been checked by then).
    """
    if len(source) > MAX_LENGTH:
        raise CelBoundError(f"is {len(source):,} characters long; the limit is {MAX_LENGTH:,}")
    reader = _Reader(source)
    whole = reader.expression()
    if reader.token.kind != "end":
        raise reader.unexpected()
    if whole.cost > MAX_COST:
        raise CelBoundError(
            f"estimated cost {whole.cost:,} exceeds the limit of {MAX_COST:,}: each comprehension"
            " multiplies the cost of its body by the most elements its range can have"
        )
    return whole
