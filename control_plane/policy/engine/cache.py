"""What decisions remember between calls: one ``DecisionCache``, owned by whoever decides.

Most of what a decision works out depends on a few inputs that repeat: a policy's node
masks on the index, a CEL condition's verdict on the values it reads, the whole plan for
a workload submitted before. The engine keeps none of it itself (no module state, nothing
on the index or the policy set); the caller hands it a ``DecisionCache`` and chooses how
long that lives: one per API process, one per compliance worker, one per what-if call,
one per ``sovctl policies test`` run.
"""

import threading
from typing import TYPE_CHECKING, Any, TypeVar

from control_plane.policy.conditions import Verdict
from control_plane.policy.documents import CelCondition, PolicySet
from control_plane.policy.engine.index import NodeIndex

if TYPE_CHECKING:
    from control_plane.policy.engine.checks import CelAnswer, NodeCheck, PolicyChecks
    from control_plane.policy.engine.decisions import Plan
    from control_plane.policy.engine.scope import Profiles
    from control_plane.policy.models import RuleCheck, SelectedPolicy, UnselectedPolicy

#: Entries per table before the table is cleared and refilled: a long-lived cache must
#: not grow without limit, and a full clear costs one refill of what is still in use.
MEMO_LIMIT = 4096
#: Indexes remembered at once. Two: the current fleet snapshot, and the one before it,
#: which requests begun before the fleet changed are still deciding on.
INDEXES_KEPT = 2
#: Policy sets remembered at once (per index, and for their verdicts), as many as
#: ``policy.service.CompiledPolicySets`` keeps compiled.
SETS_KEPT = 4

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class _IndexTables:
    """What is remembered per index, whatever the policy set, and each set's ``Memo`` on it."""

    __slots__ = ("candidates", "memos", "node_cel", "policy_checks", "profiles")

    def __init__(self) -> None:
        self.candidates: dict[tuple[int, str, int, str | None], int] = {}
        self.policy_checks: dict[str, PolicyChecks] = {}
        self.node_cel: dict[str, CelAnswer] = {}
        self.profiles: dict[Any, Profiles] = {}
        self.memos: dict[PolicySet, Memo] = {}


class Memo:
    """What decisions on one index under one policy set remember; from ``DecisionCache.memo``.

    The engine's modules read its tables directly and write them only through
    ``remember``, which holds the cache's lock. Every entry is an immutable value that is
    a function of its key and of this index and set alone:

    * per index, shared with the other sets' memos on it: ``candidates`` (active nodes
      with capacity, per GPU request), ``policy_checks`` (per ``CompiledPolicy.node_key``),
      ``node_cel`` (a node-only condition's answer, per expression) and ``profiles`` (per
      projection of ``node``);
    * per set, shared across indexes: ``verdicts``, one table per workload condition of
      the set (made with the set's tables), its verdict per fingerprint of what it reads
      (the fingerprints include what the index adds, such as a storage zone's country,
      so they are sound on any index);
    * this pair's own: ``node_checks`` (a node condition that also reads the workload,
      per fingerprint) and ``plans`` (per workload, see ``decisions.Plan``); and the
      shared parts of explanations, so plans hold few objects of their own:
      ``rule_checks`` (per rule and result), ``passed`` (per policy: its workload rules
      passed, and its explanation when every rule passed) and ``unselected`` (per policy
      and why it was not selected).
    """

    __slots__ = (
        "_limit",
        "_lock",
        "candidates",
        "node_cel",
        "node_checks",
        "passed",
        "plans",
        "policy_checks",
        "profiles",
        "rule_checks",
        "unselected",
        "verdicts",
    )

    def __init__(
        self,
        tables: _IndexTables,
        verdicts: dict[CelCondition, dict[Any, Verdict]],
        lock: threading.Lock,
        limit: int,
    ) -> None:
        self.candidates = tables.candidates
        self.policy_checks = tables.policy_checks
        self.node_cel = tables.node_cel
        self.profiles = tables.profiles
        self.verdicts = verdicts
        self.node_checks: dict[tuple[str, str, str, Any], NodeCheck] = {}
        self.plans: dict[tuple[Any, ...], Plan] = {}
        self.rule_checks: dict[tuple[str, str], RuleCheck] = {}
        self.passed: dict[Any, tuple[tuple[RuleCheck, ...], SelectedPolicy]] = {}
        self.unselected: dict[tuple[Any, str, Any], UnselectedPolicy] = {}
        self._lock = lock
        self._limit = limit

    def remember(self, table: dict[_Key, _Value], key: _Key, value: _Value) -> _Value:
        """Store ``value`` under ``key`` in one of this memo's tables, and return it."""
        with self._lock:
            if len(table) >= self._limit:
                table.clear()
            table[key] = value
        return value


