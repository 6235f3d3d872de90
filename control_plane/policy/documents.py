"""Policy documents: loading them from YAML or JSON, validating them, compiling a policy set.

Validation names the offending field the way request validation does
(``policies[0].requirements.compute_zones[1]: unknown zone 'jp-nort'``), so a policy
author can fix a file without reading code. Compilation happens once per policy-set
version: CEL programs are compiled, lists become frozensets, and what the engine needs to
look up per decision is laid out in ``CompiledPolicy``. Nothing here reads files or
clocks; the caller hands over text or parsed documents.
"""

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from agents.protocol import canonical_json
from control_plane.core.bodies import parse_yaml
from control_plane.core.errors import InvalidInputError, echo
from control_plane.domain.decisions import EnforcementAction, ViolationAction
from control_plane.domain.fleet import ProvenanceStatus
from control_plane.policy import bounds, conditions
from control_plane.policy.models import PROVENANCE_RANK, PolicyDocument, Selector


def load_documents(text: str, *, source: str | None = None) -> list[dict[str, Any]]:
    """Parse policy documents from YAML or JSON text.

    Accepted shapes: one policy (a mapping with ``name``), a list of policies, a mapping
    ``{"policies": [...]}``, or several YAML documents separated by ``---``, each of them
    one of the former. ``source`` (a file name) leads error messages when given. The text
    is read by ``core.bodies.parse_yaml``: JSON's values only, bounded in depth and size.
    """
    return split_documents(parse_yaml(text, source=source))


def split_documents(parsed: Iterable[Any]) -> list[dict[str, Any]]:
    """Flatten parsed documents into one list of policies, in order.

    Each element of ``parsed`` is one policy, a list of policies, or ``{"policies": [...]}``
    (what ``load_documents`` accepts per YAML document; the API uses it on a JSON body).
    """
    documents: list[dict[str, Any]] = []
    for doc in parsed:
        if isinstance(doc, Mapping) and set(doc) == {"policies"}:
            doc = doc["policies"]
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, Mapping):
                raise InvalidInputError.for_field(
                    f"policies[{len(documents)}]", "must be a mapping (a policy document)"
                )
            documents.append(dict(item))
    return documents


def _path(prefix: str, loc: Iterable[int | str]) -> str:
    path = prefix
    for part in loc:
        if part == "[key]":
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    return str(error["msg"]).removeprefix("Value error, ")


#: A validation problem: field path, what is wrong, the value given.
Problem = tuple[str, str, Any]


def validation_problems(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Pydantic's errors as problems with dotted field paths (``policies[0].name``)."""
    return [
        (_path(prefix, error["loc"]) or prefix or "document", _message(error), error.get("input"))
        for error in exc.errors(include_url=False)
    ]


#: Problems one error lists; the count of the rest is said.
MAX_PROBLEMS_LISTED = 100


def invalid(problems: Sequence[Problem]) -> InvalidInputError:
    """One error listing the problems, each as ``field: message``, all in ``details``.

    At most ``MAX_PROBLEMS_LISTED``, each value echoed within ``core.errors.echo``'s
    bounds, so the error stays small whatever the documents were.
    """
    listed = problems[:MAX_PROBLEMS_LISTED]
    message = "; ".join(f"{field}: {text}" for field, text, _ in listed)
    if len(problems) > len(listed):
        message += f"; and {len(problems) - len(listed)} more problems"
    return InvalidInputError(
        message,
        details={
            "fields": [
                {"field": field, "message": text, "value": echo(value)}
                for field, text, value in listed
            ],
            "problems": len(problems),
        },
    )


def _raw_list(raw: Mapping[str, Any], *path: str) -> list[Any]:
    """``raw[path...]`` if it is a list, else empty: for checks that run before the schema's."""
    value: Any = raw
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, list) else []


