"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakeserver import FakeServer


@pytest.fixture(scope="session")
def _fake_server_session() -> Iterator[FakeServer]:
    # One uvicorn per session: stopping one costs ~0.2 s, reset() gives the isolation.
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake_server(_fake_server_session: FakeServer) -> Iterator[FakeServer]:
    """A running fake OpenAI server, fresh for this test (no rules, empty log, defaults)."""
    _fake_server_session.reset()
    yield _fake_server_session
    _fake_server_session.reset()
