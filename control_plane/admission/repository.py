"""SQL access for the webhooks' pod decisions. Functions take the caller's connection."""

from typing import Any, LiteralString
from uuid import UUID

from psycopg.types.json import Jsonb

from control_plane.admission.models import PodDecisionPublic
from control_plane.core.db import DbConnection, fetch_one_as, fetch_returning_as, load_queries


def _q(name: str) -> LiteralString:
    return load_queries("control_plane.admission")[name]


def insert_pod_decision(conn: DbConnection, values: dict[str, Any]) -> PodDecisionPublic:
    """Store one decision (``values``: the columns by the query's parameter names)."""
    params = {
        **values,
        "request": Jsonb(values["request"]),
        "reasons": Jsonb(values["reasons"]),
        "explanation": Jsonb(values["explanation"]),
    }
    return fetch_returning_as(conn, PodDecisionPublic, _q("insert_pod_decision"), params)


def get_pod_decision(conn: DbConnection, decision_id: UUID) -> PodDecisionPublic | None:
    """One stored decision, or None."""
    return fetch_one_as(conn, PodDecisionPublic, _q("get_pod_decision"), {"id": decision_id})
