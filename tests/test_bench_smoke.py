"""The benchmark suite still runs: `python -m bench.run --quick` end to end, real subprocess.

No speed is asserted here (figures belong to bench/); only that the suite measures
something and writes the JSON the README's Performance section is built from.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {
    "benchmark",
    "figure",
    "unit",
    "baseline",
    "baseline_label",
    "ratio",
    "target",
    "passed",
    "note",
}
MACHINE_KEYS = {"cpu_model", "cores", "ram_gb", "python", "os"}


def bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench-results")
    proc = bench("--quick", "--only", "cli,overhead", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow  # ~12 s: runs the benchmarks
def test_summary_has_machine_and_rows(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["machine"]) >= MACHINE_KEYS
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["ram_gb"] > 0
    assert set(summary["benchmarks"]) == {"cli", "overhead"}
    assert summary["quick"] is True
    for name in ("cli", "overhead"):
        rows = summary["benchmarks"][name]["rows"]
        assert rows and all(set(r) >= ROW_KEYS for r in rows)
        assert all(math.isfinite(r["figure"]) for r in rows)
    met, missed = summary["targets"]["met"], summary["targets"]["missed"]
    rows = [r for b in summary["benchmarks"].values() for r in b["rows"]]
    judged = [r for r in rows if r["passed"] is not None]
    assert met + missed == len(judged) > 0


@pytest.mark.slow  # ~12 s: runs the benchmarks (module fixture)
def test_per_benchmark_json_and_table(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    cli = json.loads((out / "cli.json").read_text())
    overhead = json.loads((out / "overhead.json").read_text())
    rows = {r["benchmark"]: r for r in cli["rows"]}
    # pliny must cost more to start than a bare interpreter: a benchmark that ran nothing
    # (a wrong command failing fast) would not
    for name in ("pliny --help", "pliny session list"):
        assert rows[name]["figure"] > rows[name]["baseline"] > 0
    variants = overhead["details"]["variants"]
    assert set(variants) == {"raw", "langgraph", "pliny-none", "pliny-phase"}
    assert all(v["per_agent_ms"] > 0 for v in variants.values())
    for column in ("benchmark", "figure", "baseline", "ratio", "target", "result"):
        assert column in stdout
    assert "per agent: pliny, checkpoint none" in stdout


def test_unknown_benchmark_is_one_clear_line(tmp_path: Path) -> None:
    proc = bench("--only", "cli,nope", "--out", str(tmp_path), timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("--only: unknown benchmark nope")
    assert not list(tmp_path.iterdir())  # nothing written
