"""`pliny serve`, over HTTP: the JSON API, the guard, the actions and the real command.

One completed R-I-S-E run (fake server, real `pliny` subprocess) is made per module and
copied for each test that changes anything. The API must show what the CLI shows (the
same graph document as `session show --format json`), never change a file on a GET,
answer bad input with the CLI's one-line message, and do exactly what `pliny rollback`
does. The guard refuses foreign hosts, cross-site actions and, when a token is set,
requests without it. The real command binds loopback only unless told otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from bench.crashkit import (  # noqa: E402
    SESSION,
    env_for,
    outputs,
    pliny_argv,
    run,
    script,
    wait_until,
)
from pliny.web import create_app  # noqa: E402
from tests.fakeserver import FakeServer  # noqa: E402

pytestmark = pytest.mark.timeout(120)
ORIGIN = "http://127.0.0.1"
ACTION = {"X-Pliny-Action": "1"}


@pytest.fixture
def ws(completed: Path, server: FakeServer, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(completed, copy, symlinks=True)
    server.reset()
    script(server)
    return copy


def client(ws: Path, **kw: object) -> TestClient:
    return TestClient(create_app(ws, **kw), base_url=ORIGIN)  # type: ignore[arg-type]


def everything(ws: Path) -> dict[str, bytes]:
    return {p.relative_to(ws).as_posix(): p.read_bytes() for p in ws.rglob("*") if p.is_file()}


def shown(ws: Path, server: FakeServer) -> dict:
    proc = run(ws, server, "session", "show", SESSION, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_api_shows_what_the_cli_shows_and_gets_change_nothing(ws: Path, server: FakeServer) -> None:
    cli = shown(ws, server)
    before = everything(ws)
    with client(ws) as http:
        listed = http.get("/api/sessions").json()["sessions"]
        detail = http.get(f"/api/sessions/{SESSION}").json()
        checkpoints = http.get(f"/api/sessions/{SESSION}/checkpoints").json()
        span = {"from": "after-research", "to": "after-execute"}
        diff = http.get(f"/api/sessions/{SESSION}/diff", params=span).json()
        verify = http.get(f"/api/sessions/{SESSION}/verify").json()
        timeline = http.get(f"/api/sessions/{SESSION}/events", params={"after": 40}).json()
        page = http.get(f"/session/{SESSION}")
        assert http.get("/static/app.js").status_code == 200
    assert everything(ws) == before, "a GET changed a file"
    assert detail["graph"] == {k: v for k, v in cli.items() if k != "session"}
    assert detail["session"]["status"] == cli["session"]["status"] == "completed"
    (row,) = listed
    assert (row["id"], row["status"], row["framework"]) == (SESSION, "completed", "rise")
    assert row["tokens"] == cli["totals"]["tokens"] > 0
    assert row["cost_usd"] == cli["totals"]["cost_usd"]
    cards = {a["name"]: a for a in detail["agents"]}
    executor_md = f"pliny-runs/{SESSION}/execute/executor.md"
    assert cards["executor"]["files"] == ["src/health.py", executor_md, "DELIVERABLE.md"]
    assert cards["executor"]["model"] == "gpt-4o-mini" and cards["executor"]["calls"] == 2
    assert cards["findings"]["preview"].startswith("[fake:gpt-4o-mini]")
    assert [c["name"] for c in checkpoints] == [
        "after-research",
        "after-identify",
        "after-synthesize",
        "after-execute",
    ]
    assert "src/health.py" in diff["stat"] and "+def health()" in diff["patch"]
    assert verify["ok"] is True and verify["events"] == len(timeline) + 40
    assert [e["seq"] for e in timeline] == list(range(41, 41 + len(timeline)))
    assert "text/html" in page.headers["content-type"] and "app.js" in page.text


@pytest.mark.parametrize(
    "path", ["", "/events", "/verify", "/checkpoints", "/stream", "/diff?from=a&to=b"]
)
def test_unknown_session_is_404_with_the_cli_message(ws: Path, path: str) -> None:
    with client(ws) as http:
        got = http.get(f"/api/sessions/nope{path}")
    assert got.status_code == 404
    assert got.json()["error"] == f"unknown session 'nope' (sessions here: {SESSION})"


def test_bad_query_and_unknown_checkpoint_diff_are_400(ws: Path) -> None:
    with client(ws) as http:
        bad_after = http.get(f"/api/sessions/{SESSION}/events?after=x")
        no_to = http.get(f"/api/sessions/{SESSION}/diff?from=after-research")
        unknown = http.get(f"/api/sessions/{SESSION}/diff?from=after-research&to=nope")
    assert bad_after.status_code == 400 and "after must be an integer" in bad_after.json()["error"]
    assert no_to.status_code == 400 and "?from=CHECKPOINT&to=CHECKPOINT" in no_to.json()["error"]
    assert unknown.status_code == 400
    assert unknown.json()["error"].startswith("unknown checkpoint 'nope'")


def test_rollback_refusals_are_the_clis_and_change_nothing(ws: Path, server: FakeServer) -> None:
    cli = run(ws, server, "rollback", "no-such-checkpoint")
    assert cli.returncode == 2
    before = everything(ws)
    with client(ws) as http:
        url = f"/api/sessions/{SESSION}/rollback"
        got = http.post(url, json={"checkpoint": "no-such-checkpoint"}, headers=ACTION)
        empty = http.post(f"/api/sessions/{SESSION}/rollback", json={}, headers=ACTION)
        not_json = http.post(f"/api/sessions/{SESSION}/rollback", content=b"{", headers=ACTION)
        cancel = http.post(f"/api/sessions/{SESSION}/cancel", headers=ACTION)
        resume = http.post(f"/api/sessions/{SESSION}/resume", headers=ACTION)
    assert got.status_code == 400
    assert "pliny: error: " + got.json()["error"] == cli.stderr.strip()
    assert empty.status_code == 400 and '{"checkpoint": NAME}' in empty.json()["error"]
    assert not_json.status_code == 400 and "must be JSON" in not_json.json()["error"]
    assert cancel.status_code == 409 and "is not running" in cancel.json()["error"]
    assert resume.status_code == 409 and "nothing to resume" in resume.json()["error"]
    assert everything(ws) == before

    managed = f"pliny-runs/{SESSION}/research/research-code.md"
    (ws / managed).write_text("my own edit\n")
    edited = everything(ws)
    cli_edit = run(ws, server, "rollback", "after-research")
    with client(ws) as http:
        web_edit = http.post(
            f"/api/sessions/{SESSION}/rollback",
            json={"checkpoint": "after-research"},
            headers=ACTION,
        )
    assert cli_edit.returncode == 2 and web_edit.status_code == 409
    assert "pliny: error: " + web_edit.json()["error"] == cli_edit.stderr.strip()
    assert managed in web_edit.json()["error"] and "--force" in web_edit.json()["error"]
    assert everything(ws) == edited


@pytest.mark.slow  # ~4 s: real CLI runs
def test_rollback_from_the_api_matches_the_cli_and_resume_finishes(
    ws: Path, completed: Path, server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(ws, twin, symlinks=True)
    assert run(twin, server, "rollback", "after-identify").returncode == 0
    with client(ws) as http:
        done = http.post(
            f"/api/sessions/{SESSION}/rollback",
            json={"checkpoint": "after-identify"},
            headers=ACTION,
        )
    assert done.status_code == 200, done.text
    assert done.json()["message"].startswith(f"rolled back {SESSION} to after-identify")
    assert outputs(ws) == outputs(twin)
    web_state, cli_state = shown(ws, server), shown(twin, server)
    for doc in (web_state, cli_state):
        for key in ("updated", "created"):
            doc["session"].pop(key)
    assert web_state == cli_state
    assert web_state["session"]["status"] == "paused"

    # Resume runs in its own process, with the server's environment.
    for key, value in env_for(server).items():
        monkeypatch.setenv(key, value)
    with client(ws) as http:
        started = http.post(f"/api/sessions/{SESSION}/resume", headers=ACTION)
        assert started.status_code == 200, started.text
        assert wait_until(
            lambda: http.get(f"/api/sessions/{SESSION}").json()["session"]["status"] == "completed",
            timeout=60,
            interval=0.2,
        )
    assert outputs(ws) == outputs(completed)


def test_actions_need_the_page_header_and_the_same_origin(ws: Path) -> None:
    before = everything(ws)
    url = f"/api/sessions/{SESSION}/rollback"
    body = {"checkpoint": "after-research"}
    with client(ws) as http:
        bare = http.post(url, json=body)
        foreign = http.post(url, json=body, headers=ACTION | {"Origin": "http://evil.example"})
        other_port = http.post(url, json=body, headers=ACTION | {"Origin": "http://127.0.0.1:9"})
        as_get = http.get(url)
    assert bare.status_code == 403 and "X-Pliny-Action" in bare.json()["error"]
    assert foreign.status_code == 403 and other_port.status_code == 403
    assert as_get.status_code == 405
    assert everything(ws) == before


def test_loopback_server_refuses_other_host_names(ws: Path) -> None:
    with client(ws) as http:
        rebound = http.get("/api/sessions", headers={"Host": "attacker.example:8765"})
        local = http.get("/api/sessions", headers={"Host": "localhost:8765"})
    assert rebound.status_code == 421 and local.status_code == 200


def test_token_is_required_by_header_query_or_cookie(ws: Path) -> None:
    token = "t" * 24
    with client(ws, token=token, loopback_only=False) as http:
        assert http.get("/api/sessions").status_code == 401
        wrong = http.get("/api/sessions", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        ok = http.get("/api/sessions", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        page = http.get(f"/?token={token}")
        assert page.status_code == 200 and "pliny_token=" in page.headers["set-cookie"]
        assert http.get("/api/sessions").status_code == 200  # the cookie the page got


# -- the real command ---------------------------------------------------------------------
def serve(ws: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        pliny_argv("serve", "-w", str(ws), "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"NO_COLOR": "1"},
    )


def url_of(proc: subprocess.Popen[str]) -> str:
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("pliny: serving"), line + proc.stderr.read()  # type: ignore[union-attr]
    return line.split(" at ", 1)[1].strip()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=15)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is not loopback: add --allow-remote"),
        (["--host", "192.168.1.5"], "--allow-remote"),
        (["--host", "0.0.0.0", "--allow-remote", "--token", "short"], "at least 16 characters"),
        (["--port", "70000"], "not a TCP port"),
    ],
)
def test_serve_refuses_remote_binds_without_the_flag_and_token(
    completed: Path, args: list[str], needle: str
) -> None:
    proc = subprocess.run(
        pliny_argv("serve", "-w", str(completed), *args), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_serve_streams_the_audit_log_live(ws: Path) -> None:
    proc = serve(ws)
    try:
        base = url_of(proc).rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        got: list[dict] = []
        with httpx.stream(
            "GET",
            f"{base}/api/sessions/{SESSION}/stream",
            headers={"Last-Event-ID": "40"},
            timeout=20,
        ) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.iter_lines()
            last_id = None
            for line in lines:
                if line.startswith("id: "):
                    last_id = int(line[4:])
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]) | {"_id": last_id})
                    if got[-1]["type"] == "session_completed":
                        break
            _append_event(ws)  # another process writes while the page listens
            for line in lines:
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    break
        assert [e["seq"] for e in got] == list(range(41, 41 + len(got)))
        assert all(e["_id"] == e["seq"] for e in got[:-1])
        assert got[-1]["type"] == "error" and got[-1]["message"] == "appended by the test"
    finally:
        stop(proc)


def _append_event(ws: Path) -> None:
    code = (
        "from pathlib import Path; from pliny.audit.log import open_log; "
        "from pliny.config.settings import load_settings; from pliny.events import Error; "
        f"ws = Path({str(ws)!r}); log = open_log(ws, load_settings(ws).audit, {SESSION!r}); "
        f"log(Error(session={SESSION!r}, category='system', message='appended by the test')); "
        "log.close()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_serve_remote_bind_prints_a_token_and_requires_it(completed: Path) -> None:
    proc = serve(completed, "--host", "0.0.0.0", "--allow-remote")
    try:
        base, _, query = url_of(proc).partition("?")
        token = query.removeprefix("token=")
        assert len(token) >= 16
        local = base.replace("0.0.0.0", "127.0.0.1").rstrip("/")
        deadline = time.monotonic() + 10
        while True:
            try:
                refused = httpx.get(f"{local}/api/sessions", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        allowed = httpx.get(f"{local}/api/sessions", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401
        assert allowed.status_code == 200 and allowed.json()["sessions"][0]["id"] == SESSION
    finally:
        stop(proc)


def test_cancel_from_the_api_stops_a_running_session(server: FakeServer, tmp_path: Path) -> None:
    from bench.crashkit import create_session, execute_args, init_workspace, spawn

    ws = tmp_path / "ws"
    ws.mkdir()
    init_workspace(ws)
    server.reset()
    script(server)
    server.latency_ms = 1000  # slow enough to be caught running; reset() restores it
    create_session(ws, server)
    proc = spawn(ws, server, *execute_args(SESSION, "phase"))
    try:
        with client(ws) as http:

            def status() -> str:
                return http.get(f"/api/sessions/{SESSION}").json()["session"]["status"]

            assert wait_until(lambda: status() == "in_progress", proc, timeout=30, interval=0.05)
            done = http.post(f"/api/sessions/{SESSION}/cancel", headers=ACTION)
            assert done.status_code == 200, done.text
            assert done.json()["message"].startswith(f"cancelled {SESSION}")
            assert status() == "cancelled"
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        server.reset()