def _check_zones(
    raw: Mapping[str, Any], prefix: str, known_zones: Collection[str]
) -> list[Problem]:
    return [
        (f"{prefix}.requirements.compute_zones[{position}]", f"unknown zone {zone!r}", zone)
        for position, zone in enumerate(_raw_list(raw, "requirements", "compute_zones"))
        if isinstance(zone, str) and zone.strip().lower() not in known_zones
    ]


def _check_cel(
    raw: Mapping[str, Any], prefix: str, *, stored: bool
) -> tuple[list[conditions.Program], list[Problem], list[str]]:
    """Compile a document's CEL rules: their programs, the problems, the rules refused.

    ``stored`` documents were accepted before: a rule the bounds refuse now becomes a
    ``conditions.Refused`` that fails closed (and is listed, to be logged) rather than a
    problem that would stop the set from compiling.
    """
    programs: list[conditions.Program] = []
    problems: list[Problem] = []
    refused: list[str] = []
    seen: set[str] = set()
    for position, rule in enumerate(_raw_list(raw, "requirements", "cel")):
        where = f"{prefix}.requirements.cel[{position}]"
        name = rule.get("name") if isinstance(rule, Mapping) else None
        if isinstance(name, str):
            if name.strip().lower() in seen:
                problems.append((f"{where}.name", f"duplicate rule name {name!r}", name))
            seen.add(name.strip().lower())
        expression = rule.get("expression") if isinstance(rule, Mapping) else None
        if not isinstance(expression, str) or not expression or len(expression) > bounds.MAX_LENGTH:
            continue  # the schema reports it
        try:
            program = conditions.compile_expression(expression)
        except bounds.CelBoundError as exc:
            if not stored:
                problems.append((f"{where}.expression", str(exc), expression))
                continue
            programs.append(conditions.Refused(f"refused by the CEL bounds: {exc}"))
            refused.append(f"policy {raw.get('name')!r}, CEL rule {name!r}: {exc}")
            continue
        except conditions.CelSyntaxError as exc:
            problems.append((f"{where}.expression", str(exc), expression))
            continue
        unknown = conditions.unknown_variables(expression, program)
        if unknown:
            problems.append(
                (
                    f"{where}.expression",
                    f"unknown variable {', '.join(map(repr, unknown))}"
                    " (use workload, node, datasets or models)",
                    expression,
                )
            )
        programs.append(program)
    return programs, problems, refused


#: A validated document with its CEL programs, in the order of its rules.
_Checked = tuple[PolicyDocument, list[conditions.Program]]


def _validate(
    documents: Sequence[Mapping[str, Any] | PolicyDocument], known_zones: Collection[str] | None
) -> tuple[list[_Checked], list[str]]:
    """The documents checked, and the CEL rules refused (only ``known_zones`` ``None``)."""
    problems: list[Problem] = []
    checked: list[_Checked] = []
    refused: list[str] = []
    first_index: dict[str, int] = {}
    for index, given in enumerate(documents):
        prefix = f"policies[{index}]"
        raw = given.model_dump(mode="json") if isinstance(given, PolicyDocument) else given
        # Zones and CEL are checked on the raw document too, so that one run reports them
        # alongside any schema error rather than after it is fixed.
        if known_zones is not None:
            problems += _check_zones(raw, prefix, known_zones)
        programs, cel_problems, cel_refused = _check_cel(raw, prefix, stored=known_zones is None)
        problems += cel_problems
        refused += cel_refused
        try:
            doc = PolicyDocument.model_validate(raw)
        except ValidationError as exc:
            problems += validation_problems(exc, prefix)
            continue
        if doc.name in first_index:
            problems.append(
                (
                    f"{prefix}.name",
                    f"duplicate policy name {doc.name!r} (also policies[{first_index[doc.name]}])",
                    doc.name,
                )
            )
        first_index.setdefault(doc.name, index)
        req = doc.requirements
        if req.data_residency and not (req.compute_zones or req.compute_countries):
            problems.append(
                (
                    f"{prefix}.requirements.data_residency",
                    "needs compute_zones or compute_countries: they are the places data may be",
                    True,
                )
            )
        checked.append((doc, programs))
    if problems:
        raise invalid(sorted(problems, key=lambda problem: _natural(problem[0])))
    return checked, refused


