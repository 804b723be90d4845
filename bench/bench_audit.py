"""Audit log throughput per fsync policy, and the added cost per LLM call.

    python bench/bench_audit.py [--dir DIR] [--repeat 3]

Writes realistic llm_call events to a fresh file in a temporary directory
(default: the system's; pass ``--dir`` to measure another disk, and make sure
it is not a tmpfs, where fsync costs nothing).
The baseline is the cheapest possible logger: ``f.write(json.dumps(d)+"\\n")``
on a buffered file, no fsync, no chain, no redaction. Results go to
``bench/results/audit.json``.
Targets: >= 1,000 events/s with fsync=every_event, >= 20,000 events/s group.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pliny.audit.writer import AuditLog
from pliny.events import EventBus, LLMCall

RESULTS = Path(__file__).parent / "results"
COUNTS = {"baseline": 30_000, "none": 30_000, "group": 30_000, "every_event": 3_000}
TARGETS = {"every_event": 1_000, "group": 20_000}


def llm_call(i: int) -> LLMCall:
    """What the engine emits once per model call (same shape as the real thing)."""
    return LLMCall(
        session="20250806-101500-bench",
        phase="research",
        agent=f"agent-{i % 4}",
        model="gpt-4o-mini-2024-07-18",
        endpoint="api.openai.com",
        prompt_tokens=1500 + i % 97,
        completion_tokens=320,
        cached_tokens=1024,
        latency_ms=843.21,
        cost_usd=0.0004236,
        pricing_hash="320edc12e1a8",
        attempt=1,
        request_id=f"chatcmpl-{i:012d}",
        request_hash="9f2c4b1e7a0d3c5b8e6f1a2d4c7b9e0f",
        finish_reason="stop",
    )


def run_baseline(path: Path, n: int) -> float:
    dicts = [llm_call(i).model_dump(mode="json") for i in range(n)]
    start = time.perf_counter()
    with open(path, "a") as f:
        for d in dicts:
            f.write(json.dumps(d) + "\n")
    return time.perf_counter() - start


def run_policy(path: Path, n: int, policy: str) -> float:
    events = [llm_call(i) for i in range(n)]
    log = AuditLog(path, fsync=policy, group_commit_ms=50)  # type: ignore[arg-type]
    start = time.perf_counter()
    for event in events:
        log(event)
    elapsed = time.perf_counter() - start  # acknowledged; close's final fsync is not per event
    log.close()
    return elapsed


def emit_overhead_us(path: Path, n: int, policy: str) -> float:
    """Extra time bus.emit(llm_call) takes with the audit log subscribed, per call."""
    events = [llm_call(i) for i in range(n)]
    bare = EventBus(session="s")
    start = time.perf_counter()
    for event in events:
        bare.emit(event)
    without = time.perf_counter() - start
    bus = EventBus(session="s")
    log = AuditLog(path, fsync=policy)  # type: ignore[arg-type]
    bus.subscribe(log)
    events = [llm_call(i) for i in range(n)]
    start = time.perf_counter()
    for event in events:
        bus.emit(event)
    with_log = time.perf_counter() - start
    log.close()
    return (with_log - without) / n * 1e6


def measure(workdir: Path, name: str, fn: Callable[[Path, int], float], repeat: int) -> dict:
    n = COUNTS[name]
    runs = []
    for r in range(repeat):
        path = workdir / f"{name}-{r}.jsonl"
        runs.append(fn(path, n))
        path.unlink()
    secs = statistics.median(runs)
    return {
        "events": n,
        "seconds": round(secs, 4),
        "events_per_s": round(n / secs),
        "us_per_event": round(secs / n * 1e6, 2),
        "runs": len(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=args.dir))
    try:
        rows = {"baseline": measure(workdir, "baseline", run_baseline, args.repeat)}
        for policy in ("none", "group", "every_event"):
            fn = lambda p, n, policy=policy: run_policy(p, n, policy)  # noqa: E731
            rows[policy] = measure(workdir, policy, fn, args.repeat)
        overhead = {
            policy: round(emit_overhead_us(workdir / f"emit-{policy}.jsonl", 3000, policy), 2)
            for policy in ("none", "group", "every_event")
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(rows, overhead, workdir.parent)


def report(rows: dict, overhead: dict, where: Path) -> None:
    base = rows["baseline"]["events_per_s"]
    print(f"{'writer':<14}{'events/s':>12}{'µs/event':>11}{'vs baseline':>13}  target")
    for name, row in rows.items():
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else (f">= {target:,} {'ok' if row['events_per_s'] >= target else 'MISSED'}")
        )
        ratio = row["events_per_s"] / base
        print(
            f"{name:<14}{row['events_per_s']:>12,}{row['us_per_event']:>11}{ratio:>12.2f}x  "
            f"{verdict}"
        )
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print("added cost per LLM call (bus.emit with the audit log subscribed):")
    for policy, us in overhead.items():
        print(f"  {policy:<12} {us:>9.1f} µs")
    result = {
        "benchmark": "audit",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "dir": str(where.resolve()),
        "targets": TARGETS,
        "writers": rows,
        "added_us_per_llm_call": overhead,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'audit.json'}")


if __name__ == "__main__":
    main()
