"""Shared fixtures: a throw-away PostgreSQL database on the local server (skips when none)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_SERVER = os.environ.get("MERGE3_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server at 127.0.0.1:5432, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the `postgres` extra)")
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server reachable at {PG_SERVER}: {exc}".strip())
    name = f"merge3_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


REDIS_SERVER = os.environ.get("MERGE3_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis journal URL with a unique key prefix on the local server; its keys are deleted
    afterwards (skips when no server is reachable)."""
    redis = pytest.importorskip("redis", reason="redis (the `redis` extra)")
    client = redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server reachable at {REDIS_SERVER}: {exc}")
    prefix = f"merge3_test_{uuid.uuid4().hex[:10]}"
    try:
        yield f"{REDIS_SERVER}?prefix={prefix}"
    finally:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