def _natural(path: str) -> list[Any]:
    """Sort key that puts ``cel[2]`` before ``cel[10]`` and keeps a document's problems together."""
    return [int(part) if part.isdigit() else part for part in re.split(r"\[(\d+)\]", path)]


def validate_documents(
    documents: Sequence[Mapping[str, Any] | PolicyDocument], known_zones: Collection[str]
) -> list[PolicyDocument]:
    """Check policy documents against the schema, the zones that exist, CEL's grammar and bounds.

    Raises ``InvalidInputError`` listing every problem with its field path, e.g.
    ``policies[0].requirements.cel[0].expression: syntax error at 1:17: ...``.
    """
    checked, _ = _validate(documents, known_zones)
    return [doc for doc, _ in checked]


#: Fields added to documents after policies were stored, with their defaults: a document
#: that leaves one at its default hashes without it, as it did before the field existed,
#: so upgrading changes no stored policy's or set's content hash.
#: ``part`` ``None`` is a field of the document itself. So ``on_violation: record``
#: written out hashes as a document that leaves it out.
_LATER_FIELDS: tuple[tuple[str | None, str, Any], ...] = (
    ("selector", "min_classification", None),
    ("requirements", "require_output", False),
    (None, "on_violation", ViolationAction.RECORD.value),
)


def canonical_document(doc: PolicyDocument) -> dict[str, Any]:
    """The validated document as JSON values, as it is hashed (see ``_LATER_FIELDS``)."""
    dumped = doc.model_dump(mode="json")
    for part, name, default in _LATER_FIELDS:
        holder = dumped if part is None else dumped[part]
        if holder.get(name, default) == default:
            holder.pop(name, None)
    return dumped


def content_hash(documents: Iterable[PolicyDocument]) -> str:
    """SHA-256 of the canonical JSON of the documents, ordered by name.

    The documents are hashed after validation (defaults filled in, slugs lower-cased,
    country codes upper-cased; see ``canonical_document``), so two files that say the same thing
    hash the same.
    """
    ordered = sorted(documents, key=lambda doc: doc.name)
    payload = canonical_json([canonical_document(doc) for doc in ordered])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


#: One value a set's conditions read, remembered by: (variable, field, map key). ``field``
#: ``None`` is the whole variable (for ``datasets`` and ``models``, always), ``key`` ``None``
#: the whole field.
Slot = tuple[str, str | None, str | None]


