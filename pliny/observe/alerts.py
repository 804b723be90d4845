"""Alert rules evaluated on engine events: an ``alert`` event, a warning, a command.

Metrics a rule can name (``METRICS``), all for the whole session:

==================  ==========================================================
cost_usd            USD of priced calls sent (replayed and cache hits cost 0)
tokens              prompt + completion tokens of calls sent
llm_calls           calls sent to an endpoint
errors              ``error`` + ``agent_failed`` events
retries             retried attempts (``retry`` events)
error_rate          (errors + retries) / (llm_calls + errors + retries): the share
                    of observed attempts that failed, 0..1. ``llm_call`` events
                    are successful calls only, so errors / llm_calls would be
                    unbounded (and infinite before the first success).
agent_failures      agents that gave up (``agent_failed``, skipped or not)
phase_duration_s    seconds the longest-running phase in flight has run; 0 when
                    none is. It grows while nothing happens, hence ``tick()``.
                    Timed from ``phase_started`` in this process: a phase a
                    resume continues mid-way is not timed.
==================  ==========================================================

Firing: a rule's condition is checked on every event and every ``tick()``.
With ``duration`` it must hold continuously that long first (checked against
the injected clock). A rule fires once, then stays quiet while its condition
holds; when the condition clears it re-arms and may fire again. Monotonic
totals (cost, tokens, ...) therefore fire at most once per session, and a
phase-duration rule fires once per slow phase. Nothing fires after the
session's final event (completed, failed, cancelled, paused): readers that
follow the log stop there. ``prime(events)`` folds the session's earlier
runs (resume) without firing; a rule already fired in the log stays quiet
until its condition clears.

Trust: a rule's ``command`` runs only when the config is one the user named
(``--config PATH``) or the user opted in (``--allow-alert-commands`` or
``PLINY_ALLOW_ALERT_COMMANDS=1``). A workspace ``pliny.yaml`` arrives with
the repository (or from whoever could write there): its commands are dropped
with one warning, and its alerts still fire (event, log line).
"""

from __future__ import annotations

import asyncio
import math
import operator
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pliny.audit.reader import TERMINAL
from pliny.config.settings import WORKSPACE_CONFIG, AlertRule
from pliny.errors import ConfigError
from pliny.events import Alert, Event, Warning_
from pliny.logs import logger
from pliny.usage import Usage

METRICS = (
    "cost_usd",
    "tokens",
    "llm_calls",
    "errors",
    "retries",
    "error_rate",
    "agent_failures",
    "phase_duration_s",
)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "lt": operator.lt,
    "gte": operator.ge,
    "lte": operator.le,
    "eq": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
SYMBOLS = {"gt": ">", "lt": "<", "gte": ">=", "lte": "<=", "eq": "=="}
ALLOW_ENV = "PLINY_ALLOW_ALERT_COMMANDS"
RunCommand = Callable[[list[str], dict[str, str]], subprocess.Popen[bytes] | None]


def rule_name(rule: AlertRule) -> str:
    return rule.name or f"{rule.metric} {rule.operator} {rule.threshold:g}"


def validate_rules(rules: Sequence[AlertRule]) -> None:
    """Reject unknown metrics and malformed commands at load time, naming the rule."""
    for index, rule in enumerate(rules):
        where = f"alerts[{index}] ({rule_name(rule)})"
        if rule.metric not in METRICS:
            raise ConfigError(
                f"{where}: unknown metric {rule.metric!r} (one of: {', '.join(METRICS)})"
            )
        if rule.command is not None:
            try:
                argv = shlex.split(rule.command)
            except ValueError as exc:
                raise ConfigError(f"{where}: command: {exc}") from None
            if not argv:
                raise ConfigError(f"{where}: command is empty")


def commands_trusted(config_path: object, allow: bool, env: Mapping[str, str]) -> bool:
    """Whether alert commands may run (see "Trust" in the module docstring)."""
    opted_in = env.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")
    return allow or opted_in or config_path is not None


def without_commands(rules: Sequence[AlertRule]) -> tuple[list[AlertRule], str | None]:
    """The rules with their commands removed, and the one-line warning (None if none had one)."""
    dropped = [rule_name(rule) for rule in rules if rule.command]
    if not dropped:
        return list(rules), None
    message = (
        f"{WORKSPACE_CONFIG}: not running the command of alert {', '.join(dropped)}: "
        f"commands from the workspace config need --allow-alert-commands "
        f"or {ALLOW_ENV}=1"
    )
    logger.warning(message)
    return [rule.model_copy(update={"command": None}) for rule in rules], message


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the command without waiting (shell=False); its output is discarded."""
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@dataclass
class _Totals:
    usage: Usage = field(default_factory=Usage)  # calls, tokens, cost: pliny.usage's rule
    errors: int = 0
    retries: int = 0
    agent_failures: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # running phase -> clock at start

    def fold(self, event: Event, now: float | None) -> None:
        kind = event.type
        if kind == "llm_call":
            self.usage.add(event)
        elif kind in ("error", "agent_failed"):
            self.errors += 1
            self.agent_failures += kind == "agent_failed"
        elif kind == "retry":
            self.retries += 1
        elif kind == "phase_started" and now is not None and event.phase:
            self.phases[event.phase] = now
        elif kind == "phase_completed" or kind.startswith("session_") or kind == "crash_detected":
            # A completed phase, or every phase of a run that ended or restarted.
            for phase in [event.phase] if kind == "phase_completed" else list(self.phases):
                self.phases.pop(phase or "", None)

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    @property
    def tokens(self) -> int:
        return self.usage.tokens

    @property
    def llm_calls(self) -> int:
        return self.usage.calls

    def value(self, metric: str, now: float) -> tuple[float, str | None]:
        """The metric's value (and the phase it is about, for phase_duration_s)."""
        if metric == "phase_duration_s":
            if not self.phases:
                return 0.0, None
            phase, started = min(self.phases.items(), key=lambda item: item[1])
            return now - started, phase
        if metric == "error_rate":
            failed = self.errors + self.retries
            attempts = self.llm_calls + failed
            return (failed / attempts if attempts else 0.0), None
        return float(getattr(self, metric)), None


