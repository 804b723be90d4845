"""Crash-test kit: a user's workspace, a deterministic fake model, `pliny` as a real
subprocess, SIGKILL, and the invariants a crashed-then-resumed run must meet.

Used by bench/torture.py and tests/test_crash_resume.py, test_rollback.py, test_torture.py.
Importing it puts the repo root on ``sys.path`` (for ``tests.fakeserver``).

Request accounting (see :class:`Ledger`): the journal (``journal.sqlite``) is read after
each kill; a request the next process sends must not hash to a recorded one (a re-sent
call), and the requests lost at a kill (sent, never answered into the journal) are counted,
so that in the end ``server requests == reference requests + lost``. Scripted faults (a 503,
a 429, a dropped connection) hit the first time a request body is seen, in the reference
run as in the crashed ones, so they do not disturb the count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakeserver import FakeServer  # noqa: E402

TASK = "Add a /health endpoint to the app and document it"
SESSION = "torture"
SKIP = (".git", ".pliny", "audit-logs")  # never part of the compared workspace
GIT_USER = ["-c", "user.name=Test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
USER_FILES = {
    "README.md": "# Demo app\n\nA tiny HTTP app. `GET /` returns hello.\n",
    "src/app.py": "def hello() -> str:\n    return 'hello'\n\nROUTES = {'/': hello}\n",
    "docs/api.md": "# API\n\n- `GET /`: hello\n",
}
HEALTH = "def health() -> dict:\n    return {'status': 'ok'}\n"


# -- workspace ---------------------------------------------------------------------------
def git(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *GIT_USER, *args], cwd=ws, check=check, capture_output=True, text=True
    )


def init_workspace(ws: Path, files: dict[str, str] | None = None) -> Path:
    """A user's git repository with a few committed files (what the agents work on)."""
    for rel, text in (USER_FILES if files is None else files).items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "user's work")
    return ws


def outputs(ws: Path) -> dict[str, bytes]:
    """Every file of the workspace except .git, .pliny and the audit logs."""
    found = {}
    for path in sorted(ws.rglob("*")):
        rel = path.relative_to(ws)
        if rel.parts[0] not in SKIP and path.is_file():
            found[rel.as_posix()] = path.read_bytes()
    return found


def diff_outputs(got: dict[str, bytes], want: dict[str, bytes]) -> list[str]:
    problems = [f"missing {p}" for p in sorted(set(want) - set(got))]
    problems += [f"extra {p}" for p in sorted(set(got) - set(want))]
    problems += [f"differs {p}" for p in sorted(set(got) & set(want)) if got[p] != want[p]]
    return problems