@dataclass(frozen=True, slots=True, eq=False)
class CelCondition:
    """A compiled CEL rule and what it reads.

    ``node_level`` conditions read ``node`` and filter nodes; the others judge the
    workload. ``reads_workload_data`` says whether a node condition also reads
    ``workload``, ``datasets`` or ``models``: if not, its answer per node profile can be
    kept for as long as the node index lives. The ``*_fields`` projections say which
    fields of each variable (of each element, for the lists) the expression reads.

    ``slots`` are the positions in ``PolicySet.slots`` of the values it reads of the
    workload, datasets and models: the engine's ``DecisionCache`` remembers the
    condition's verdict per distinct tuple of those values (``key``). The condition itself
    holds nothing that changes, so it can be shared by any number of caches and threads.
    """

    name: str
    expression: str
    message: str
    program: conditions.Program
    node_level: bool
    reads_workload_data: bool
    node_fields: conditions.Projection
    workload_fields: conditions.Projection
    reads_datasets: bool
    dataset_fields: conditions.Projection
    reads_models: bool
    model_fields: conditions.Projection
    slots: tuple[int, ...] = ()

    def key(self, fingerprints: Sequence[bytes]) -> Any:
        """The key its answers are kept under, from the fingerprints of the set's slots."""
        slots = self.slots
        if len(slots) == 1:
            return fingerprints[slots[0]]
        return tuple([fingerprints[position] for position in slots])

    @property
    def rule(self) -> str:
        """The rule's name as reasons show it."""
        return f"cel.{self.name}"

    @property
    def requirement(self) -> str:
        """What the condition asks for, in the author's words when there are some."""
        return self.message or f"{self.expression} must be true"


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """A validated policy laid out for the engine: sets to look things up in, programs to run.

    ``workload_node_cel`` are the node conditions that also read the workload, so they run
    on every decision; ``judges_workload`` says whether any requirement judges the workload
    itself (data residency, CEL without ``node``); ``selects_all`` that the selector is empty,
    so the policy applies to every workload. ``node_key`` identifies the node-level
    requirements by content; the engine's ``DecisionCache`` keeps each distinct key's
    eligible-node masks per index, so they are computed once per index, and policies that
    say the same share them.

    ``version`` (the store's, ``None`` for a document never stored) and ``content_hash``
    (of this document alone) identify it in a decision's explanation; ``workload_rules``
    names its workload rules in the order their reasons come; ``selector_words`` says
    each selector field in words, for the explanation of a workload it does not select.
    """

    document: PolicyDocument
    name: str
    action: EnforcementAction
    tenants: frozenset[str]
    classifications: frozenset[str]
    #: ``Classification.rank`` of ``min_classification``; ``None`` when not given.
    min_rank: int | None
    #: The selector's labels as (key, value) pairs, so "carries them all" is a subset test.
    dataset_labels: frozenset[tuple[str, str]]
    model_labels: frozenset[tuple[str, str]]
    compute_zones: frozenset[str]
    compute_countries: frozenset[str]
    server_origin_countries: frozenset[str]
    component_origin_countries: Mapping[str, frozenset[str]]
    allowed_provenance: frozenset[ProvenanceStatus] | None
    exclude_quarantined: bool
    data_residency: bool
    require_output: bool
    workload_cel: tuple[CelCondition, ...]
    node_cel: tuple[CelCondition, ...]
    workload_node_cel: tuple[CelCondition, ...]
    judges_workload: bool
    selects_all: bool
    node_key: str
    version: int | None
    content_hash: str
    workload_rules: tuple[str, ...]
    selector_words: Mapping[str, str]

    @property
    def compute_places(self) -> str:
        """The allowed places in words, e.g. ``jp, jp-west or country KR``."""
        places = sorted(self.compute_zones) + [
            f"country {c}" for c in sorted(self.compute_countries)
        ]
        return either(places)


