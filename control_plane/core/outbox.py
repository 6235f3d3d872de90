"""Saying "something policies read has changed", in the transaction of the change.

The inventory, the registry, the policy store and provenance imports call
``request_evaluation`` when they change something a running workload's compliance depends
on. The request is a row (an outbox), committed with the change or not at all, so it is
never lost while the worker is down and never raised for a change that rolled back.
Compliance consumes the rows: it claims the pending ones, evaluates, and marks them handled.

This is ground-floor plumbing on purpose: the features that signal a change import it, not
compliance, which imports them. So the imports run one way only.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from control_plane.core.db import DbConnection, fetch_returning_as, load_queries
from control_plane.domain.compliance import EvaluationTrigger


class EvaluationRequest(BaseModel):
    """A request for a compliance evaluation, as stored; pending until an evaluation runs."""

    model_config = ConfigDict(frozen=True)

    id: int
    reason: EvaluationTrigger
    subject: dict[str, Any]
    requested_at: datetime


def request_evaluation(
    conn: DbConnection, reason: EvaluationTrigger, subject: Mapping[str, Any]
) -> EvaluationRequest:
    """Ask for every running workload to be re-evaluated, because of ``reason``.

    ``subject`` (JSON-safe) says what changed: node id and hostname, before and after, the
    policy set version, ... It must run inside the transaction that makes the change, so
    the request commits with it; the compliance task picks it up on its next beat.
    """
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise RuntimeError(
            "request_evaluation must run inside the transaction that makes the change"
        )
    query = load_queries("control_plane.core", "outbox.sql")["insert_request"]
    return fetch_returning_as(
        conn,
        EvaluationRequest,
        query,
        {"reason": reason.value, "subject": Jsonb(dict(subject))},
    )
