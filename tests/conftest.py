"""Shared fixtures: a fresh migrated database per test, an in-process receiver."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from streamlit.runtime import Runtime

from callstatus.core.db import Database
from callstatus.core.settings import Settings


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "test.duckdb")
    yield database
    database.close()


def make_settings(tmp_path: Path, **values: Any) -> Settings:
    """Settings built from explicit values only (the environment and .env are ignored)."""
    base: dict[str, Any] = {"CALLSTATUS_DB": tmp_path / "callstatus.duckdb"}
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture
def receiver_client(tmp_path: Path) -> Iterator[TestClient]:
    """The whole ASGI app (receiver and dashboard) in-process, lifespan run, dev mode."""
    with app_client(tmp_path) as client:
        yield client


@contextmanager
def app_client(tmp_path: Path, **values: Any) -> Iterator[TestClient]:
    """The whole app in-process with the given settings, lifespan run (the writer started)."""
    from callstatus.app.asgi import build_app

    app = build_app(make_settings(tmp_path, **values))
    try:
        with TestClient(app, base_url="http://testserver") as client:
            yield client
    finally:
        # Streamlit keeps its stopped Runtime as a process-wide singleton and refuses a second
        # one; AppTest resets it the same way.
        Runtime._instance = None


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Put back `__main__` after each test: AppTest leaves its script module there, and a
    spawned worker (the parallel seed) would then re-run that script and die at start."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
