"""Checks that PostgreSQL and Redis answer, with one clear sentence when one does not.

``make up`` and ``make test`` run this first, so a fresh machine with a stopped service
tells the user what to start instead of printing a traceback.
"""

import psycopg
import redis

from control_plane.core.db import postgres_unreachable_message

REDIS_START_HINT = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def check_postgres(database_url: str) -> str | None:
    """None when PostgreSQL accepts a connection, else the sentence to show."""
    maintenance = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    try:
        with psycopg.connect(maintenance, connect_timeout=3):
            return None
    except psycopg.OperationalError:
        return postgres_unreachable_message(database_url)


def check_redis(redis_url: str) -> str | None:
    """None when Redis answers PING, else the sentence to show."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
        return None
    except redis.RedisError:
        where = redis_url.split("@")[-1]
        return (
            f"Redis is not reachable at {where}; start it with `{REDIS_START_HINT}` "
            "or point SOVEREIGN_REDIS_URL at a running server."
        )
    finally:
        client.close()


def problems(database_url: str, redis_url: str) -> list[str]:
    """Every unreachable service, one sentence each."""
    found = [check_postgres(database_url), check_redis(redis_url)]
    return [p for p in found if p is not None]
