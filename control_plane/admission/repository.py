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


#: The columns a reinvoked call's decision must share with the stored one.
_REINVOCATION_MATCH = (
    "outcome",
    "namespace",
    "kind",
    "name",
    "username",
    "eligible_nodes",
    "fleet_generation",
    "policy_set_version",
    "policy_set_hash",
)


def find_reinvoked_decision(
    conn: DbConnection, decision_id: UUID, values: dict[str, Any], window_seconds: int
) -> PodDecisionPublic | None:
    """The mutating webhook's admit ``decision_id`` if it matches ``values``, made recently.

    ``values``: the columns of the decision just taken, as ``insert_pod_decision`` takes
    them; the match is on the object, the user, the declaration and the decision itself.
    """
    params = {
        **{column: values[column] for column in _REINVOCATION_MATCH},
        "id": decision_id,
        "request": Jsonb(values["request"]),
        "window_seconds": window_seconds,
    }
    return fetch_one_as(conn, PodDecisionPublic, _q("find_reinvoked_decision"), params)
