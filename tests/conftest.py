"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeserver import FakeServer


@pytest.fixture(scope="session")
def _fake_server_session() -> Iterator[FakeServer]:
    # One uvicorn per session: stopping one costs ~0.2 s, reset() gives the isolation.
    with FakeServer() as server:
        yield server


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    """A fake OpenAI server of the module's own, for module-scoped state built on it
    (a completed session several tests copy); tests reset and script it themselves."""
    with FakeServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def completed(server: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where one R-I-S-E session ran to the end (phase checkpoints); tests
    copy it rather than change it."""
    from bench.crashkit import completed_run

    ws = tmp_path_factory.mktemp("completed") / "ws"
    ws.mkdir()
    return completed_run(ws, server, "phase")


@pytest.fixture
def fake_server(_fake_server_session: FakeServer) -> Iterator[FakeServer]:
    """A running fake OpenAI server, fresh for this test (no rules, empty log, defaults)."""
    _fake_server_session.reset()
    yield _fake_server_session
    _fake_server_session.reset()
