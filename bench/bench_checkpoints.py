"""Checkpoint commit speed: Pliny's private-index commit vs plain `git add && git commit`.

    python bench/bench_checkpoints.py [--quick]

For workspaces of 100, 1,000 and 10,000 files (committed by the "user"
first), and for 1, 10 and 100 changed files at 1,000 files, it measures the
median time of :meth:`CheckpointStore.commit` (the agents' writes are
recorded first and not timed), the same plus recording the writes, and in
the same run two baselines: ``git add <files> && git commit`` of the same
change through subprocesses, and the private-index design (``GIT_INDEX_FILE``
+ update-index + write-tree + commit-tree + update-ref) Pliny replaced.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pliny.checkpoints import CheckpointStore  # noqa: E402

USER = ["-c", "user.name=Bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
RESULTS = Path(__file__).resolve().parent / "results" / "checkpoints.json"


def git(ws: Path, *args: str) -> None:
    subprocess.run(["git", *USER, *args], cwd=ws, check=True, capture_output=True)


def make_workspace(root: Path, n_files: int) -> Path:
    """n_files small text files, 100 per directory, committed by the user."""
    ws = root / f"ws-{n_files}"
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


def bench_pliny(ws: Path, paths: list[str], reps: int) -> dict[str, float]:
    t0 = time.perf_counter()
    store = CheckpointStore(ws, "bench", ws / ".pliny" / "sessions" / "bench")
    opened_new = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = CheckpointStore(ws, "bench", ws / ".pliny" / "sessions" / "bench")
    reopened = time.perf_counter() - t0
    commit_times, total_times = [], []
    for rep in range(reps + 1):  # the first round warms caches and is dropped
        t0 = time.perf_counter()
        for p in paths:
            store.write_file(p, f"pliny round {rep}\n".encode(), "agent")
        t1 = time.perf_counter()
        store.commit(f"c{rep}", f"round {rep}", {"Pliny-Phase": "bench"})
        t2 = time.perf_counter()
        if rep:
            commit_times.append(t2 - t1)
            total_times.append(t2 - t0)
    return {
        "commit_ms": statistics.median(commit_times) * 1000,
        "record_and_commit_ms": statistics.median(total_times) * 1000,
        "open_new_session_ms": opened_new * 1000,
        "reopen_session_ms": reopened * 1000,
    }


def bench_git(ws: Path, paths: list[str], reps: int) -> float:
    times = []
    for rep in range(reps + 1):
        for p in paths:
            (ws / p).write_text(f"git round {rep}\n")
        t0 = time.perf_counter()
        git(ws, "add", "--", *paths)
        git(ws, "commit", "-q", "-m", f"round {rep}")
        if rep:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def bench_private_index(ws: Path, paths: list[str], reps: int) -> float:
    """The design measured first: a private GIT_INDEX_FILE, update-index + write-tree."""
    index = ws / ".git" / "bench-private-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index), "GIT_AUTHOR_NAME": "B",
           "GIT_AUTHOR_EMAIL": "b@localhost", "GIT_COMMITTER_NAME": "B",
           "GIT_COMMITTER_EMAIL": "b@localhost"}

    def run(*args: str, data: bytes = b"") -> str:
        return subprocess.run(["git", *args], cwd=ws, env=env, input=data, check=True,
                              capture_output=True).stdout.decode().strip()

    run("read-tree", "HEAD")
    parent = run("rev-parse", "HEAD")
    times = []
    for rep in range(reps + 1):
        blobs = [run("hash-object", "-w", "--stdin", data=f"index {rep} {p}".encode())
                 for p in paths]
        info = "".join(f"100644 {b}\t{p}\n" for b, p in zip(blobs, paths, strict=True))
        t0 = time.perf_counter()
        shutil.copyfile(index, index.with_suffix(".next"))
        env["GIT_INDEX_FILE"] = str(index.with_suffix(".next"))
        run("update-index", "--index-info", data=info.encode())
        tree = run("write-tree")
        commit = run("commit-tree", tree, "-p", parent, "-m", f"round {rep}")
        run("update-ref", "refs/bench/index", commit)
        os.replace(index.with_suffix(".next"), index)
        env["GIT_INDEX_FILE"] = str(index)
        parent = commit
        if rep:
            times.append(time.perf_counter() - t0)
    index.unlink()
    run("update-ref", "-d", "refs/bench/index")
    return statistics.median(times) * 1000


def run_case(root: Path, n_files: int, n_changed: int, reps: int) -> dict[str, float | int]:
    ws = make_workspace(root, n_files) if not (root / f"ws-{n_files}").exists() else (
        root / f"ws-{n_files}"
    )
    paths = changed_paths(n_files, n_changed)
    row: dict[str, float | int] = {"files": n_files, "changed": n_changed, "reps": reps}
    row.update(bench_pliny(ws, paths, reps))
    row["private_index_ms"] = bench_private_index(ws, paths, reps)
    row["git_add_commit_ms"] = bench_git(ws, paths, reps)
    row["ratio_vs_git"] = row["commit_ms"] / row["git_add_commit_ms"]
    for ref in subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/pliny/"],
                              cwd=ws, capture_output=True, text=True).stdout.split():
        git(ws, "update-ref", "-d", ref)  # the next case starts a fresh session
    shutil.rmtree(ws / ".pliny")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 5 if args.quick else 21
    cases = [(100, 1), (1000, 1), (10000, 1), (1000, 10), (1000, 100)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pliny-bench-") as tmp:
        for n_files, n_changed in cases:
            rows.append(run_case(Path(tmp), n_files, n_changed, reps))
            r = rows[-1]
            if len(rows) == 1:
                print(f"{'files':>6} {'changed':>7} {'commit':>8} {'rec+commit':>10} "
                      f"{'git add+commit':>14} {'ratio':>6} {'private idx':>11} "
                      f"{'open':>6} {'reopen':>6}   (ms, medians of {reps})")
            print(f"{r['files']:>6} {r['changed']:>7} {r['commit_ms']:>8.1f} "
                  f"{r['record_and_commit_ms']:>10.1f} {r['git_add_commit_ms']:>14.1f} "
                  f"{r['ratio_vs_git']:>6.2f} {r['private_index_ms']:>11.1f} "
                  f"{r['open_new_session_ms']:>6.0f} {r['reopen_session_ms']:>6.0f}", flush=True)
    flat = [r["commit_ms"] for r in rows if r["changed"] == 1]
    verdict = {
        "target_ms": 50,
        "max_commit_ms_1_changed": max(flat),
        "within_target": max(flat) <= 50,
        "flatness_10k_over_100": flat[-1] / flat[0],
    }
    print(f"\nmax commit time with 1 changed file: {max(flat):.1f} ms (target <= 50 ms); "
          f"10,000 vs 100 files: x{verdict['flatness_10k_over_100']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "checkpoints",
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "git": subprocess.run(["git", "--version"], capture_output=True,
                                          text=True).stdout.strip()},
        "rows": rows,
        "verdict": verdict,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0 if verdict["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