# -- the fake model ---------------------------------------------------------------------
def body_hash(body: Any) -> str:
    """pliny.llm.journal.request_hash of a request body as the server received it."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _first_turn(body: dict[str, Any]) -> bool:
    return not any(m.get("role") == "tool" for m in body["messages"])


def _first_time() -> Callable[[dict[str, Any]], bool]:
    """True the first time a given request body is seen (a fault the retry gets past)."""
    seen: set[str] = set()

    def pred(body: dict[str, Any]) -> bool:
        key = body_hash(body)
        if key in seen:
            return False
        seen.add(key)
        return True

    return pred


def script(server: FakeServer, faults: bool = False) -> None:
    """Deterministic replies: tool turns with fixed ids, so every run sends the same bodies."""
    if faults:
        server.fail(503, system="requirements analyst", when=_first_time())
        server.fail(429, retry_after=0.2, system="lead analyst", when=_first_time())
        server.fail("drop", system="solution designer", when=_first_time())
    server.script(
        system="code investigator",
        when=_first_turn,
        tool_calls=[
            {"id": "call_code_1", "name": "list_files", "arguments": {"path": "src"}},
            {"id": "call_code_2", "name": "read_file", "arguments": {"path": "src/app.py"}},
        ],
    )
    server.script(
        system="documentation researcher",
        when=_first_turn,
        tool_calls=[
            {"id": "call_docs_1", "name": "read_file", "arguments": {"path": "README.md"}},
        ],
    )
    server.script(
        system="careful implementer",
        when=_first_turn,
        tool_calls=[
            {
                "id": "call_exec_1",
                "name": "write_file",
                "arguments": {"path": "src/health.py", "content": HEALTH},
            },
        ],
    )


AGENTS = {  # a substring of each R-I-S-E agent's role -> its name
    "code investigator": "research-code",
    "documentation researcher": "research-docs",
    "requirements analyst": "research-task",
    "lead analyst": "findings",
    "solution designer": "planner",
    "careful implementer": "executor",
}


def scripted_fault(rec: Any) -> bool:
    """A request a fault rule took (delivered or not): the reference run has it too."""
    return rec.rule is not None and (rec.rule.status is not None or rec.rule.fault is not None)


def agent_of(body: dict[str, Any]) -> str:
    """Which R-I-S-E agent sent a request (by its system prompt)."""
    system = body["messages"][0].get("content", "")
    for needle, agent in AGENTS.items():
        if needle in system:
            return agent
    return "?"


# -- running pliny -------------------------------------------------------------------------
def pliny_argv(*args: str) -> list[str]:
    exe = shutil.which("pliny") or str(Path(sys.executable).with_name("pliny"))
    return [exe, *args]


def env_for(server: FakeServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PLINY_"))}
    env.update(
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="sk-test",
        NO_COLOR="1",
        COLUMNS="200",
        **extra,
    )
    return env


def execute_args(session: str = SESSION, checkpoint: str = "agent", *more: str) -> list[str]:
    return [
        "execute",
        "-f",
        "rise",
        "-t",
        TASK,
        "--session",
        session,
        "--checkpoint",
        checkpoint,
        *more,
    ]


def run(
    ws: Path,
    server: FakeServer,
    *args: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pliny_argv(*args),
        cwd=ws,
        env=env or env_for(server),
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def spawn(ws: Path, server: FakeServer, *args: str) -> subprocess.Popen[bytes]:
    """pliny in its own process session, so whatever it leaves behind can be found."""
    log = ws.parent / f"{ws.name}.log"
    with log.open("ab") as out:
        return subprocess.Popen(
            pliny_argv(*args),
            cwd=ws,
            env=env_for(server),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def create_session(ws: Path, server: FakeServer, session: str = SESSION) -> None:
    proc = run(ws, server, "session", "start", "torture run", "--id", session)
    assert proc.returncode == 0, proc.stderr


def kill(proc: subprocess.Popen[bytes], group: bool = False) -> None:
    """SIGKILL: no handler, no cleanup, no flush; the process (or its group) just ends."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL) if group else proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def survivors(sid: int, grace: float = 5.0) -> list[str]:
    """Processes still alive in the killed run's session after ``grace`` seconds."""
    import psutil

    deadline = time.monotonic() + grace
    while True:
        left = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if os.getsid(p.pid) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])[:120]}")
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def wait_until(
    pred: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 60.0,
    interval: float = 0.003,
) -> bool:
    """Poll ``pred``; False on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return pred()
        time.sleep(interval)
    return False


# -- reading what a run left -------------------------------------------------------------
def events(ws: Path, session: str = SESSION) -> list[dict[str, Any]]:
    """The audit log's events; a torn last line (killed mid-write) is skipped."""
    path = ws / "audit-logs" / f"{session}.jsonl"
    found = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def journal_hashes(ws: Path, session: str = SESSION) -> set[str]:
    db = ws / ".pliny" / "sessions" / session / "journal.sqlite"
    if not db.exists():
        return set()
    con = sqlite3.connect(db)
    try:
        return {row[0] for row in con.execute("SELECT request_hash FROM responses")}
    except sqlite3.OperationalError:  # killed before the table was created
        return set()
    finally:
        con.close()


def journal_ids(ws: Path, session: str = SESSION) -> list[str]:
    """The completion ids of the journaled answers (each one a paid call)."""
    db = ws / ".pliny" / "sessions" / session / "journal.sqlite"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT response FROM responses").fetchall()
        return [json.loads(row[0]).get("id") for row in rows]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def unpaid_or_twice(ws: Path, session: str = SESSION) -> list[str]:
    """Journaled answers whose paid llm_call is missing from the log, or there twice."""
    paid = Counter(
        e.get("request_id")
        for e in events(ws, session)
        if e["type"] == "llm_call" and not e["replayed"] and not e.get("rejected")
    )
    problems = [
        f"journaled answer {rid} has no paid llm_call"
        for rid in journal_ids(ws, session)
        if not paid[rid]
    ]
    return problems + [f"llm_call {rid} paid {n} times" for rid, n in paid.items() if n > 1]


