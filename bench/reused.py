"""The suite's view of the benchmark scripts written with their features.

bench_checkpoints.py, bench_audit.py and bench_embedded.py stay runnable on their own;
here their measuring functions are called with the suite's repetition counts and the
results turned into rows (figure, same-run baseline, target).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.benchkit import RESULTS, Result, Row

CHECKPOINT_TARGET_MS = 50.0
AUDIT_TARGETS = {"every_event": 1_000, "group": 20_000}


def checkpoints(quick: bool) -> Result:
    from bench import bench_checkpoints as bc

    reps = 5 if quick else 21
    specs = [(100, 1), (1000, 1), (10000, 1), (1000, 10), (1000, 100)]
    with tempfile.TemporaryDirectory(prefix="pliny-bench-ckpt-") as tmp:
        rows = bc.measure(Path(tmp), specs, reps)
    result = Result("checkpoints", details={"reps": reps, "rows": rows})
    for row in rows:
        target = (row["files"], row["changed"]) == (10000, 1)
        result.rows.append(
            Row(
                f"checkpoint commit, {row['files']:,} files, {row['changed']} changed",
                row["commit_ms"],
                "ms",
                row["git_add_commit_ms"],
                "git add+commit",
                f"<= {CHECKPOINT_TARGET_MS:g} ms" if target else "",
                row["commit_ms"] <= CHECKPOINT_TARGET_MS if target else None,
            )
        )
    return result


def _events_per_s(fn: Callable[[Path, int], float], n: int, repeat: int, where: Path) -> float:
    secs = []
    for i in range(repeat):
        path = where / f"audit-{i}.jsonl"
        secs.append(fn(path, n))
        path.unlink()
    return n / statistics.median(secs)


def audit(quick: bool) -> Result:
    from bench import bench_audit as ba

    repeat = 1 if quick else 3
    counts = {"baseline": 10_000, "none": 10_000, "group": 10_000, "every_event": 1_000}
    if not quick:
        counts = dict(ba.COUNTS)
    # On the repository's disk like bench_audit.py (a tmpfs would make fsync free).
    where = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=RESULTS))
    try:
        base = _events_per_s(ba.run_baseline, counts["baseline"], repeat, where)
        rates = {
            p: _events_per_s(
                lambda path, n, p=p: ba.run_policy(path, n, p), counts[p], repeat, where
            )
            for p in ("none", "group", "every_event")
        }
        added = {
            p: ba.emit_overhead_us(where / f"emit-{p}.jsonl", 1000 if quick else 3000, p)
            for p in ("none", "group", "every_event")
        }
    finally:
        shutil.rmtree(where, ignore_errors=True)
    result = Result(
        "audit",
        details={
            "counts": counts,
            "repeat": repeat,
            "baseline_per_s": base,
            "events_per_s": rates,
            "added_us_per_llm_call": added,
        },
    )
    for policy, rate in rates.items():
        target = AUDIT_TARGETS.get(policy)
        result.rows.append(
            Row(
                f"audit events/s, fsync={policy}",
                rate,
                "events/s",
                base,
                "json.dumps+write",
                f">= {target:,}" if target else "",
                rate >= target if target else None,
            )
        )
    for policy, us in added.items():
        result.rows.append(Row(f"audit cost per LLM call, fsync={policy}", us, "µs"))
    return result


def embedded_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken native build is "not available" too
        return False
    return True


def embedded(quick: bool) -> Result:
    from bench import bench_embedded as be
    from pliny.config.settings import LocalModel
    from pliny.llm.embedded import default_threads

    args = argparse.Namespace(
        runs=2 if quick else 3,
        max_tokens=128,
        n_ctx=LocalModel().n_ctx,
        threads=default_threads(),
        parallel=3,
    )
    load = os.getloadavg()[0]
    got = be.run(args)
    server, direct = got["server"], got["direct"]
    result = Result("embedded", details={"settings": vars(args), "loadavg_before": load, **got})
    result.rows += [
        Row(
            "embedded tokens/s (server + openai SDK)",
            server["generation"]["tokens_per_s"],
            "tokens/s",
            direct["generation"]["tokens_per_s"],
            "in-process llama.cpp",
        ),
        Row(
            "embedded agent call latency",
            server["agent"]["latency_median_s"],
            "s",
            direct["agent"]["latency_median_s"],
            "in-process llama.cpp",
        ),
        Row(
            "embedded server start-up",
            server["startup_s"]["median"],
            "s",
            direct["load_s"],
            "in-process load",
        ),
    ]
    return result
