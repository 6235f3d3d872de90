"""Policy store use cases: apply documents, activate a set, roll back, and the active set.

Three steps, each audited in its own transaction:

* ``apply_policies`` validates documents against the zones that exist and stores each as a
  new version of its name (a document equal to the latest version is not stored again).
  It changes nothing that is enforced.
* ``activate`` makes a set of ``name@version`` members active, as a new policy set.
* ``rollback`` makes an earlier set's members active again, also as a new set, so the
  history stays a line and the highest set version is always the active one.

``active_policy_set`` gives callers (admission, the sweep) the compiled active set; with a
``CompiledPolicySets`` held per process, each set is compiled once. ``candidate_set``
compiles what applying documents and then activating by default would enforce, storing
nothing, for what-if. Activation and rollback ask for a compliance evaluation
(``core.outbox``) in their transaction.
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control_plane.core.audit_log import AuditContext, record_change, transaction
from control_plane.core.db import DbConnection
from control_plane.core.errors import ConflictError, InvalidInputError, NotFoundError
from control_plane.core.outbox import request_evaluation
from control_plane.domain.audit import AuditAction
from control_plane.domain.compliance import EvaluationTrigger
from control_plane.policy import repository
from control_plane.policy.documents import (
    PolicySet,
    compile_policy_set,
    content_hash,
    validate_documents,
)
from control_plane.policy.models import PolicyDocument
from control_plane.policy.store_models import (
    AppliedPolicy,
    CandidateMember,
    MemberSource,
    PolicyApplied,
    PolicySetActivate,
    PolicySetActivated,
    PolicySetMembers,
    PolicySetPage,
    PolicySetPublic,
    PolicySetRef,
    PolicySetRollback,
    PolicySummary,
    PolicyVersionPublic,
    PolicyVersionRef,
    StoredDocument,
    StoredVersion,
)

log = logging.getLogger(__name__)

#: The content hash of a set with no policies (version 0, before any activation).
EMPTY_SET_HASH = content_hash([])


# -- reading ---------------------------------------------------------------------------


def _set_public(stored: PolicySetPublic | None) -> PolicySetPublic:
    """A stored set, or the empty set of version 0 in force before any activation."""
    if stored is None:
        return PolicySetPublic(
            version=0,
            content_hash=EMPTY_SET_HASH,
            members=[],
            activated_at=None,
            activated_by=None,
            note="",
            previous_version=None,
            restores_version=None,
        )
    return stored


def _members(policy_set: PolicySetPublic) -> dict[str, int]:
    return {member.name: member.version for member in policy_set.members}


def get_active_set(conn: DbConnection) -> PolicySetPublic:
    """The active policy set; version 0, empty, when nothing was ever activated."""
    return _set_public(repository.active_set(conn))


def list_sets(conn: DbConnection, limit: int, offset: int) -> PolicySetPage:
    """Every policy set ever activated, newest (the active one) first."""
    items, total = repository.list_sets(conn, limit, offset)
    return PolicySetPage(items=items, total=total, limit=limit, offset=offset)


def list_policies(conn: DbConnection) -> list[PolicySummary]:
    """Every stored policy's latest version, with the version the active set enforces."""
    active = _members(get_active_set(conn))
    return [
        PolicySummary(
            name=stored.name,
            version=stored.version,
            content_hash=stored.content_hash,
            created_at=stored.created_at,
            created_by=stored.created_by,
            description=stored.document.get("description", ""),
            enforcement_action=stored.document["enforcement_action"],
            active_version=active.get(stored.name),
            active=active.get(stored.name) == stored.version,
        )
        for stored in repository.latest_versions(conn)
    ]


def _version_public(stored: StoredDocument, active: Mapping[str, int]) -> PolicyVersionPublic:
    return PolicyVersionPublic(
        **stored.model_dump(), active=active.get(stored.name) == stored.version
    )


def policy_history(conn: DbConnection, name: str) -> list[PolicyVersionPublic]:
    """Every version of one policy, oldest first (404 if it was never applied)."""
    versions = repository.policy_versions(conn, name)
    if not versions:
        raise NotFoundError(f"policy {name!r} does not exist")
    active = _members(get_active_set(conn))
    return [_version_public(stored, active) for stored in versions]


