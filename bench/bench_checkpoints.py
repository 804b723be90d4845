"""Checkpoint commit speed: Pliny's private-index commit vs plain `git add && git commit`.

    python bench/bench_checkpoints.py [--quick]

For workspaces of 100, 1,000 and 10,000 files (committed by the "user"
first), and for 1, 10 and 100 changed files at 1,000 files, it measures the
median time of :meth:`CheckpointStore.commit` (the agents' writes are
recorded first and not timed), the same plus recording the writes, and, in
the same run and interleaved round by round with it, two baselines:
``git add <files> && git commit`` of the same change through subprocesses,
and the private-index design (``GIT_INDEX_FILE`` + update-index + write-tree
+ commit-tree + update-ref) that Pliny measured first and replaced.
Target: commit <= 50 ms, flat in workspace size. Prints a table and writes
JSON to bench/results/checkpoints.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pliny.checkpoints.store import CheckpointStore  # noqa: E402

USER = ["-c", "user.name=Bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
RESULTS = Path(__file__).resolve().parent / "results" / "checkpoints.json"


def git(ws: Path, *args: str) -> None:
    subprocess.run(["git", *USER, *args], cwd=ws, check=True, capture_output=True)


def make_workspace(ws: Path, n_files: int) -> Path:
    """n_files small text files, 100 per directory, committed by the user."""
    for i in range(n_files):
        path = ws / f"dir{i // 100:03d}" / f"file{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * 5)
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "user's workspace")
    return ws


def changed_paths(n_files: int, n_changed: int) -> list[str]:
    step = max(1, n_files // n_changed)
    return [f"dir{i // 100:03d}/file{i:05d}.txt" for i in range(0, n_files, step)][:n_changed]


@dataclass
class Case:
    """One workspace size / change size; its timings from the three methods."""

    files: int
    changed: int
    ws: Path
    paths: list[str]
    store: CheckpointStore | None = None
    index_env: dict[str, str] = field(default_factory=dict)
    parent: str = ""
    times: dict[str, list[float]] = field(default_factory=dict)
    opened: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds * 1000)


def open_store(case: Case) -> None:
    state = case.ws / ".pliny" / "sessions" / "bench"
    t0 = time.perf_counter()
    CheckpointStore(case.ws, "bench", state).close()
    t1 = time.perf_counter()
    case.store = CheckpointStore(case.ws, "bench", state)
    case.opened = {
        "open_new_session_ms": (t1 - t0) * 1000,
        "reopen_session_ms": (time.perf_counter() - t1) * 1000,
    }


def pliny_round(case: Case, rep: int, keep: bool) -> None:
    assert case.store is not None
    t0 = time.perf_counter()
    for p in case.paths:
        case.store.write_file(p, f"pliny round {rep}\n".encode(), "agent")
    t1 = time.perf_counter()
    case.store.commit(f"c{rep}", f"round {rep}", {"Pliny-Phase": "bench"})
    t2 = time.perf_counter()
    if keep:
        case.add("commit_ms", t2 - t1)
        case.add("record_and_commit_ms", t2 - t0)


def git_round(case: Case, rep: int, keep: bool) -> None:
    for p in case.paths:
        (case.ws / p).write_text(f"git round {rep}\n")
    t0 = time.perf_counter()
    git(case.ws, "add", "--", *case.paths)
    git(case.ws, "commit", "-q", "-m", f"round {rep}")
    if keep:
        case.add("git_add_commit_ms", time.perf_counter() - t0)


def index_round(case: Case, rep: int, keep: bool) -> None:
    """The design measured first: a private GIT_INDEX_FILE, update-index + write-tree."""
    env, index = case.index_env, case.ws / ".git" / "bench-private-index"

    def run(*args: str, data: bytes = b"", index_file: Path = index) -> str:
        return (
            subprocess.run(
                ["git", *args],
                cwd=case.ws,
                input=data,
                check=True,
                env={**env, "GIT_INDEX_FILE": str(index_file)},
                capture_output=True,
            )
            .stdout.decode()
            .strip()
        )

    if not env:
        env.update(
            os.environ,
            GIT_AUTHOR_NAME="B",
            GIT_AUTHOR_EMAIL="b@localhost",
            GIT_COMMITTER_NAME="B",
            GIT_COMMITTER_EMAIL="b@localhost",
        )
        run("read-tree", "HEAD")
        case.parent = run("rev-parse", "HEAD")
    blobs = [
        run("hash-object", "-w", "--stdin", data=f"index {rep} {p}".encode()) for p in case.paths
    ]
    info = "".join(f"100644 {b}\t{p}\n" for b, p in zip(blobs, case.paths, strict=True))
    nxt = index.with_suffix(".next")
    t0 = time.perf_counter()
    shutil.copyfile(index, nxt)  # crash safety: the real index changes after the ref
    run("update-index", "--index-info", data=info.encode(), index_file=nxt)
    tree = run("write-tree", index_file=nxt)
    case.parent = run("commit-tree", tree, "-p", case.parent, "-m", f"round {rep}")
    run("update-ref", "refs/bench/index", case.parent)
    os.replace(nxt, index)
    if keep:
        case.add("private_index_ms", time.perf_counter() - t0)


def row_of(case: Case, reps: int) -> dict[str, float | int]:
    row: dict[str, float | int] = {"files": case.files, "changed": case.changed, "reps": reps}
    row.update({k: statistics.median(v) for k, v in case.times.items()})
    row.update(case.opened)
    row["ratio_vs_git"] = row["commit_ms"] / row["git_add_commit_ms"]
    return row


def measure(root: Path, specs: list[tuple[int, int]], reps: int) -> list[dict[str, float | int]]:
    """Round-robin over cases and methods, so load from elsewhere hits all alike."""
    cases = [
        Case(n, k, make_workspace(root / f"case{i}", n), changed_paths(n, k))
        for i, (n, k) in enumerate(specs)
    ]
    for case in cases:
        open_store(case)
    for rep in range(reps + 1):  # round 0 warms caches and is dropped
        for case in cases:
            for method in (pliny_round, git_round, index_round):
                method(case, rep, keep=rep > 0)
    for case in cases:
        assert case.store is not None
        case.store.close()
    return [row_of(case, reps) for case in cases]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 5 if args.quick else 21
    specs = [(100, 1), (1000, 1), (10000, 1), (1000, 10), (1000, 100)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pliny-bench-") as tmp:
        rows = measure(Path(tmp), specs, reps)
    print(
        f"{'files':>6} {'changed':>7} {'commit':>8} {'rec+commit':>10} {'git add+commit':>14} "
        f"{'ratio':>6} {'private idx':>11} {'open':>6} {'reopen':>6}   (ms, medians of {reps})"
    )
    for r in rows:
        print(
            f"{r['files']:>6} {r['changed']:>7} {r['commit_ms']:>8.1f} "
            f"{r['record_and_commit_ms']:>10.1f} {r['git_add_commit_ms']:>14.1f} "
            f"{r['ratio_vs_git']:>6.2f} {r['private_index_ms']:>11.1f} "
            f"{r['open_new_session_ms']:>6.0f} {r['reopen_session_ms']:>6.0f}"
        )
    flat = [r["commit_ms"] for r in rows if r["changed"] == 1]
    verdict = {
        "target_ms": 50,
        "max_commit_ms_1_changed": max(flat),
        "within_target": max(flat) <= 50,
        "flatness_10k_over_100": flat[-1] / flat[0],
    }
    print(
        f"\nmax commit time with 1 changed file: {max(flat):.1f} ms (target <= 50 ms); "
        f"10,000 vs 100 files: x{verdict['flatness_10k_over_100']:.2f}; "
        f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "checkpoints",
                "quick": args.quick,
                "machine": {
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(),
                    "git": subprocess.run(
                        ["git", "--version"], capture_output=True, text=True
                    ).stdout.strip(),
                },
                "rows": rows,
                "verdict": verdict,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    return 0 if verdict["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
