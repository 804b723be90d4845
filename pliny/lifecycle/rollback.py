"""Rollback and rerun: move a session back to an earlier point.

Files come back through git (``CheckpointStore.rollback``); the run state
comes back through LangGraph's own history: we find the graph checkpoint
that matches the git checkpoint and record it as ``fork_from``, so the next
``execute``/``resume`` continues from there. Recorded LLM answers stay in
the journal, so re-running unchanged agents replays them at no cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pliny.atomicfile import atomic_write
from pliny.errors import UsageError
from pliny.lifecycle.store import SessionState, SessionStore


async def _history(store: SessionStore, state: SessionState) -> list[Any]:
    """The current branch's graph snapshots, oldest first.

    A thread keeps every fork (rollback, rerun); only the lineage of the newest
    checkpoint is the session's history, so abandoned branches are dropped.
    """
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from pliny.engine.graph import Engine
    from pliny.framework.model import load

    db = store.dir(state.id) / "graph.sqlite"
    if not db.exists():
        return []
    engine = Engine(load(state.framework or "rise"))  # compile only: no executor
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        graph = engine.build().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": state.id}}
        snapshots = [s async for s in graph.aget_state_history(config)]
    if not snapshots:
        return []
    by_id = {_cid(s.config): s for s in snapshots}
    lineage, node = [], snapshots[0]  # newest first: the head of the current branch
    while node is not None:
        lineage.append(node)
        node = by_id.get(_cid(node.parent_config)) if node.parent_config else None
    return list(reversed(lineage))


def _cid(config: Any) -> str:
    return config["configurable"]["checkpoint_id"]


def _fork(state: SessionState, snapshots: list[Any], at: Any) -> None:
    """Continue from ``at`` next run; ``fork_base`` (today's head) makes it apply once."""
    state.fork_from = _cid(at.config)
    state.options["fork_base"] = _cid(snapshots[-1].config)


def _after_phase(snapshots: list[Any], phase: str, cycle: int) -> Any | None:
    """First snapshot after the join of ``phase``'s ``cycle``-th run."""
    for snap in snapshots:
        trail = snap.values.get("trail", [])
        if trail and trail[-1] == phase and trail.count(phase) == cycle:
            return snap
    return None


def _phase_entered(snapshots: list[Any], phase: str, cycle: int) -> Any | None:
    """First snapshot after ``phase`` was entered for the ``cycle``-th time."""
    for snap in snapshots:
        if snap.values.get("cycles", {}).get(phase) == cycle:
            return snap
    return None


def parse_checkpoint_name(name: str) -> tuple[str, str | None, int]:
    """after-<phase>[-<cycle>] or after-<phase>.<agent>[-<cycle>]."""
    body = name.removeprefix("after-")
    cycle = 1
    head, _, tail = body.rpartition("-")
    if head and tail.isdigit():
        body, cycle = head, int(tail)
    phase, _, agent = body.partition(".")
    return phase, agent or None, cycle


async def rollback_session(workspace: Path, session_id: str | None, name: str, force: bool) -> str:
    from pliny.checkpoints.store import CheckpointStore
    from pliny.events import Rollback

    sessions = SessionStore(workspace)
    state = sessions.resolve(session_id)
    if sessions.is_locked(state.id):
        raise UsageError(f"session {state.id!r} is running; cancel it before a rollback")
    from pliny.checkpoints.store import PROTECTED_DIRS
    from pliny.lifecycle.sessionconfig import audit_settings

    audit_dir = audit_settings(workspace, state.id).dir  # the audit log is never rolled back
    store = CheckpointStore(
        workspace, state.id, sessions.dir(state.id), protected=(*PROTECTED_DIRS, audit_dir)
    )
    info = store.get(name)  # unknown name -> UsageError listing the known ones
    fork = None
    if name.startswith("after-"):
        phase, agent, cycle = parse_checkpoint_name(name)
        snapshots = await _history(sessions, state)
        fork = (_phase_entered if agent else _after_phase)(snapshots, phase, cycle)
    # Mark the session first: if we die mid-rollback, the next run refuses
    # until `pliny rollback NAME` is run again (it is idempotent). A refused
    # rollback (user edits) puts the state back as it was.
    state_file = sessions.dir(state.id) / "state.json"
    before = state_file.read_bytes()
    state.options["rollback_pending"] = name
    state.status = "paused"
    sessions.save(state)
    try:
        result = store.rollback(name, force=force)
    except UsageError:
        atomic_write(state_file, before)  # refused: byte-for-byte as it was
        raise
    if fork is not None:
        _fork(state, snapshots, fork)
    state.phase = None
    state.options.pop("rollback_pending", None)
    sessions.save(state)
    from pliny.audit.log import open_log
    from pliny.lifecycle.sessionconfig import audit_settings

    log = open_log(workspace, audit_settings(workspace, state.id), state.id)
    try:
        log(
            Rollback(
                session=state.id,
                name=name,
                commit=info.commit,
                files=list(result.files),
                forked=fork is not None,
            )
        )
    finally:
        log.close()
    where = "the run continues from there" if fork else "run state unchanged (manual checkpoint)"
    return (
        f"rolled back {state.id} to {name} ({info.commit[:12]}): {len(result.restored)} file(s) "
        f"restored, {len(result.deleted)} removed; {where} with `pliny session resume {state.id}`"
    )


async def prepare_rerun(store: SessionStore, state: SessionState, agents: list[str]) -> None:
    """Fork before the latest run of each agent's phase; those agents get fresh answers."""
    from pliny.framework.model import load

    fw = load(state.framework or "rise")
    snapshots = await _history(store, state)
    if not snapshots:
        raise UsageError(f"session {state.id!r} has no run to rerun from")
    latest = snapshots[-1].values.get("cycles", {})
    forks = []
    for agent in agents:
        phase, _ = fw.agent(agent)
        snap = _phase_entered(snapshots, phase.name, latest.get(phase.name, 0))
        if snap is None:
            raise UsageError(f"--rerun: agent {agent!r} has not run yet in session {state.id!r}")
        forks.append(snap)
    _fork(state, snapshots, min(forks, key=snapshots.index))
    state.fresh_agents = sorted(set(agents))


async def prepare_from_phase(store: SessionStore, state: SessionState, fw: Any, phase: str) -> None:
    """Fork where ``phase`` was last entered; it and everything after it asks afresh."""
    snapshots = await _history(store, state)
    cycles = snapshots[-1].values.get("cycles", {}) if snapshots else {}
    snap = _phase_entered(snapshots, phase, cycles.get(phase, 0)) if cycles.get(phase) else None
    if snap is None:
        raise UsageError(
            f"--from-phase {phase}: session {state.id!r} has no recorded run reaching {phase!r} "
            "(run the earlier phases first, e.g. with --until-phase)"
        )
    downstream = _reachable(fw, phase)
    _fork(state, snapshots, snap)
    state.fresh_agents = sorted(a.name for p in fw.phases if p.name in downstream for a in p.agents)


def _reachable(fw: Any, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        for src, dst, _ in fw.edges():
            if src == node and dst not in seen and dst != "end":
                seen.add(dst)
                todo.append(dst)
    return seen


# Failures a replay cannot fix: the model's recorded answers must be asked again.
ANSWER_FAILURES = {"validation", "ai"}


async def failed_agents_of_stuck_phase(
    store: SessionStore, state: SessionState, fw: Any
) -> tuple[list[str], list[str]]:
    """A phase that failed on min_successful_agents stops at its join; resuming must
    re-run its failed agents, not just the join (which would fail again).

    Returns (agents to re-run, agents whose recorded answers to drop): a network
    or timeout failure keeps its paid turns, which the journal replays.
    """
    from pliny.engine.graph import join_node

    snapshots = await _history(store, state)
    if not snapshots:
        return [], []
    last = snapshots[-1]
    results = last.values.get("results", {})
    for phase in fw.phases:
        if join_node(phase.name) not in last.next:
            continue
        failed = {
            a.name: results[a.name]
            for a in phase.agents
            if results.get(a.name, {}).get("status") == "failed"
        }
        drop = [
            n for n, r in failed.items() if r.get("error", {}).get("category") in ANSWER_FAILURES
        ]
        return list(failed), drop
    return [], []
