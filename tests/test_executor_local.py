"""The executor conformance suite, run for the in-process LocalExecutor."""

from __future__ import annotations

import pytest

from tests.executor_conformance import *  # noqa: F403 - the shared suite


@pytest.fixture
def executor_name() -> str:
    return "local"
