"""A bad or dead endpoint, as a user meets it: a real `pliny execute` subprocess.

A malformed base URL is bad configuration: exit 2 at once, one located line,
nothing created, nothing sent. An unreachable or always-failing endpoint fails
the session (exit 1, resumable) within the network retry budget the config
states, and the message says what failed and for how long it tried.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from pliny.config.settings import load_settings
from tests.fakeserver import FakeServer
from tests.support import cli

TRIED = re.compile(r"tried (\d+) times? over (\d+(?:\.\d+)?) s \(network retry budget (\d+) s")


def pliny(ws: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run the CLI; (exit code, stderr, wall seconds)."""
    started = time.monotonic()
    proc = cli.pliny(ws, *args, env=env, timeout=180)
    return proc.returncode, proc.stderr, time.monotonic() - started


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def network_budget() -> float:
    budget = load_settings().error_handling.retry_strategies["network"].max_elapsed
    assert budget is not None
    return budget


# -- malformed base URLs: exit 2 at once, nothing created, nothing sent ------------------


@pytest.mark.parametrize(
    "url",
    [
        "htp://x",
        "localhost:8000",
        "http://",
        "http://:8000/v1",
        "127.0.0.1:{port}/v1",
        "http://127.0.0.1:99999/v1",
    ],
)
def test_malformed_base_url_in_the_config_is_exit_2_at_once(
    tmp_path: Path, fake_server: FakeServer, url: str
) -> None:
    url = url.format(port=fake_server.base_url.rsplit(":", 1)[1].split("/")[0])
    (tmp_path / "pliny.yaml").write_text(f"llm:\n  model: fake\n  base_url: '{url}'\n")
    env = {"OPENAI_API_KEY": "sk-test"}
    code, stderr, wall = pliny(tmp_path, "execute", "-f", "rise", "-t", "hi", env=env)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"{tmp_path / 'pliny.yaml'}:3:" in lines[0] and "llm.base_url" in lines[0], lines[0]
    assert url in lines[0]
    assert wall < 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pliny.yaml"]  # no session, no log
    assert fake_server.requests == []


def test_malformed_OPENAI_BASE_URL_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    env = {"OPENAI_BASE_URL": "localhost:8000/v1", "OPENAI_API_KEY": "sk-test"}
    code, stderr, _ = pliny(tmp_path, "execute", "-f", "rise", "-t", "hi", env=env)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "OPENAI_BASE_URL" in lines[0] and "localhost:8000" in lines[0]
    assert list(tmp_path.iterdir()) == []


# -- unreachable / always failing: exit 1 within the budget, the message says so ----------


def check_failed_within_budget(ws: Path, code: int, stderr: str, wall: float) -> re.Match[str]:
    budget = network_budget()
    assert code == 1, stderr
    assert wall < budget * 2 + 5, f"took {wall:.1f} s with a {budget:g} s network budget"
    tried = TRIED.search(" ".join(stderr.split()))  # rich wraps at 80 columns
    assert tried, stderr
    assert int(tried.group(1)) >= 1 and float(tried.group(2)) <= budget + 1
    assert int(tried.group(3)) == budget
    assert "resume with: pliny session resume" in stderr
    session = (ws / ".pliny" / "current").read_text().strip()
    state = json.loads((ws / ".pliny" / "sessions" / session / "state.json").read_text())
    assert state["status"] == "failed"
    return tried


def test_connection_refused_fails_within_the_network_budget(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    env = {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-test"}
    code, stderr, wall = pliny(tmp_path, "execute", "-f", "rise", "-t", "hi", env=env)
    check_failed_within_budget(tmp_path, code, stderr, wall)
    flat = " ".join(stderr.split())
    assert f"endpoint {url} unreachable" in flat and "connection refused" in flat.lower()


@pytest.mark.slow  # ~3 s: real CLI runs
def test_an_always_500_server_fails_within_the_network_budget(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.fail(500)
    env = {"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-test"}
    code, stderr, wall = pliny(tmp_path, "execute", "-f", "rise", "-t", "hi", env=env)
    check_failed_within_budget(tmp_path, code, stderr, wall)
    flat = " ".join(stderr.split())
    assert f"endpoint {fake_server.base_url} failing" in flat and "HTTP 500" in flat
    # the circuit breaker opens for the endpoint: parallel agents do not multiply the tries
    threshold = load_settings().error_handling.circuit_breaker.failure_threshold
    assert len(fake_server.requests) <= threshold + 3


@pytest.mark.slow  # ~4 s: real CLI runs
def test_the_budget_in_the_config_bounds_the_run_without_a_breaker(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """Breaker out of the way (threshold 1000): the configured 2 s budget alone ends it."""
    (tmp_path / "pliny.yaml").write_text(
        "error_handling:\n  retry_strategies:\n    network:\n      max_retries: 100\n"
        "      initial_delay: 300\n      backoff: constant\n      max_elapsed: 2s\n"
        "  circuit_breaker:\n    failure_threshold: 1000\n"
    )
    fake_server.fail(503)
    env = {"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-test"}
    code, stderr, wall = pliny(tmp_path, "execute", "-f", "rise", "-t", "hi", env=env)
    assert code == 1, stderr
    assert wall < 2 * 2 + 5, f"took {wall:.1f} s with a 2 s budget"
    flat = " ".join(stderr.split())
    tried = TRIED.search(flat)
    assert tried and tried.group(3) == "2" and float(tried.group(2)) <= 2.5, flat
    assert len(fake_server.requests) <= 3 * 15  # 3 agents, >= 0.15 s apart for 2 s