def get_policy_version(conn: DbConnection, name: str, version: int) -> PolicyVersionPublic:
    """One version of a policy (404 if the policy or the version does not exist)."""
    stored = repository.get_version(conn, name, version)
    if stored is None:
        if repository.latest_version(conn, name) is None:
            raise NotFoundError(f"policy {name!r} does not exist")
        raise NotFoundError(f"policy {name!r} has no version {version}")
    return _version_public(stored, _members(get_active_set(conn)))


# -- applying documents ----------------------------------------------------------------


def _set_ref(policy_set: PolicySetPublic) -> PolicySetRef:
    return PolicySetRef(version=policy_set.version, content_hash=policy_set.content_hash)


def _validated(conn: DbConnection, documents: Sequence[Mapping[str, Any]]) -> list[PolicyDocument]:
    """Documents checked as applying checks them (422 naming every problem), in order."""
    if not documents:
        raise InvalidInputError.for_field("policies", "give at least one policy document")
    return validate_documents(documents, repository.zone_slugs(conn))


def apply_policies(
    conn: DbConnection, ctx: AuditContext, documents: Sequence[Mapping[str, Any]]
) -> list[AppliedPolicy]:
    """Validate documents and store each as a new version of its name; activate nothing.

    A document equal (after validation) to its name's latest version is reported with
    ``created: false`` and not stored again. Invalid documents are 422, every problem named
    by its path (``policies[0].requirements.compute_zones[1]: unknown zone 'jp-nort'``),
    and nothing is stored.
    """
    validated = _validated(conn, documents)
    applied: list[AppliedPolicy] = []
    events: list[tuple[StoredVersion | None, StoredVersion, PolicyDocument]] = []
    with transaction(conn):
        repository.lock_store(conn)
        for doc in validated:
            digest = content_hash([doc])
            latest = repository.latest_version(conn, doc.name)
            if latest is not None and latest.content_hash == digest:
                applied.append(
                    AppliedPolicy(
                        name=doc.name, version=latest.version, content_hash=digest, created=False
                    )
                )
                continue
            stored = repository.insert_version(
                conn,
                {
                    "name": doc.name,
                    "version": 1 if latest is None else latest.version + 1,
                    "document": doc.model_dump(mode="json"),
                    "content_hash": digest,
                    "created_by": ctx.actor_name,
                },
            )
            applied.append(
                AppliedPolicy(
                    name=stored.name,
                    version=stored.version,
                    content_hash=stored.content_hash,
                    created=True,
                )
            )
            events.append((latest, stored, doc))
        # What is enforced does not change; the events say which set still is.
        enforced = _set_ref(get_active_set(conn))
        for latest, stored, doc in events:
            record_change(
                conn,
                ctx,
                AuditAction.POLICY_APPLIED,
                doc.name,
                before=None if latest is None else _version_ref(latest),
                after=PolicyApplied(
                    **_version_ref(stored).model_dump(), document=doc, active_policy_set=enforced
                ),
            )
    return applied


def _version_ref(stored: StoredVersion) -> PolicyVersionRef:
    return PolicyVersionRef(
        name=stored.name, version=stored.version, content_hash=stored.content_hash
    )


# -- activating and rolling back -------------------------------------------------------


def _chosen_members(conn: DbConnection, choice: PolicySetActivate) -> dict[str, int]:
    """The members ``choice`` asks for, checked against what is stored (422 naming the field)."""
    latest = {stored.name: stored.version for stored in repository.latest_versions(conn)}
    if choice.members is None:
        members = dict(latest)
    else:
        members = {}
        for position, member in enumerate(choice.members):
            where = f"members.{position}"
            if member.name not in latest:
                raise InvalidInputError.for_field(
                    f"{where}.name", f"unknown policy {member.name!r}", member.name
                )
            if member.name in members:
                raise InvalidInputError.for_field(
                    f"{where}.name", f"policy {member.name!r} is listed twice", member.name
                )
            version = latest[member.name] if member.version is None else member.version
            if version > latest[member.name]:
                raise InvalidInputError.for_field(
                    f"{where}.version",
                    f"policy {member.name!r} has no version {version}"
                    f" (latest is {latest[member.name]})",
                    version,
                )
            members[member.name] = version
    for position, name in enumerate(choice.without):
        if name not in members:
            raise InvalidInputError.for_field(
                f"without.{position}", f"policy {name!r} is not in the set", name
            )
        del members[name]
    return members


