"""`pliny serve` in a real browser: time to first data render, 100 sessions, 10,000 events.

A workspace with 100 R-I-S-E sessions (state written by ``SessionStore``, audit logs by
the real ``AuditLog`` writer, hash chain and all); one of them has a 10,000-event log.
Each repetition starts a fresh ``pliny serve`` (a cold server: nothing folded yet) and
opens a new headless Chromium page (no cache), then reads, in the page:

* list: navigation start -> the session table drawn from ``/api/sessions`` (all 100 logs
  folded), the page's ``pliny-first-data`` performance mark;
* session: navigation start -> graph and agent cards of the 10,000-event session drawn;
* timeline: navigation start -> the last of the 10,000 events shown (SSE stream).

Baseline in the same run: the same browser loading a static HTML file of the same size as
the rendered page (its DOM, saved after rendering), served by ``python -m http.server``
from 127.0.0.1, to its ``load`` event.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.benchkit import Result, Row, make_workspace, pliny_argv

SESSIONS = 100
BIG_EVENTS = 10_000
SMALL_EVENTS = 40
TARGET_S = 1.0
BIG = "big-session"


def chromium() -> str | None:
    return os.environ.get("PLINY_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
    )


def available() -> str | None:
    """None when the benchmark can run, else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "skipped: playwright is not installed"
    return None if chromium() else "skipped: no chromium binary (apt-get install chromium)"


# -- the workspace --------------------------------------------------------------------------
RISE = [
    ("research", ["research-code", "research-docs", "research-task"]),
    ("identify", ["findings"]),
    ("synthesize", ["planner"]),
    ("execute", ["executor"]),
]


def _events(session: str, count: int) -> list[Any]:
    """A plausible R-I-S-E event stream of ``count`` events, looping the phases."""
    from pliny import events as ev

    out: list[Any] = [ev.SessionStarted(session=session, name=session, framework="rise")]
    cycle = 0
    while len(out) < count - 1:
        cycle += 1
        for phase, agents in RISE:
            out.append(ev.PhaseStarted(session=session, phase=phase, cycle=cycle, agents=agents))
            for agent in agents:
                who = {"session": session, "phase": phase, "agent": agent}
                out.append(ev.AgentStarted(**who, model="gpt-4o-mini"))
                for turn in range(2):
                    out.append(
                        ev.LLMCall(
                            **who,
                            model="gpt-4o-mini",
                            prompt_tokens=200 + turn,
                            completion_tokens=50,
                            cost_usd=0.00006,
                        )
                    )
                    out.append(ev.ToolCall(**who, tool="read_file", arguments={"path": "x"}))
                out.append(ev.AgentCompleted(**who, output_path=f"pliny-runs/{agent}.md"))
            out.append(ev.PhaseCompleted(session=session, phase=phase, cycle=cycle))
    out = out[: count - 1]
    out.append(ev.SessionCompleted(session=session))
    return out


def build_workspace(root: Path) -> Path:
    from pliny.audit.writer import AuditLog
    from pliny.lifecycle.store import SessionStore

    ws = make_workspace(root, "ws")
    store = SessionStore(ws)
    for index in range(SESSIONS):
        sid = BIG if index == SESSIONS - 1 else f"session-{index:03d}"
        state = store.create(f"bench {index}", sid, framework="rise", task="bench")
        state.status, state.phase = "completed", "execute"
        store.save(state)
        log = AuditLog(ws / "audit-logs" / f"{sid}.jsonl", fsync="none", session=sid)
        with log:
            for event in _events(sid, BIG_EVENTS if sid == BIG else SMALL_EVENTS):
                log(event)
    return ws