class DecisionCache:
    """Everything decisions remember, for the indexes and policy sets its owner decides on.

    Pass the same cache to every decision whose work should be shared; what it keeps is
    bounded: at most ``INDEXES_KEPT`` indexes and ``SETS_KEPT`` policy sets (the oldest
    go first), at most ``limit`` entries per table. Indexes and sets are told apart by
    identity (both compare by identity), and the cache holds them strongly while it
    remembers them, so an id is never reused for another object meanwhile: correct
    whatever indexes and sets a caller mixes, with no trust in content hashes. The
    ``PolicySet`` objects ``CompiledPolicySets`` hands out are the same object for the
    same version, so what a process remembers survives between requests.

    Safe to share between threads, by design:

    * every value stored is immutable and a function of its key (and of the memo's index
      and set), so two threads that work out the same entry store equal values and it
      does not matter whose is kept;
    * reads take no lock: one dictionary look-up is atomic (under the GIL, and locked per
      dictionary in free-threaded builds), so a reader finds a whole entry or none;
    * every write (an entry, a table cleared when full, an index's or a set's tables
      added or dropped) happens under the cache's one lock, so the bounds hold exactly
      and two threads meeting a new index share one set of tables. Work is done outside
      the lock: a thread never waits on another's CEL.
    """

    __slots__ = ("_indexes", "_limit", "_lock", "_verdicts")

    def __init__(self, limit: int = MEMO_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._indexes: dict[NodeIndex, _IndexTables] = {}
        self._verdicts: dict[PolicySet, dict[CelCondition, dict[Any, Verdict]]] = {}

    def memo(self, index: NodeIndex, policy_set: PolicySet) -> Memo:
        """What is remembered for decisions on ``index`` under ``policy_set``."""
        tables = self._indexes.get(index)
        if tables is not None:
            found = tables.memos.get(policy_set)
            if found is not None:
                return found
        return self._add(index, policy_set)

    def _add(self, index: NodeIndex, policy_set: PolicySet) -> Memo:
        """The memo for a pair not seen yet (or no longer remembered), made under the lock."""
        with self._lock:
            tables = self._indexes.get(index)
            if tables is None:
                _make_room(self._indexes, INDEXES_KEPT)
                tables = self._indexes[index] = _IndexTables()
            verdicts = self._verdicts.get(policy_set)
            if verdicts is None:
                _make_room(self._verdicts, SETS_KEPT)
                verdicts = self._verdicts[policy_set] = {
                    condition: {}
                    for policy in policy_set.policies
                    for condition in policy.workload_cel
                }
            found = tables.memos.get(policy_set)
            if found is None:
                _make_room(tables.memos, SETS_KEPT)
                found = tables.memos[policy_set] = Memo(tables, verdicts, self._lock, self._limit)
            return found


def _make_room(table: dict[Any, Any], kept: int) -> None:
    """Drop the oldest entries of ``table`` until one more fits within ``kept``."""
    while len(table) >= kept:
        del table[next(iter(table))]