def state(ws: Path, session: str = SESSION) -> dict[str, Any]:
    path = ws / ".pliny" / "sessions" / session / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def listed_status(ws: Path, server: FakeServer, session: str = SESSION) -> str | None:
    proc = run(ws, server, "session", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return next((s["status"] for s in json.loads(proc.stdout) if s["id"] == session), None)


# -- request accounting ------------------------------------------------------------------------
@dataclass
class Ledger:
    """Server-side accounting across kills: re-sent recorded calls and calls lost in flight."""

    server: FakeServer
    ws: Path
    session: str = SESSION
    start: int = 0  # server.requests index where the current process's requests begin
    recorded: set[str] = field(default_factory=set)  # journal at the last kill
    kills: int = 0
    lost: int = 0  # sent, never answered into the journal (in flight at a kill)
    resent: list[str] = field(default_factory=list)

    def close(self, killed: bool) -> None:
        """Account the requests of the process that just ended (call after it is dead)."""
        wait_until(lambda: self.server.in_flight == 0, timeout=10)
        reqs = self.server.requests
        segment = reqs[self.start :]
        self.resent += [
            f"{r.id} {agent_of(r.body)}" for r in segment if body_hash(r.body) in self.recorded
        ]
        now = journal_hashes(self.ws, self.session)
        if killed:
            self.kills += 1
            self.lost += sum(
                1 for r in segment if not scripted_fault(r) and body_hash(r.body) not in now
            )
        self.recorded, self.start = now, len(reqs)


@dataclass
class Reference:
    outputs: dict[str, bytes]
    requests: int
    answered: set[str]  # body hashes that got a reply
    wall: float  # seconds, spawn to exit
    first_request: float  # seconds, spawn to the first request at the server
    checkpoints: dict[str, str | None] = field(default_factory=dict)  # see checkpoints()


def checkpoints(ws: Path, session: str = SESSION) -> dict[str, str | None]:
    """Named checkpoints -> tree id; per-agent ones map to None (their trees depend on
    which parallel sibling finished first, so only their existence is compared)."""
    prefix = f"refs/pliny/{session}/checkpoints/"
    out = git(ws, "for-each-ref", "--format=%(refname) %(objectname)", prefix, check=False)
    found: dict[str, str | None] = {}
    for line in out.stdout.split("\n"):
        if line.strip():
            ref, commit = line.split()
            name = ref.removeprefix(prefix)
            tree = None if "." in name else git(ws, "rev-parse", f"{commit}^{{tree}}").stdout
            found[name] = tree.strip() if tree else None
    return found


def reference_run(
    ws: Path,
    server: FakeServer,
    session: str = SESSION,
    checkpoint: str = "agent",
    faults: bool = False,
) -> Reference:
    """One uninterrupted run in a fresh workspace: what every crashed run must end up as."""
    server.reset()
    script(server, faults)
    create_session(ws, server, session)
    started = time.monotonic()
    proc = spawn(ws, server, *execute_args(session, checkpoint))
    server.wait_for(1, timeout=60)
    first = time.monotonic() - started
    code = proc.wait(timeout=120)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"reference run exited {code}: see {ws.parent / (ws.name + '.log')}")
    reqs = server.requests
    answered = {body_hash(r.body) for r in reqs if r.outcome == "reply"}
    return Reference(outputs(ws), len(reqs), answered, wall, first, checkpoints(ws, session))


def completed_run(
    ws: Path, server: FakeServer, mode: str = "phase", session: str = SESSION
) -> Path:
    """A user's workspace with one completed R-I-S-E session in it."""
    init_workspace(ws)
    script(server)
    create_session(ws, server, session)
    proc = run(ws, server, *execute_args(session, mode))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ws


def verify(
    ws: Path, server: FakeServer, ref: Reference, ledger: Ledger, session: str = SESSION
) -> list[str]:
    """Every invariant of a crashed-and-resumed workspace; [] when all hold."""
    problems = []
    if (status := listed_status(ws, server, session)) != "completed":
        problems.append(f"status {status}, want completed")
    problems += diff_outputs(outputs(ws), ref.outputs)
    sent = {body_hash(r.body) for r in server.requests}
    if not journal_hashes(ws, session) or not journal_hashes(ws, session) <= sent:
        problems.append("journal hashes do not match request bodies: re-sends would go unseen")
    if ledger.resent:
        problems.append(f"re-sent recorded calls: {ledger.resent}")
    total = len(server.requests)
    if total != ref.requests + ledger.lost:
        problems.append(f"{total} requests != reference {ref.requests} + {ledger.lost} lost")
    answered = {body_hash(r.body) for r in server.requests if r.outcome == "reply"}
    if answered != ref.answered:
        problems.append(f"answered bodies differ: {len(answered ^ ref.answered)} not shared")
    if (found := checkpoints(ws, session)) != ref.checkpoints:
        odd = sorted(set(found.items()) ^ set(ref.checkpoints.items()), key=str)
        problems.append(f"checkpoints differ: {odd}")
    problems += unpaid_or_twice(ws, session)
    audit = run(ws, server, "audit", "verify", session)
    if audit.returncode != 0:
        problems.append(f"audit verify: {(audit.stdout + audit.stderr).strip()}")
    fsck = git(ws, "fsck", "--strict", "--no-progress", check=False)
    if fsck.returncode != 0 or "error" in fsck.stderr or "missing" in fsck.stdout:
        problems.append(f"git fsck: {(fsck.stdout + fsck.stderr).strip()[:300]}")
    return problems
