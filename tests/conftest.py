"""Shared fixtures: a fresh migrated database per test, an in-process receiver, the CLI's
environment. Plain helpers live in tests/factories.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from callstatus.core.db import Database
from callstatus.core.settings import get_settings
from tests.factories import app_client


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "test.duckdb")
    yield database
    database.close()


@pytest.fixture
def receiver_client(tmp_path: Path) -> Iterator[TestClient]:
    """The whole ASGI app (receiver and dashboard) in-process, lifespan run, dev mode."""
    with app_client(tmp_path) as client:
        yield client


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """The CLI reads settings from the environment (and .env in the working directory): run it
    in tmp_path with the settings tests set unset."""
    monkeypatch.chdir(tmp_path)
    for name in ("PLIVO_AUTH_TOKEN", "PUBLIC_BASE_URL", "DIAL_NUMBERS", "CALLSTATUS_DB"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Put back `__main__` after each test: AppTest leaves its script module there, and a
    spawned worker (the parallel seed) would then re-run that script and die at start."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