def either(items: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``: alternatives as reasons say them."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


def _condition(
    rule_name: str, expression: str, message: str, program: conditions.Program
) -> CelCondition:
    variables = set(program.variables())
    reads = {name: name in variables for name in conditions.VARIABLES}
    return CelCondition(
        name=rule_name,
        expression=expression,
        message=message,
        program=program,
        node_level=reads["node"],
        reads_workload_data=reads["workload"] or reads["datasets"] or reads["models"],
        node_fields=conditions.projection(expression, "node") if reads["node"] else {},
        workload_fields=conditions.projection(expression, "workload") if reads["workload"] else {},
        reads_datasets=reads["datasets"],
        dataset_fields=conditions.element_projection(expression, "datasets")
        if reads["datasets"]
        else {},
        reads_models=reads["models"],
        model_fields=conditions.element_projection(expression, "models") if reads["models"] else {},
    )


def _labels_words(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in sorted(labels.items())) + "}"


def _selector_words(selector: Selector) -> dict[str, str]:
    """Each selector field given, in words (``selector tenants [acme, beta]``)."""
    words: dict[str, str] = {}
    if selector.tenants:
        words["tenants"] = f"selector tenants [{', '.join(sorted(selector.tenants))}]"
    if selector.classifications:
        ordered = sorted(set(selector.classifications), key=lambda c: c.rank)
        words["classifications"] = f"selector classifications [{', '.join(ordered)}]"
    if selector.min_classification is not None:
        words["min_classification"] = f"selector min_classification {selector.min_classification}"
    if selector.dataset_labels:
        words["dataset_labels"] = (
            f"selector dataset_labels {_labels_words(selector.dataset_labels)}"
        )
    if selector.model_labels:
        words["model_labels"] = f"selector model_labels {_labels_words(selector.model_labels)}"
    return words


def _compile(
    doc: PolicyDocument, compiled_cel: list[CelCondition], version: int | None
) -> CompiledPolicy:
    req = doc.requirements
    selector = doc.selector
    allowed_provenance = (
        None
        if req.min_provenance_status is None
        else frozenset(
            status
            for status, rank in PROVENANCE_RANK.items()
            if rank >= PROVENANCE_RANK[req.min_provenance_status]
        )
    )
    components = {
        str(cls): frozenset(countries) for cls, countries in req.component_origin_countries.items()
    }
    node_cel = tuple(c for c in compiled_cel if c.node_level)
    workload_cel = tuple(c for c in compiled_cel if not c.node_level)
    # The order ``decisions._workload_findings`` finds them in.
    workload_rules = (
        *(["require_output"] if req.require_output else []),
        *(["data_residency"] if req.data_residency else []),
        *(c.rule for c in workload_cel),
    )
    places = (frozenset(req.compute_zones), frozenset(req.compute_countries))
    # A string, not a tuple: strings keep their hash, and the engine looks this up once
    # per matched policy per decision.
    node_key = canonical_json(
        [
            sorted(req.compute_zones),
            sorted(req.compute_countries),
            sorted(req.server_origin_countries),
            {cls: sorted(countries) for cls, countries in components.items()},
            sorted(allowed_provenance or ()),
            req.exclude_quarantined,
            [[c.name, c.expression, c.message] for c in node_cel if not c.reads_workload_data],
        ]
    )
    return CompiledPolicy(
        document=doc,
        name=doc.name,
        action=doc.enforcement_action,
        tenants=frozenset(selector.tenants),
        classifications=frozenset(selector.classifications),
        min_rank=None if selector.min_classification is None else selector.min_classification.rank,
        dataset_labels=frozenset(doc.selector.dataset_labels.items()),
        model_labels=frozenset(doc.selector.model_labels.items()),
        compute_zones=places[0],
        compute_countries=places[1],
        server_origin_countries=frozenset(req.server_origin_countries),
        component_origin_countries=components,
        allowed_provenance=allowed_provenance,
        exclude_quarantined=req.exclude_quarantined,
        data_residency=req.data_residency,
        require_output=req.require_output,
        workload_cel=workload_cel,
        node_cel=node_cel,
        workload_node_cel=tuple(c for c in node_cel if c.reads_workload_data),
        judges_workload=bool(workload_rules),
        selects_all=not (
            selector.tenants
            or selector.classifications
            or selector.min_classification is not None
            or selector.dataset_labels
            or selector.model_labels
        ),
        node_key=node_key,
        version=version,
        content_hash=content_hash([doc]),
        workload_rules=workload_rules,
        selector_words=_selector_words(selector),
    )


@dataclass(frozen=True, slots=True, eq=False)
class PolicySet:
    """The active policies, compiled, with the version and content hash every decision records.

    ``workload_fields``, ``dataset_fields`` and ``model_fields`` (with ``reads_datasets``
    and ``reads_models``) say what of a workload any CEL rule in the set reads, so a
    decision hands CEL only that, once. ``slots`` splits that into the single values
    a condition's verdicts are remembered by (see ``CelCondition``). ``refused`` names
    the stored CEL rules that the bounds refuse now, each with why: they fail closed.
    """

    version: int
    content_hash: str
    policies: tuple[CompiledPolicy, ...]
    workload_fields: conditions.Projection
    reads_datasets: bool
    dataset_fields: conditions.Projection
    reads_models: bool
    model_fields: conditions.Projection
    slots: tuple[Slot, ...]
    refused: tuple[str, ...] = ()

    @property
    def documents(self) -> list[PolicyDocument]:
        """The validated documents, in evaluation order (by name)."""
        return [policy.document for policy in self.policies]


def _slots(union: conditions.Projection, reads_datasets: bool, reads_models: bool) -> list[Slot]:
    slots: list[Slot] = []
    if union is None:
        slots.append(("workload", None, None))
    else:
        for name, keys in sorted(union.items()):
            if keys is None:
                slots.append(("workload", name, None))
            else:
                slots += [("workload", name, key) for key in sorted(keys)]
    if reads_datasets:
        slots.append(("datasets", None, None))
    if reads_models:
        slots.append(("models", None, None))
    return slots


def _slots_read(condition: CelCondition, slots: list[Slot]) -> tuple[int, ...]:
    """Which of the set's slots hold what ``condition`` reads (some more, never less)."""
    read: set[int] = set()
    fields = condition.workload_fields
    for position, (variable, name, key) in enumerate(slots):
        if variable == "datasets":
            wanted = condition.reads_datasets
        elif variable == "models":
            wanted = condition.reads_models
        elif fields is None or name is None:
            wanted = fields != {}
        elif name not in fields:
            wanted = False
        else:
            keys = fields[name]
            wanted = key is None or keys is None or key in keys
        if wanted:
            read.add(position)
    return tuple(sorted(read))


def compile_policy_set(
    documents: Sequence[Mapping[str, Any] | PolicyDocument],
    version: int,
    known_zones: Collection[str] | None,
    *,
    versions: Mapping[str, int] | None = None,
) -> PolicySet:
    """Validate ``documents`` and compile them into the policy set the engine evaluates.

    Policies are kept in name order, so reasons come out in the same order whatever the
    order of the file. Raises ``InvalidInputError`` as ``validate_documents`` does.
    ``known_zones`` ``None`` is for documents checked when they were stored, so that what
    changed since fails closed instead of stopping the set from compiling: the zone check
    is skipped (a zone deleted since simply contains no node), and a CEL rule the bounds
    refuse now (``policy.bounds``) never runs and fails (``PolicySet.refused`` lists it).
    ``versions`` gives each stored policy's version by name, which explanations record.
    """
    if version < 0:
        raise InvalidInputError.for_field("version", "must not be negative", version)
    validated, refused = _validate(documents, known_zones)
    checked = sorted(validated, key=lambda pair: pair[0].name)
    per_policy = [
        [
            _condition(rule.name, rule.expression, rule.message, program)
            for rule, program in zip(doc.requirements.cel, programs, strict=True)
        ]
        for doc, programs in checked
    ]
    every = [c for found in per_policy for c in found]
    union = conditions.merge_projections(c.workload_fields for c in every)
    reads_datasets = any(c.reads_datasets for c in every)
    reads_models = any(c.reads_models for c in every)
    slots = _slots(union, reads_datasets, reads_models)
    policies = tuple(
        _compile(
            doc,
            [replace(c, slots=_slots_read(c, slots)) for c in found],
            None if versions is None else versions.get(doc.name),
        )
        for (doc, _), found in zip(checked, per_policy, strict=True)
    )
    return PolicySet(
        version=version,
        content_hash=content_hash(doc for doc, _ in checked),
        policies=policies,
        workload_fields=union,
        reads_datasets=reads_datasets,
        dataset_fields=conditions.merge_projections(
            c.dataset_fields for c in every if c.reads_datasets
        ),
        reads_models=reads_models,
        model_fields=conditions.merge_projections(c.model_fields for c in every if c.reads_models),
        slots=tuple(slots),
        refused=tuple(refused),
    )
