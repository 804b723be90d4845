"""The current run state after a rollback (pliny.lifecycle.runstate), folded from real engine events
of an R-I-S-E run: which agents are done, and spent-in-total apart from the current state."""

from __future__ import annotations

import pytest

from pliny.events import (
    AgentCompleted,
    AgentStarted,
    CheckpointCreated,
    Event,
    LLMCall,
    PhaseCompleted,
    PhaseStarted,
    Rollback,
    SessionResumed,
)
from pliny.framework.model import load
from pliny.lifecycle.runstate import RollbackFold
from pliny.observe.progress import Progress

PHASES = {
    "research": ["research-code", "research-docs", "research-task"],
    "identify": ["findings"],
    "synthesize": ["planner"],
}


def run_events(mode: str) -> list[Event]:
    """Three phases, one paid call per agent, checkpoints per phase or per agent."""
    events: list[Event] = []
    for phase, agents in PHASES.items():
        events.append(PhaseStarted(phase=phase, agents=agents))
        for agent in agents:
            events += [
                AgentStarted(phase=phase, agent=agent),
                LLMCall(
                    phase=phase, agent=agent, prompt_tokens=100, completion_tokens=10, cost_usd=0.01
                ),
                AgentCompleted(phase=phase, agent=agent),
            ]
            if mode == "agent":
                events.append(CheckpointCreated(name=f"after-{phase}.{agent}"))
        events.append(PhaseCompleted(phase=phase))
        if mode == "phase":
            events.append(CheckpointCreated(name=f"after-{phase}"))
    return events


def fold(events: list[Event]) -> RollbackFold:
    f = RollbackFold(Progress.for_framework(load("rise")))
    for event in events:
        f.progress(event)
        f(event)
    return f


def done(f: RollbackFold) -> set[str]:
    return {a.name for a in f.progress.agents.values() if a.state == "done"}


def test_phase_checkpoint_rollback_makes_the_later_agents_pending() -> None:
    f = fold([*run_events("phase"), Rollback(name="after-research", forked=True)])
    assert done(f) == set(PHASES["research"])
    assert f.progress.phase_state["identify"] == "waiting"
    assert f.progress.agents["findings"].tokens == 0
    assert f.current() == {
        "calls": 3,
        "tokens": 330,
        "cost_usd": 0.03,
        "rolled_back_to": "after-research",
    }
    assert f.spent() == {"calls": 5, "tokens": 550, "cost_usd": 0.05}


def test_agent_checkpoint_rollback_goes_back_to_the_start_of_its_phase() -> None:
    """The run forks to where the phase began (rollback.py): all its agents run again."""
    f = fold([*run_events("agent"), Rollback(name="after-identify.findings", forked=True)])
    assert done(f) == set(PHASES["research"])
    assert f.progress.phase_state["identify"] == "waiting"
    assert f.progress.agents["findings"].state == "waiting"


@pytest.mark.parametrize(
    "rollback", [Rollback(name="before-refactor"), Rollback(name="after-research", forked=False)]
)
def test_a_rollback_of_files_only_keeps_the_run_state(rollback: Rollback) -> None:
    f = fold([*run_events("phase"), CheckpointCreated(name="before-refactor"), rollback])
    assert done(f) == {a for agents in PHASES.values() for a in agents}
    assert f.current()["rolled_back_to"] is None
    assert f.spent() == {k: v for k, v in f.current().items() if k != "rolled_back_to"}


def test_the_resumed_run_continues_from_the_rolled_back_state() -> None:
    again = [
        PhaseStarted(phase="identify", agents=["findings"]),
        AgentStarted(phase="identify", agent="findings"),
        LLMCall(
            phase="identify",
            agent="findings",
            prompt_tokens=100,
            completion_tokens=10,
            cost_usd=0.0,
            replayed=True,
        ),
        AgentCompleted(phase="identify", agent="findings"),
    ]
    f = fold(
        [
            *run_events("phase"),
            Rollback(name="after-research", forked=True),
            SessionResumed(),
            *again,
        ]
    )
    assert done(f) == {*PHASES["research"], "findings"}
    assert f.current()["rolled_back_to"] is None
    assert f.spent()["cost_usd"] == pytest.approx(0.05)  # the replay cost nothing
