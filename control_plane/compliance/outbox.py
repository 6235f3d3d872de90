"""Asking for a compliance evaluation, in the transaction of the change that calls for it.

The policy store, the inventory, provenance imports and the registry call
``request_evaluation`` when they change something a running workload's compliance depends
on. The request is a row (an outbox), committed with the change or not at all, so a
trigger is never lost while the worker is down and never fires for a change that rolled
back.

This lives apart from ``service.py`` because the evaluation imports the policy store and
the scheduler, which call this: keeping the outbox free of them keeps imports one-way.
"""

from collections.abc import Mapping
from typing import Any

from psycopg.pq import TransactionStatus

from control_plane.compliance import repository
from control_plane.compliance.models import ComplianceRequestPublic, EvaluationTrigger
from control_plane.core.db import DbConnection


def request_evaluation(
    conn: DbConnection, reason: EvaluationTrigger, subject: Mapping[str, Any]
) -> ComplianceRequestPublic:
    """Ask for every running workload to be re-evaluated, because of ``reason``.

    ``subject`` (JSON-safe) says what changed: node id and hostname, before and after, the
    policy set version, ... It must run inside the transaction that makes the change, so
    the request commits with it; the compliance task picks it up on its next beat.
    """
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise RuntimeError(
            "request_evaluation must run inside the transaction that makes the change"
        )
    row = repository.insert_request(conn, reason.value, subject)
    return ComplianceRequestPublic.model_validate(row)
