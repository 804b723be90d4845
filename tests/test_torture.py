"""The crash torture (bench/torture.py) with a small count, for CI: random SIGKILLs of
`pliny` during R-I-S-E against the fake server with latency and faults, resumed each time.

Run: ``pytest -m slow tests/test_torture.py`` (about 40 s). The seed is random and printed
in any failure; ``PLINY_TORTURE_SEED=N`` replays one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench.torture import torture

KILLS = 3


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_random_kills_lose_nothing_and_resend_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("PLINY_TORTURE_SEED") or random.randrange(1_000_000))
    counts = torture(tmp_path, kills=KILLS, seed=seed, latency_ms=100, faults=True, per_round=3)
    where = f"seed {seed}, kill moments {counts.kill_moments}"
    assert counts.kills == KILLS, where
    assert counts.problems == [], where
    assert counts.orphans == [], where
    assert counts.resent == 0, where
    assert counts.requests == counts.reference_requests + counts.lost_in_flight, where
    assert counts.rounds >= 1 and counts.resumes >= 1, where
