"""Shared pieces of the benchmark suite: result rows, timing, workspaces, frameworks.

Every benchmark module exposes ``run(quick: bool) -> Result``; ``bench/run.py`` prints
the rows and writes the JSON. A row is one figure next to the baseline measured in the
same run, their ratio, and the target it is judged against.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests.fakeserver lives at the repo root
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
GIT_USER = [
    "-c",
    "user.name=Bench",
    "-c",
    "user.email=bench@localhost",
    "-c",
    "commit.gpgsign=false",
]
API_KEY = "sk-bench"


@dataclass
class Row:
    """One line of the table. ``passed`` is None for informational rows (no target)."""

    benchmark: str
    figure: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""  # shown next to pass/MISS, e.g. the margin

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.figure / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``fn()`` per repetition, after ``warmup`` dropped runs."""
    out = []
    for i in range(reps + warmup):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


# -- machine -------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "git": git,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


# -- workspaces and frameworks -------------------------------------------------------------
def git(ws: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_USER, *args], cwd=ws, check=True, capture_output=True)


def make_workspace(root: Path, name: str) -> Path:
    """A user's git repository with one committed file (what a real run starts from)."""
    ws = root / name
    ws.mkdir(parents=True)
    (ws / "README.md").write_text("# bench workspace\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "user's work")
    return ws


def agent_role(index: int) -> str:
    return f"You are bench agent {index:04d}. Answer briefly."


def write_framework(path: Path, phases: list[tuple[str, int, bool]]) -> Path:
    """A framework YAML: ``(phase name, agents, parallel)`` per phase, plain text agents."""
    import yaml

    doc: dict[str, Any] = {"name": "bench", "phases": []}
    index = 0
    for name, count, parallel in phases:
        agents = []
        for _ in range(count):
            agents.append(
                {
                    "name": f"a{index:04d}",
                    "role": agent_role(index),
                    "prompt": f"{{{{task}}}} (part {index})",
                    "max_tokens": 64,
                }
            )
            index += 1
        doc["phases"].append({"name": name, "parallel": parallel, "agents": agents})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def bench_env(base_url: str) -> dict[str, str]:
    """Environment for a `pliny` subprocess: the fake server, no colour, no stray config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PLINY_"))}
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY=API_KEY, NO_COLOR="1", COLUMNS="200")
    return env


def pliny_argv(*args: str) -> list[str]:
    exe = shutil.which("pliny") or str(Path(sys.executable).with_name("pliny"))
    return [exe, *args]


def _tcp_nodelay(server: Any) -> None:
    """Give the fake server a listening socket whose connections get TCP_NODELAY.

    asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP; a socket made
    with ``socket.socket(AF_INET, SOCK_STREAM)`` has proto 0, so every keep-alive response
    (headers, then body: two writes) waits ~40 ms for the client's delayed ACK (Nagle).
    Real servers do not do that, so the benchmarks rebind the port properly. A no-op once
    tests/fakeserver.py creates its socket with IPPROTO_TCP.
    """
    old = server._sock
    if old.proto == socket.IPPROTO_TCP:
        return
    new = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    address = old.getsockname()
    old.close()
    new.bind(address)
    server._sock = new


@contextmanager
def fake_server(latency_ms: float = 0.0) -> Iterator[Any]:
    from tests.fakeserver import FakeServer

    server = FakeServer(latency_ms=latency_ms)
    _tcp_nodelay(server)
    with server:
        yield server
