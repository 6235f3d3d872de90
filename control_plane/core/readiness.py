"""What ``GET /readyz`` reports: whether the database and Redis answer, each by name.

The API serves every request from PostgreSQL, so it is ready exactly when the database
answers. Redis carries the worker's queue, which the API itself does not use (changes
reach the worker through the outbox table): a Redis that does not answer is reported,
and the API stays ready but ``degraded``, rather than being taken out of service for an
outage that does not touch it.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from enum import StrEnum

import psycopg
import redis
from pydantic import BaseModel

from control_plane.core.db import DbConnection

#: How long each probe waits for its dependency: an orchestrator's probe times out soon.
PROBE_SECONDS = 2.0


class Reachability(StrEnum):
    """Whether one dependency answered its probe."""

    OK = "ok"
    UNREACHABLE = "unreachable"


class ReadinessStatus(StrEnum):
    """The API's readiness: ``unavailable`` (a 503) when the database does not answer."""

    READY = "ready"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


class Readiness(BaseModel):
    """The readiness report, with each dependency by name."""

    status: ReadinessStatus
    database: Reachability
    redis: Reachability


def _database(connection: Callable[[], AbstractContextManager[DbConnection]]) -> Reachability:
    try:
        with connection() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:  # PoolTimeout is one too
        return Reachability.UNREACHABLE
    return Reachability.OK


def _redis(client: redis.Redis) -> Reachability:
    try:
        client.ping()
    except redis.RedisError:
        return Reachability.UNREACHABLE
    return Reachability.OK


def probe(
    connection: Callable[[], AbstractContextManager[DbConnection]], client: redis.Redis
) -> Readiness:
    """Probe the database (a pooled ``connection``) and Redis (``client``)."""
    database, queue = _database(connection), _redis(client)
    if database is Reachability.UNREACHABLE:
        status = ReadinessStatus.UNAVAILABLE
    elif queue is Reachability.UNREACHABLE:
        status = ReadinessStatus.DEGRADED
    else:
        status = ReadinessStatus.READY
    return Readiness(status=status, database=database, redis=queue)


def redis_client(redis_url: str) -> redis.Redis:
    """A Redis client for the probe; it connects on first use, and gives up after a while."""
    return redis.Redis.from_url(
        redis_url, socket_connect_timeout=PROBE_SECONDS, socket_timeout=PROBE_SECONDS
    )
