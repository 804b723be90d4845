"""Pliny's benchmark suite: one command, one table, JSON results.

    python -m bench.run [--quick] [--only NAME,...] [--out DIR]

Run from the repository root with the dev virtualenv active. Every figure sits next
to a baseline measured in the same run (raw openai client, hand-built LangGraph graph,
plain ``git``, ``python -c pass``...), as medians over repetitions, against the tests'
in-process OpenAI-compatible fake server on 127.0.0.1. Writes ``<out>/<name>.json`` per
benchmark and ``<out>/summary.json`` (all rows + the machine). ``--quick`` uses fewer
repetitions (a smoke run, not figures to quote). Exit code: 0 when every benchmark ran
(a missed target is a result, not a failure), 1 when one raised, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.benchkit import RESULTS, Result, Row, machine_info

BENCHMARKS: dict[str, tuple[str, str, str]] = {  # name -> (module, function, what)
    "cli": ("bench.bench_cli", "run", "CLI start-up"),
    "overhead": ("bench.bench_overhead", "run", "overhead per agent vs raw client, LangGraph"),
    "parallel": ("bench.bench_parallel", "run", "parallel efficiency at 200 ms latency"),
    "resume": ("bench.bench_resume", "run", "crash -> resume -> first new request"),
    "memory": ("bench.bench_memory", "run", "peak RSS with 64 parallel agents"),
    "checkpoints": ("bench.reused", "checkpoints", "git checkpoint commit time"),
    "audit": ("bench.reused", "audit", "audit log events/s per fsync policy"),
    "embedded": ("bench.reused", "embedded", "embedded llama.cpp model speed"),
    "web": ("bench.bench_web", "run", "pliny serve: first data render in Chromium"),
    "temporal": ("bench.bench_temporal", "run", "agents on Temporal workers vs local"),
    "ratelimit": ("bench.bench_ratelimit", "run", "wasted requests under a 429 storm"),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.exit(
            2, f"--only: unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})\n"
        )
    args.names = names
    return args


def skip_reason(name: str, quick: bool) -> str | None:
    if name == "web":
        from bench.bench_web import available

        return available()

    if name == "temporal":
        from tests.temporal_dev import temporal_binary

        return None if temporal_binary() else "skipped: no `temporal` CLI (temporal extra)"
    if name != "embedded":
        return None
    if quick:
        return "skipped with --quick (minutes of CPU-bound generation)"
    from bench.reused import embedded_available

    return None if embedded_available() else "skipped: llama_cpp is not importable"


def run_one(name: str, quick: bool) -> tuple[Result | None, dict[str, Any]]:
    """Run one benchmark; an exception is recorded, not raised (the others still run)."""
    module, function, _ = BENCHMARKS[name]
    meta: dict[str, Any] = {"loadavg_before": round(os.getloadavg()[0], 2)}
    started = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
    try:
        result = getattr(importlib.import_module(module), function)(quick)
    except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
        result = None
        meta["error"] = f"{type(exc).__name__}: {exc}"
        meta["traceback"] = traceback.format_exc()
        print(meta["traceback"], file=sys.stderr)
    meta["seconds"] = round(time.perf_counter() - started, 2)
    meta["loadavg_after"] = round(os.getloadavg()[0], 2)
    return result, meta


def document(
    name: str, result: Result | None, meta: dict[str, Any], common: dict[str, Any]
) -> dict[str, Any]:
    return {
        "benchmark": name,
        **common,
        **meta,
        "rows": [r.as_dict() for r in result.rows] if result else [],
        "details": result.details if result else {},
        "notes": result.notes if result else [],
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = (
        f"{value:,.0f}"
        if abs(value) >= 1000
        else f"{value:.3g}"
        if abs(value) < 10
        else (f"{value:.1f}")
    )
    return f"{text} {unit}".strip()


def print_table(
    rows: list[Row],
    skipped: dict[str, str],
    errors: dict[str, str],
    machine: dict[str, Any],
    quick: bool,
) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"Pliny benchmarks{' (--quick)' if quick else ''}: {machine['cpu_model']}, "
        f"{machine['cores']} cores, {machine['ram_gb']} GB, Python {machine['python']}"
    )
    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("benchmark", "left"),
        ("figure", "right"),
        ("baseline", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("result", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        verdict = f"{ {True: 'pass', False: 'MISS', None: ''}[row.passed] } {row.note}".strip()
        baseline = (
            f"{_fmt(row.baseline, row.unit)} ({row.baseline_label})"
            if row.baseline is not None
            else ""
        )
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        table.add_row(
            row.benchmark, _fmt(row.figure, row.unit), baseline, ratio, row.target, verdict
        )
    for name, why in skipped.items():
        table.add_row(name, "", "", "", "", why)
    for name, err in errors.items():
        table.add_row(name, "", "", "", "", f"ERROR {err[:80]}")
    Console(width=max(160, Console().width)).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    machine = machine_info()
    common = {
        "quick": args.quick,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    skipped, errors, docs = {}, {}, {}
    for name in args.names:
        if (why := skip_reason(name, args.quick)) is not None:
            skipped[name] = why
            continue
        result, meta = run_one(name, args.quick)
        docs[name] = document(name, result, meta, common)
        (args.out / f"{name}.json").write_text(json.dumps(docs[name], indent=2, default=str) + "\n")
        if result is None:
            errors[name] = meta["error"]
        else:
            rows += result.rows
    summary = {
        **common,
        "command": " ".join(["python -m bench.run", *(argv or sys.argv[1:])]),
        "benchmarks": {
            n: {k: d[k] for k in ("seconds", "rows", "notes")}
            | ({"error": d["error"]} if "error" in d else {})
            for n, d in docs.items()
        },
        "skipped": skipped,
        "targets": {
            "met": sum(r.passed is True for r in rows),
            "missed": sum(r.passed is False for r in rows),
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_table(rows, skipped, errors, machine, args.quick)
    print(f"results: {args.out}/summary.json and one <name>.json per benchmark")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