@dataclass
class _RuleState:
    rule: AlertRule
    name: str
    since: float | None = None  # clock when the condition started to hold
    fired: bool = False


class AlertMonitor:
    """EventBus listener evaluating alert rules; see the module docstring."""

    def __init__(
        self,
        rules: Sequence[AlertRule],
        emit: Callable[[Event], Any],
        clock: Callable[[], float] = time.monotonic,
        run_command: RunCommand = spawn,
        session: str | None = None,
    ) -> None:
        validate_rules(rules)
        self.rules = [_RuleState(rule, rule_name(rule)) for rule in rules]
        self.emit = emit
        self.clock = clock
        self.run_command = run_command
        self.session = session
        self.totals = _Totals()
        self.children: list[subprocess.Popen[bytes]] = []
        self._lock = threading.RLock()
        self._evaluating = False
        self.ended = False

    def prime(self, events: Iterable[Event]) -> None:
        """Fold earlier runs of the session (its audit log) without firing."""
        fired = set()
        for event in events:
            self.session = self.session or event.session
            self.totals.fold(event, None)  # no clock: phases of old runs are not running
            if event.type == "alert":
                fired.add(getattr(event, "rule", ""))
        for state in self.rules:
            state.fired = state.name in fired

    def __call__(self, event: Event) -> None:
        if event.type == "alert":
            return  # our own output coming back through the bus
        with self._lock:
            self.session = self.session or event.session
            self.totals.fold(event, self.clock())
            if event.type in TERMINAL:
                # Nothing may follow a session's final event: `follow` stops there.
                self.ended = True
            elif event.type in ("session_started", "session_resumed"):
                self.ended = False
            self._evaluate()

    def tick(self) -> None:
        """Re-check time-based conditions (a phase that hangs emits nothing); reap commands."""
        with self._lock:
            self._evaluate()
        self.reap()

    def _evaluate(self) -> None:
        if self._evaluating or self.ended:  # emit() below may come back through the bus
            return
        self._evaluating = True
        try:
            now = self.clock()
            for state in self.rules:
                self._check(state, now)
        finally:
            self._evaluating = False

    def _check(self, state: _RuleState, now: float) -> None:
        rule = state.rule
        value, phase = self.totals.value(rule.metric, now)
        if not OPERATORS[rule.operator](value, rule.threshold):
            state.since, state.fired = None, False  # cleared: re-armed
            return
        if state.since is None:
            state.since = now
        if state.fired or now - state.since < (rule.duration or 0):
            return
        state.fired = True
        self._fire(state, value, phase)

    def _fire(self, state: _RuleState, value: float, phase: str | None) -> None:
        rule = state.rule
        held = f" for {rule.duration:g}s" if rule.duration else ""
        about = f" (phase {phase})" if phase else ""
        message = (
            f"alert {state.name}: {rule.metric}{about} is {value:g}, "
            f"{SYMBOLS[rule.operator]} {rule.threshold:g}{held}"
        )
        logger.warning(message)
        self.emit(
            Alert(
                phase=phase,
                rule=state.name,
                metric=rule.metric,
                value=value,
                threshold=rule.threshold,
                message=message,
            )
        )
        if rule.command:
            self._run(state, value)

    def _run(self, state: _RuleState, value: float) -> None:
        env = {
            **os.environ,
            "PLINY_ALERT_RULE": state.name,
            "PLINY_ALERT_VALUE": f"{value:g}",
            "PLINY_ALERT_SESSION": self.session or "",
            "PLINY_ALERT_METRIC": state.rule.metric,
            "PLINY_ALERT_THRESHOLD": f"{state.rule.threshold:g}",
        }
        argv = shlex.split(state.rule.command or "")
        try:
            child = self.run_command(argv, env)
        except OSError as exc:  # a listener must not stop the run over a notification
            why = exc.strerror or exc
            message = f"alert {state.name}: command {argv[0]!r} did not start: {why}"
            logger.warning(message)
            self.emit(Warning_(message=message))
            return
        if child is not None:
            self.children.append(child)

    def reap(self, wait: float = 0.0) -> list[int]:
        """Collect finished commands (waiting up to ``wait`` s); their exit codes."""
        deadline = time.monotonic() + wait
        codes = []
        for child in list(self.children):
            left = max(0.0, deadline - time.monotonic())
            try:
                code = child.wait(timeout=left) if wait else child.poll()
            except subprocess.TimeoutExpired:
                code = None
            if code is None:
                continue
            self.children.remove(child)
            codes.append(code)
            if code != 0:
                name = child.args[0] if isinstance(child.args, list) else child.args
                logger.warning(f"alert command {name!r} exited with {code}")
        return codes

    def close(self, wait: float = 5.0) -> None:
        """Reap what finishes within ``wait`` seconds; the rest keep running detached."""
        self.reap(wait)


async def watch_loop(monitor: AlertMonitor, interval: float = 1.0) -> None:
    """Call ``monitor.tick()`` every ``interval`` s until cancelled (start it as a task)."""
    while True:
        await asyncio.sleep(interval)
        monitor.tick()
