"""The compliance report: what was in force, what was decided, found and done.

Policy sets in force, decisions grouped, findings by policy, evaluations, violations and
the datasets and models processed, each a ``repository`` read of the period; what each
number is: docs/reports.md.
"""

from collections import defaultdict
from datetime import UTC, datetime

from control_plane.core.db import DbConnection
from control_plane.reports import repository
from control_plane.reports.builder import Progress, headline_table, over_period, percent
from control_plane.reports.models import (
    CheckpointRef,
    Column,
    Period,
    Report,
    ReportKind,
    ReportTable,
)


def build(
    conn: DbConnection,
    period: Period,
    checkpoint: CheckpointRef | None,
    progress: Progress,
) -> Report:
    """The compliance report of ``period``: what was in force, decided, found and done."""
    progress(5, "policy sets in force")
    policy_sets = repository.policy_sets_in_force(conn, period)
    progress(15, "admissions by outcome, tenant and policy set")
    groups = repository.decisions_grouped(conn, period)
    by_outcome: dict[tuple[str, str], int] = defaultdict(int)
    by_tenant: dict[tuple[str, str], int] = defaultdict(int)
    for g in groups:
        by_outcome[(g.source, g.outcome)] += g.decisions
        by_tenant[(g.tenant, g.outcome)] += g.decisions
    total = sum(g.decisions for g in groups)
    progress(30, "admissions by policy")
    findings = repository.decisions_by_policy(conn, period)
    progress(45, "violations")
    evaluations = repository.evaluations(conn, period)
    violations = repository.violations(conn, period)
    progress(55, "datasets and models")
    assets = repository.assets_processed(conn, period)
    headline = [
        over_period("decisions", "Admission decisions in the period", total, "count"),
        *(
            over_period(
                f"decisions_{outcome}",
                f"Share of decisions {outcome.replace('_', ' ')}",
                percent(sum(n for (_, o), n in by_outcome.items() if o == outcome), total),
            )
            for outcome in ("admitted", "admitted_with_warnings", "denied")
        ),
        over_period(
            "violating_workloads",
            "Violating workloads found by re-evaluation (the most in one evaluation)",
            max((e.violating_workloads for e in evaluations), default=0),
            "count",
        ),
        over_period(
            "revoked_workloads",
            "Workloads revoked by re-evaluation",
            sum(e.revoked_workloads for e in evaluations),
            "count",
        ),
    ]
    progress(65, "denials and warnings")
    tables = [
        headline_table(headline),
        ReportTable(
            "policy_sets",
            "Policy sets in force",
            "Every policy set active at some moment of the period: its content hash, who"
            " activated it, when, with what note, and when it was replaced.",
            [
                Column("version", "Version", "int"),
                Column("content_hash", "Content hash"),
                Column("activated_by", "Activated by"),
                Column("activated_at", "Activated at", "timestamp"),
                Column("note", "Note"),
                Column("restores_version", "Restores", "int"),
                Column("replaced_at", "Replaced at", "timestamp"),
            ],
            [
                (
                    p.version,
                    p.content_hash,
                    p.activated_by,
                    p.activated_at,
                    p.note,
                    p.restores_version,
                    p.replaced_at,
                )
                for p in policy_sets
            ],
        ),
        ReportTable(
            "admissions_by_outcome",
            "Admissions by outcome",
            "Decisions of the period by where they were asked (API workload or Kubernetes"
            " pod webhook) and outcome.",
            [
                Column("source", "Source"),
                Column("outcome", "Outcome"),
                Column("decisions", "Decisions", "int"),
            ],
            [(s, o, n) for (s, o), n in sorted(by_outcome.items())],
        ),
        ReportTable(
            "admissions_by_tenant",
            "Admissions by tenant",
            "Decisions of the period by tenant and outcome (both sources).",
            [
                Column("tenant", "Tenant"),
                Column("outcome", "Outcome"),
                Column("decisions", "Decisions", "int"),
            ],
            [(t, o, n) for (t, o), n in sorted(by_tenant.items())],
        ),
        ReportTable(
            "admissions_by_policy_set",
            "Admissions by policy set",
            "Decisions of the period by source, outcome, tenant and the policy set version"
            " they were decided under.",
            [
                Column("source", "Source"),
                Column("outcome", "Outcome"),
                Column("tenant", "Tenant"),
                Column("policy_set_version", "Policy set", "int"),
                Column("decisions", "Decisions", "int"),
            ],
            [(g.source, g.outcome, g.tenant, g.policy_set_version, g.decisions) for g in groups],
        ),
        ReportTable(
            "admissions_by_policy",
            "Findings by policy",
            "How many decisions carry a finding of each policy, by the finding's action"
            " ('(baseline)': the built-in checks and quotas).",
            [
                Column("policy", "Policy"),
                Column("action", "Action"),
                Column("decisions", "Decisions", "int"),
            ],
            [(f.policy, f.action, f.decisions) for f in findings],
        ),
        ReportTable(
            "denials_and_warnings",
            "Denials and warnings",
            "Every decision of the period that denied, or admitted with warnings, with its"
            " reasons as policy/rule [action]: message.",
            [
                Column("created_at", "When", "timestamp"),
                Column("source", "Source"),
                Column("id", "Workload or pod"),
                Column("tenant", "Tenant"),
                Column("outcome", "Outcome"),
                Column("policy_set_version", "Policy set", "int"),
                Column("reasons", "Reasons"),
            ],
            repository.denials_and_warnings(conn, period),
        ),
        ReportTable(
            "evaluations",
            "Re-evaluations",
            "Every compliance evaluation of the period with its exact counts.",
            [
                Column("id", "Evaluation"),
                Column("finished_at", "Finished", "timestamp"),
                Column("policy_set_version", "Policy set", "int"),
                Column("workloads_evaluated", "Evaluated", "int"),
                Column("violating_workloads", "Violating", "int"),
                Column("warned_workloads", "Warned", "int"),
                Column("revoked_workloads", "Revoked", "int"),
                Column("notifications", "Notified", "int"),
            ],
            [
                (
                    str(e.id),
                    e.finished_at,
                    e.policy_set_version,
                    e.workloads_evaluated,
                    e.violating_workloads,
                    e.warned_workloads,
                    e.revoked_workloads,
                    e.notifications,
                )
                for e in evaluations
            ],
        ),
        ReportTable(
            "violations",
            "Violations",
            "Each workload a re-evaluation found violating a deny policy (from each"
            " evaluation's sample), the action taken and how it ended.",
            [
                Column("found_at", "Found", "timestamp"),
                Column("workload_id", "Workload"),
                Column("tenant", "Tenant"),
                Column("policy", "Policy"),
                Column("action", "Action"),
                Column("delivery_status", "Webhook"),
                Column("workload_status", "Ended as"),
                Column("ended_at", "Ended at", "timestamp"),
                Column("revocation_reason", "Revocation"),
            ],
            [
                (
                    v.found_at,
                    v.workload_id,
                    v.tenant,
                    v.policy,
                    v.action,
                    v.delivery_status,
                    v.workload_status,
                    v.ended_at,
                    v.revocation_reason,
                )
                for v in violations
            ],
        ),
        ReportTable(
            "assets",
            "Datasets and models processed",
            "Each dataset and model that admitted workloads of the period used: its owner,"
            " the tenant that used it, the zone it was processed in, and the grants (ids)"
            " in force then that let a tenant other than the owner use it.",
            [
                Column("kind", "Kind"),
                Column("name", "Name"),
                Column("owner", "Owner"),
                Column("tenant", "Used by"),
                Column("zone", "Processed in"),
                Column("workloads", "Workloads", "int"),
                Column("grants", "Grants"),
            ],
            [(a.kind, a.name, a.owner, a.tenant, a.zone, a.workloads, a.grants) for a in assets],
        ),
    ]
    return Report(ReportKind.COMPLIANCE, period, checkpoint, datetime.now(UTC), headline, tables)
