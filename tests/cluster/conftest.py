"""The clustered tests' PostgreSQL: a real server per test module (tests/postgres.py), and its
URL reset to an empty, migrated database for each test that asks for `url`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callstatus.cluster import pg
from tests.postgres import PostgresServer, postgres_server, reset


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as started:
        yield started


@pytest.fixture
def url(server: PostgresServer) -> str:
    reset(server.url)
    pg.migrate(server.url)
    return server.url
