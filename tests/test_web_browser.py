"""The web view in a real browser: Debian's Chromium, headless, driven by Playwright.

A R-I-S-E run against the fake server (with latency, so it takes a few seconds) runs as
its own `pliny execute` process while `pliny serve` (another process) serves the page.
The page, opened once and never reloaded, must show the agents change state live (fed by
the SSE stream), list and filter the session, and a rollback done from the page (confirm
dialog accepted) must leave the files and `session show --format json` exactly as
`pliny rollback` leaves a copy of the same workspace. The page is captured to
docs/web-view.png for the README.

Skipped, with the reason, when Playwright or a Chromium binary is missing (CI installs
both: see .ci/run). Playwright's own browser download is not used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.crashkit import (
    SESSION,
    create_session,
    execute_args,
    init_workspace,
    outputs,
    pliny_argv,
    run,
    script,
    spawn,
)
from tests.fakeserver import FakeServer

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = os.environ.get("PLINY_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"),
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "web-view.png"
LATENCY_MS = 500
# Every state each agent's graph box shows, in order, recorded inside the page.
RECORDER = """
window.__states = {};
new MutationObserver(() => {
  for (const a of document.querySelectorAll('#graph .agent')) {
    const seen = (window.__states[a.dataset.agent] ||= []);
    if (seen.at(-1) !== a.dataset.state) seen.push(a.dataset.state);
  }
}).observe(document, {subtree: true, childList: true});
"""


@pytest.fixture(scope="module")
def slow_server() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=LATENCY_MS) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    ws = tmp_path / "ws"
    ws.mkdir()
    init_workspace(ws)
    proc = subprocess.Popen(
        pliny_argv("serve", "-w", str(ws), "--port", "0"), stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("pliny: serving"), line
    yield ws, line.split(" at ", 1)[1].strip().rstrip("/")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=15)


def shown(ws: Path, server: FakeServer) -> dict:
    proc = run(ws, server, "session", "show", SESSION, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for key in ("created", "updated"):
        doc["session"].pop(key)
    return doc


def test_live_states_rollback_from_the_page_and_screenshot(
    served: tuple[Path, str], slow_server: FakeServer, browser: object, tmp_path: Path
) -> None:
    ws, base = served
    script(slow_server)
    create_session(ws, slow_server)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(RECORDER)
    page.goto(f"{base}/session/{SESSION}")
    page.wait_for_selector("body[data-ready=session]")
    page.evaluate("window.__same_page = true")

    execute = spawn(ws, slow_server, *execute_args(SESSION, "phase"))
    try:
        # A moment mid-run for the README: research done, a later phase running.
        page.wait_for_selector(".phase[data-phase=research][data-state=done]", timeout=60_000)
        page.wait_for_selector(".agent[data-state=running]", timeout=60_000)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=False)
        page.wait_for_selector("#title[data-status=completed]", timeout=90_000)
        assert execute.wait(timeout=60) == 0
    finally:
        if execute.poll() is None:
            execute.kill()
    assert page.evaluate("window.__same_page") is True, "the page reloaded"
    states = page.evaluate("window.__states")
    for agent in ("research-code", "findings", "planner", "executor"):
        seen = states[agent]
        assert seen[0] == "pending" and seen[-1] == "done", (agent, seen)
        assert "running" in seen or "queued" in seen, (agent, seen)
    page.wait_for_selector("#verify[data-ok=true]")
    assert page.locator("#timeline tr.ev[data-type=session_completed]").count() == 1
    page.select_option("#f-agent", "planner")
    visible = page.locator("#timeline tr.ev:visible")
    assert visible.count() > 0
    assert set(visible.evaluate_all("rows => rows.map(r => r.dataset.agent)")) == {"planner"}

    twin = tmp_path / "twin"
    shutil.copytree(ws, twin, symlinks=True)
    assert run(twin, slow_server, "rollback", "after-research").returncode == 0
    page.wait_for_selector("li[data-checkpoint=after-execute]")
    page.click("li[data-checkpoint=after-identify] button.diff")
    page.wait_for_selector("#diff-stat:has-text('findings.md')")
    assert page.locator("#diff-title").inner_text() == "after-research → after-identify"
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.click("li[data-checkpoint=after-research] button.rollback")
    page.wait_for_selector("#message:has-text('rolled back')")
    assert dialogs and "after-research" in dialogs[0]
    page.wait_for_selector("#title[data-status=paused]")
    assert outputs(ws) == outputs(twin)
    assert shown(ws, slow_server) == shown(twin, slow_server)
    assert not errors, errors


def test_session_list_filters(
    served: tuple[Path, str], slow_server: FakeServer, browser: object
) -> None:
    ws, base = served
    for sid in ("alpha-one", "beta-two", "gamma-three"):
        create_session(ws, slow_server, sid)
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=list]")
    rows = page.locator("#sessions tbody tr")
    assert rows.count() == 3
    page.fill("#filter", "beta")
    assert rows.count() == 1 and rows.first.get_attribute("data-session") == "beta-two"
    page.fill("#filter", "")
    page.select_option("#status-filter", "completed")
    assert rows.count() == 0
    page.select_option("#status-filter", "created")
    assert rows.count() == 3
    page.click("a:has-text('gamma-three')")
    page.wait_for_selector("body[data-ready=session]")
    assert "gamma-three" in page.locator("#title").inner_text()
