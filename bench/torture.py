"""Crash torture: SIGKILL `pliny` at random moments, resume, prove nothing is lost or re-paid.

    python bench/torture.py --kills 20 [--seed 1] [--latency-ms 100] [--no-faults]

Run it from the repo root with the dev venv active (a plain script: it puts the repo root on
``sys.path`` itself, for ``tests.fakeserver``). The fake OpenAI server runs in a thread of
this process, with latency and deterministic faults (a 503, a 429 and a dropped connection,
each the first time its request is seen). One uninterrupted R-I-S-E run is the reference.
Then rounds: a fresh workspace, the same session id, ``pliny execute`` killed with SIGKILL
at a random moment, ``pliny session resume`` killed again..., until the round's kill budget
is spent and the session completes. Half the kills come at a random time within the
expected run time, half shortly after the server received a request (so they land mid-call).

After every round it checks (bench/crashkit.py ``verify``): files byte-identical to the
reference, the same phase checkpoints (same git trees), zero re-sent calls whose answer was
in the journal at the kill, server requests == reference + calls lost in flight at kills,
``pliny audit verify`` ok, ``git fsck --strict`` clean, and after each kill no process of
the killed run left alive. Prints the counts; writes ``bench/results/torture.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.crashkit import (  # noqa: E402
    SESSION,
    Ledger,
    Reference,
    create_session,
    events,
    execute_args,
    init_workspace,
    kill,
    listed_status,
    reference_run,
    script,
    spawn,
    state,
    survivors,
    verify,
)
from tests.fakeserver import FakeServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "torture.json"


@dataclass
class Counts:
    kills: int = 0
    resumes: int = 0
    rounds: int = 0
    requests: int = 0
    reference_requests: int = 0
    lost_in_flight: int = 0
    resent: int = 0
    kill_moments: dict[str, int] = field(default_factory=dict)  # last audit event at each kill
    orphans: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _killed_in_time(
    proc: subprocess.Popen[bytes], server: FakeServer, ref: Reference, rng: random.Random
) -> bool:
    """Wait for the chosen moment; True if the process was still running then (and killed)."""
    deadline = time.monotonic() + ref.wall * 3
    if rng.random() < 0.5:  # a random time within the expected run time
        deadline = time.monotonic() + rng.uniform(0.1, ref.wall)
        target = None
    else:  # shortly after the next request or two reach the server: mid-call
        target = len(server.requests) + rng.randint(1, 2)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if target is not None and len(server.requests) >= target:
            time.sleep(rng.uniform(0, server.latency_ms / 1000 * 1.5))
            break
        time.sleep(0.002)
    if proc.poll() is not None:
        return False
    kill(proc)
    return True


def _last_event(ws: Path) -> str:
    found = events(ws)
    return found[-1]["type"] if found else "(none yet)"


def _round(
    root: Path,
    server: FakeServer,
    ref: Reference,
    rng: random.Random,
    budget: int,
    faults: bool,
    counts: Counts,
) -> None:
    """One session from scratch: kill it up to ``budget`` times, resume until completed."""
    ws = root / f"round{counts.rounds}"
    ws.mkdir()
    init_workspace(ws)
    server.reset()
    script(server, faults)
    create_session(ws, server)
    ledger = Ledger(server, ws)
    where = f"round {counts.rounds}"
    while True:
        never_ran = not state(ws).get("framework")  # killed before its first state save
        counts.resumes += 0 if never_ran else 1
        proc = spawn(ws, server, *(execute_args() if never_ran else ["session", "resume", SESSION]))
        if ledger.kills < budget and _killed_in_time(proc, server, ref, rng):
            counts.orphans += survivors(proc.pid)
            ledger.close(killed=True)
            moment = _last_event(ws)
            counts.kill_moments[moment] = counts.kill_moments.get(moment, 0) + 1
            status = listed_status(ws, server)
            if status == "completed":  # killed on its way out
                break
            # `created`: killed before its run began (no event yet) — true, and it runs again.
            if status != "crashed" and not (
                status == "created" and never_ran and moment == "(none yet)"
            ):
                counts.problems.append(f"{where}: status after a kill is {status}")
            continue
        if (code := proc.wait(timeout=300)) != 0:
            counts.problems.append(f"{where}: run exited {code} (see {ws}.log)")
        ledger.close(killed=False)
        break
    counts.problems += [f"{where}: {p}" for p in verify(ws, server, ref, ledger)]
    counts.kills += ledger.kills
    counts.rounds += 1
    counts.requests += len(server.requests)
    counts.reference_requests += ref.requests
    counts.lost_in_flight += ledger.lost
    counts.resent += len(ledger.resent)


def torture(
    root: Path,
    kills: int,
    seed: int = 1,
    latency_ms: float = 100,
    faults: bool = True,
    per_round: int = 4,
) -> Counts:
    """Kill ``kills`` times in all, at most ``per_round`` per session; returns the counts."""
    rng = random.Random(seed)
    counts = Counts()
    with FakeServer(latency_ms=latency_ms) as server:
        ref_ws = root / "reference"
        ref_ws.mkdir()
        ref = reference_run(init_workspace(ref_ws), server, faults=faults)
        while counts.kills < kills:
            _round(root, server, ref, rng, min(per_round, kills - counts.kills), faults, counts)
    return counts


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python bench/torture.py", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs in all (default 20)")
    ap.add_argument("--per-round", type=int, default=4, help="kills per session (default 4)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--no-faults", action="store_true", help="no scripted 503/429/drop")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="pliny-torture-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    counts = torture(
        root, args.kills, args.seed, args.latency_ms, not args.no_faults, args.per_round
    )
    seconds = round(time.monotonic() - started, 1)
    failed = bool(counts.problems or counts.orphans)
    if not args.keep and not failed:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"kills {counts.kills} · resumes {counts.resumes} · rounds {counts.rounds} · "
        f"requests {counts.requests} = reference {counts.reference_requests} + "
        f"{counts.lost_in_flight} lost in flight · re-sent {counts.resent} · "
        f"orphans {len(counts.orphans)} · {seconds}s"
    )
    print("kill moments (last audit event):", json.dumps(counts.kill_moments, sort_keys=True))
    for problem in counts.problems + counts.orphans:
        print("PROBLEM:", problem)
    if failed:
        print(f"workspaces kept in {root}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "seconds": seconds,
                "machine": machine(),
                "ok": not failed,
                **asdict(counts),
            },
            indent=2,
        )
        + "\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