def _store_set(
    conn: DbConnection,
    ctx: AuditContext,
    *,
    members: Mapping[str, int],
    active: PolicySetPublic,
    note: str,
    restores: int | None,
) -> PolicySetPublic:
    """Insert the new active set after ``active`` and audit it; the caller holds the lock."""
    if not members:
        raise ConflictError(
            "a policy set needs at least one policy; there is nothing to activate",
            details={"reason": "empty"},
        )
    if dict(members) == _members(active):
        raise ConflictError(
            f"policy set {active.version} already has exactly these members",
            details={"reason": "unchanged", "active_version": active.version},
        )
    listed = [{"name": name, "version": members[name]} for name in sorted(members)]
    documents = [
        PolicyDocument.model_validate(member.document)
        for member in repository.member_documents(conn, listed)
    ]
    created = repository.insert_set(
        conn,
        {
            "version": active.version + 1,
            "content_hash": content_hash(documents),
            "members": listed,
            "activated_by": ctx.actor_name,
            "note": note,
            "previous_version": active.version or None,
            "restores_version": restores,
        },
    )
    request_evaluation(
        conn,
        EvaluationTrigger.POLICY_SET_ACTIVATED
        if restores is None
        else EvaluationTrigger.POLICY_SET_ROLLED_BACK,
        {
            "policy_set_version": created.version,
            "content_hash": created.content_hash,
            "previous_version": active.version,
            "restores_version": restores,
        },
    )
    record_change(
        conn,
        ctx,
        AuditAction.POLICY_SET_ACTIVATED
        if restores is None
        else AuditAction.POLICY_SET_ROLLED_BACK,
        str(created.version),
        before=PolicySetMembers(
            version=active.version, content_hash=active.content_hash, members=active.members
        ),
        after=PolicySetActivated(
            version=created.version,
            content_hash=created.content_hash,
            members=created.members,
            note=created.note,
            restores_version=created.restores_version,
        ),
    )
    return created


def activate(conn: DbConnection, ctx: AuditContext, choice: PolicySetActivate) -> PolicySetPublic:
    """Make a new policy set active: by default the latest version of every stored policy.

    ``members`` lists the policies instead (a member without a version means its latest);
    ``without`` leaves policies out. An empty set, or one with exactly the active set's
    members, is 409. Audited as ``policy_set.activated``.
    """
    with transaction(conn):
        repository.lock_store(conn)
        active = get_active_set(conn)
        return _store_set(
            conn,
            ctx,
            members=_chosen_members(conn, choice),
            active=active,
            note=choice.note,
            restores=None,
        )


def rollback(conn: DbConnection, ctx: AuditContext, request: PolicySetRollback) -> PolicySetPublic:
    """Make an earlier set's members active again, as a new set.

    By default the set active before the current one, so rolling back twice returns to
    where it started (as ``kubectl rollout undo`` does). 409 when there is nothing to roll
    back to or the target has the active set's members. Audited as
    ``policy_set.rolled_back``.
    """
    with transaction(conn):
        repository.lock_store(conn)
        active = get_active_set(conn)
        target_version = request.to_version or active.previous_version
        if target_version is None:
            raise ConflictError(
                "there is no earlier policy set to roll back to",
                details={"reason": "no_previous", "active_version": active.version},
            )
        target = repository.get_set(conn, target_version)
        if target is None:
            raise InvalidInputError.for_field(
                "to_version", f"policy set {target_version} does not exist", target_version
            )
        return _store_set(
            conn,
            ctx,
            members=_members(target),
            active=active,
            note=request.note,
            restores=target.version,
        )


# -- the compiled active set -----------------------------------------------------------


class CompiledPolicySets:
    """The last few compiled policy sets, by (set version, content hash).

    Compiling a set (its CEL above all) costs milliseconds, and admission wants the active
    set on every request. Hold one of these per process (an API instance, a worker) and
    each activated set is compiled once. The same ``PolicySet`` object comes back for the
    same key, and the engine's ``DecisionCache`` remembers per set object, so what
    decisions remember under the active set (its CEL verdicts) survives between requests
    too. Safe to share between threads: a set compiled twice by a race is harmless, and
    the first one stored wins.
    """

    def __init__(self, capacity: int = 4) -> None:
        self._capacity = capacity
        self._sets: OrderedDict[tuple[int, str], PolicySet] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, str], build: Callable[[], PolicySet]) -> PolicySet:
        """The set stored under ``key``, built (outside the lock) and kept if missing."""
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets.move_to_end(key)
                return found
        built = build()
        with self._lock:
            kept = self._sets.setdefault(key, built)
            self._sets.move_to_end(key)
            while len(self._sets) > self._capacity:
                self._sets.popitem(last=False)
        return kept


