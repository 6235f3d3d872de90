"""The typed vocabulary recorded on every decision.

As Gatekeeper records enforcement actions and enforcement points on every result.
"""

from enum import StrEnum


class EnforcementAction(StrEnum):
    """What a policy's violation does.

    ``deny`` refuses the workload or the node; ``warn`` admits it and says why it should
    not have been; ``dryrun`` changes nothing and records what the policy would have done,
    so a new policy can be watched before it is enforced.
    """

    DENY = "deny"
    WARN = "warn"
    DRYRUN = "dryrun"


class ViolationAction(StrEnum):
    """What continuous compliance does to a running workload that violates a deny policy.

    ``record`` (the default) only records it in the evaluation; ``notify`` also sends a
    signed webhook; ``revoke`` also ends the workload's lease and frees its GPUs. Each
    does what the ones before it do. Only deny policies make violations, so a ``warn`` or
    ``dryrun`` policy's action never runs, whatever it says.
    """

    RECORD = "record"
    NOTIFY = "notify"
    REVOKE = "revoke"

    @property
    def rank(self) -> int:
        """How far the action goes: record 0, notify 1, revoke 2."""
        return _VIOLATION_RANK[self]


_VIOLATION_RANK = {ViolationAction.RECORD: 0, ViolationAction.NOTIFY: 1, ViolationAction.REVOKE: 2}


class EnforcementPoint(StrEnum):
    """Which caller asked for a decision; recorded on it so evidence says where it came from."""

    API = "api"
    WEBHOOK = "webhook"
    SWEEP = "sweep"
    WHATIF = "whatif"
    CLI = "cli"


class DecisionOutcome(StrEnum):
    """The verdict on a workload (or on a running workload's node)."""

    ADMITTED = "admitted"
    DENIED = "denied"
    ADMITTED_WITH_WARNINGS = "admitted_with_warnings"


class RuleResult(StrEnum):
    """What one rule of a selected policy found, as a decision's explanation records it.

    ``passed``: the rule holds (a node rule: it left the nodes the decision kept, see
    docs/policy.md); ``failed``: a deny policy's rule does not hold, so it denied the
    workload or, with the other deny rules, left no node; ``warned``: a warn or dryrun
    policy's rule does not hold, which is reported and changes nothing; ``not_checked``:
    the rule was not evaluated (a warn or dryrun node rule on a denied workload, or a node
    rule when the baseline left no node to check it on).
    """

    PASSED = "passed"
    FAILED = "failed"
    WARNED = "warned"
    NOT_CHECKED = "not_checked"