# -- measuring ------------------------------------------------------------------------------
def _serve(ws: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        pliny_argv("serve", "-w", str(ws), "--port", "0"), stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("pliny: serving"):
        proc.kill()
        raise RuntimeError(f"pliny serve did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].strip().rstrip("/")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=15)


def _mark(page: Any) -> float:
    return page.evaluate("performance.getEntriesByName('pliny-first-data')[0].startTime") / 1000


def _measure_pliny(browser: Any, ws: Path) -> dict[str, float | str]:
    proc, base = _serve(ws)
    try:
        page = browser.new_context().new_page()
        page.goto(base + "/")
        page.wait_for_selector("body[data-ready=list]", timeout=60_000)
        got: dict[str, float | str] = {"list": _mark(page), "list_html": page.content()}
        page.close()
        page = browser.new_context().new_page()
        page.goto(f"{base}/session/{BIG}")
        page.wait_for_selector("body[data-ready=session]", timeout=60_000)
        got["session"] = _mark(page)
        page.wait_for_function(
            f"document.querySelector('#ev-count').textContent === 'last seq {BIG_EVENTS}'",
            timeout=120_000,
        )
        got["timeline"] = page.evaluate("performance.now()") / 1000
        got["session_html"] = page.content()
        page.close()
        return got
    finally:
        _stop(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _static_load(browser: Any, base: str, name: str) -> float:
    page = browser.new_context().new_page()
    page.goto(f"{base}/{name}", wait_until="load")
    took = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000
    page.close()
    return took


def _static_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("python -m http.server did not start")


def _strip_scripts(html: str) -> str:
    return html.replace('<script src="/static/app.js"></script>', "")


def run(quick: bool) -> Result:
    from playwright.sync_api import sync_playwright

    from pliny.web.app import STATIC

    reps = 3 if quick else 7
    result = Result("web", details={"reps": reps, "sessions": SESSIONS, "big_log": BIG_EVENTS})
    samples: dict[str, list[float]] = {
        k: [] for k in ("list", "session", "timeline", "static_list", "static_session")
    }
    with tempfile.TemporaryDirectory(prefix="pliny-bench-web-") as tmp:
        started = time.perf_counter()
        ws = build_workspace(Path(tmp))
        result.details["build_s"] = round(time.perf_counter() - started, 2)
        result.details["big_log_bytes"] = (ws / "audit-logs" / f"{BIG}.jsonl").stat().st_size
        static = Path(tmp) / "static"
        static.mkdir()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            try:
                for _ in range(reps):
                    got = _measure_pliny(browser, ws)
                    for key in ("list", "session", "timeline"):
                        samples[key].append(float(got[key]))
                (static / "list.html").write_text(_strip_scripts(str(got["list_html"])))
                (static / "session.html").write_text(_strip_scripts(str(got["session_html"])))
                shutil.copytree(STATIC, static / "static")
                server, base = _static_server(static)
                try:
                    for _ in range(reps):
                        samples["static_list"].append(_static_load(browser, base, "list.html"))
                        samples["static_session"].append(
                            _static_load(browser, base, "session.html")
                        )
                finally:
                    server.terminate()
                    server.wait(timeout=10)
            finally:
                browser.close()
        sizes = {n: (static / f"{n}.html").stat().st_size for n in ("list", "session")}
    med = {k: statistics.median(v) for k, v in samples.items()}
    result.details["samples_s"] = {k: [round(x, 4) for x in v] for k, v in samples.items()}
    result.details["static_page_bytes"] = sizes
    result.rows += [
        Row(
            f"first data render: list of {SESSIONS} sessions",
            med["list"],
            "s",
            med["static_list"],
            f"static page, {sizes['list'] // 1024} KB",
            f"<= {TARGET_S} s",
            med["list"] <= TARGET_S,
        ),
        Row(
            f"first data render: session, {BIG_EVENTS:,}-event log",
            med["session"],
            "s",
            med["static_session"],
            f"static page, {sizes['session'] // 1024} KB",
            f"<= {TARGET_S} s",
            med["session"] <= TARGET_S,
        ),
        Row(
            f"timeline: all {BIG_EVENTS:,} events streamed (SSE)",
            med["timeline"],
            "s",
            med["static_session"],
            "static page of the same size",
        ),
    ]
    result.notes.append(
        "cold server per repetition (pliny serve started afresh), new browser "
        "context per page; figures are from navigation start"
    )
    return result


if __name__ == "__main__":
    for row in run("--quick" in sys.argv).rows:
        print(row)