def _compile(conn: DbConnection, policy_set: PolicySetPublic) -> PolicySet:
    listed = [member.model_dump() for member in policy_set.members]
    documents = [member.document for member in repository.member_documents(conn, listed)]
    # Zones were checked when each document was applied; one deleted since must not stop
    # the active set from compiling.
    compiled = compile_policy_set(
        documents, policy_set.version, known_zones=None, versions=_members(policy_set)
    )
    _warn_refused(compiled)
    if compiled.content_hash != policy_set.content_hash:
        log.warning(
            "policy set %s hashes to %s now but %s when activated; decisions record %s",
            policy_set.version,
            compiled.content_hash,
            policy_set.content_hash,
            compiled.content_hash,
        )
    return compiled


def _warn_refused(compiled: PolicySet) -> None:
    """Log each stored CEL rule of ``compiled`` that the bounds refuse now (it fails closed)."""
    for refusal in compiled.refused:
        log.warning(
            "policy set %s: %s; the rule fails closed until a new version of the policy"
            " is applied and activated",
            compiled.version,
            refusal,
        )


def compiled_set(
    conn: DbConnection, policy_set: PolicySetPublic, cache: CompiledPolicySets | None = None
) -> PolicySet:
    """``policy_set`` compiled (with ``cache``, once per version and content hash)."""
    if cache is None:
        return _compile(conn, policy_set)
    return cache.get(
        (policy_set.version, policy_set.content_hash), lambda: _compile(conn, policy_set)
    )


def active_policy_set(conn: DbConnection, cache: CompiledPolicySets | None = None) -> PolicySet:
    """The active set, compiled, with its version (0 and empty before any activation).

    With ``cache``, one indexed read per call finds the active version and hash, and the
    set is compiled only the first time that pair is seen.
    """
    return compiled_set(conn, get_active_set(conn), cache)


# -- what-if: the set a candidate would make ------------------------------------------


@dataclass(frozen=True, slots=True)
class CandidateSet:
    """The set that applying documents and then activating by default would enforce.

    ``policy_set`` is compiled with the version and content hash activation would record;
    ``members`` says which policies are stored versions and which are the proposed
    documents. ``active`` is the set in force now.
    """

    policy_set: PolicySet
    members: list[CandidateMember]
    active: PolicySetPublic


def candidate_set(conn: DbConnection, documents: Sequence[Mapping[str, Any]]) -> CandidateSet:
    """Compile what ``policy apply`` of ``documents`` then ``policy activate`` would enforce.

    Nothing is stored. The documents are validated as applying validates them (422 naming
    every problem). The members are those of a default activation (the latest version of
    every stored policy), with each proposed document in place of its name's stored
    versions; a new name joins the set.
    """
    validated = _validated(conn, documents)
    proposed = {doc.name for doc in validated}
    # A default activation's members are the latest versions, read here with their documents.
    latest = repository.latest_versions(conn)
    kept = [stored for stored in latest if stored.name not in proposed]
    # The version each proposed document would be stored as (apply keeps an unchanged
    # one at its latest), so explanations name the versions activation would record.
    stored_as = {stored.name: (stored.version, stored.content_hash) for stored in latest}
    versions = {stored.name: stored.version for stored in kept}
    for doc in validated:
        version, digest = stored_as.get(doc.name, (0, None))
        versions[doc.name] = version if digest == content_hash([doc]) else version + 1
    active = get_active_set(conn)
    compiled = compile_policy_set(
        [
            *(stored.document for stored in kept),
            *(doc.model_dump(mode="json") for doc in validated),
        ],
        active.version + 1,
        known_zones=None,  # checked: stored documents when applied, proposed ones above
        versions=versions,
    )
    _warn_refused(compiled)
    members = [
        *(
            CandidateMember(name=stored.name, version=stored.version, source=MemberSource.STORED)
            for stored in kept
        ),
        *(
            CandidateMember(name=name, version=None, source=MemberSource.CANDIDATE)
            for name in proposed
        ),
    ]
    return CandidateSet(
        policy_set=compiled, members=sorted(members, key=lambda m: m.name), active=active
    )
