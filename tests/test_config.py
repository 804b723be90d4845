"""Settings loading: layering, durations, unknown keys, YAML merge keys.

Every error is one ConfigError line ``file:line:col: field.path: problem``
(exit code 2); the tests pin the exact position so a wrong mark fails.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pliny.config.settings import Settings, load_settings, parse_duration
from pliny.errors import EXIT_BAD_INPUT, ConfigError

ALL_STRATEGIES = {"network", "tool", "validation", "ai", "system", "config"}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error(ws: Path, text: str) -> str:
    write(ws / "pliny.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(ws)
    assert info.value.exit_code == EXIT_BAD_INPUT
    message = str(info.value)
    assert "\n" not in message, message  # one problem, one line
    return message


# -- layering ---------------------------------------------------------------------


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings == Settings.model_validate(settings.model_dump())
    assert settings.execution.parallel is True
    assert settings.execution.max_concurrency == 16
    assert settings.execution.timeouts.agent == 15 * 60  # "15m" in configs/default.yaml
    assert settings.execution.timeouts.phase == 3600
    assert set(settings.error_handling.retry_strategies) == ALL_STRATEGIES


def test_workspace_file_overrides_defaults_and_flags_override_both(tmp_path: Path) -> None:
    write(
        tmp_path / "pliny.yaml",
        """
        llm:
          model: from-file
          temperature: 0.7
        execution:
          timeouts:
            agent: 90s
    """,
    )
    flags = {"llm": {"model": "from-flag"}, "execution": {"checkpoint": "agent"}}
    settings = load_settings(tmp_path, None, flags)
    assert settings.llm.model == "from-flag"
    assert settings.llm.temperature == 0.7  # the file's, untouched by the flag layer
    assert settings.llm.max_tokens == 1024  # the default's, untouched by the file
    assert settings.execution.timeouts.agent == 90
    assert settings.execution.timeouts.phase == 3600  # deep merge keeps the sibling
    assert settings.execution.checkpoint == "agent"


def test_config_path_replaces_the_workspace_file(tmp_path: Path) -> None:
    write(tmp_path / "pliny.yaml", "this: is ignored when --config is given\n")
    other = write(tmp_path / "team.yaml", "llm:\n  model: team-model\n")
    assert load_settings(tmp_path, other).llm.model == "team-model"


def test_missing_config_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_settings(tmp_path, tmp_path / "nope.yaml")


def test_empty_workspace_file_means_defaults(tmp_path: Path) -> None:
    write(tmp_path / "pliny.yaml", "# nothing yet\n")
    assert load_settings(tmp_path) == load_settings(None)


def test_bad_flag_value_names_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, None, {"execution": {"checkpoint": "sometimes"}})
    assert str(info.value).startswith("command line:1:1: execution.checkpoint: Input should be")


def test_partial_retry_strategies_keep_the_other_categories(tmp_path: Path) -> None:
    # Setting one category must not drop the others: the engine looks them up by name.
    write(
        tmp_path / "pliny.yaml",
        """
        error_handling:
          retry_strategies:
            tool:
              max_retries: 9
    """,
    )
    strategies = load_settings(tmp_path).error_handling.retry_strategies
    assert strategies["tool"].max_retries == 9
    assert set(strategies) == ALL_STRATEGIES
    assert strategies["network"].max_retries == 5


# -- durations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("90s", 90),
        ("30m", 1800),
        ("1.5h", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("45", 45),
        (" 10 m ", 600),
        (12, 12),
        (None, None),
    ],
)
def test_durations(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_duration_in_yaml_and_its_error(tmp_path: Path) -> None:
    write(tmp_path / "pliny.yaml", "sessions:\n  state_retention: 30d\n")
    assert load_settings(tmp_path).sessions.state_retention == 30 * 86400
    message = error(
        tmp_path,
        """
        execution:
          timeouts:
            agent: 5 minutes
    """,
    )
    assert message == (
        f"{tmp_path / 'pliny.yaml'}:3:12: execution.timeouts.agent: "
        "expected a duration like 30s, 5m, 1h or 30d, got '5 minutes'"
    )


# -- unknown keys and wrong values, at several depths ----------------------------------


@pytest.mark.parametrize(
    ("text", "where", "path"),
    [
        ("lmm:\n  model: x\n", "1:1", "lmm"),
        ("llm:\n  modle: x\n", "2:3", "llm.modle"),
        ("execution:\n  timeouts:\n    agnt: 5m\n", "3:5", "execution.timeouts.agnt"),
        (
            "error_handling:\n  retry_strategies:\n    network:\n      max_retry: 3\n",
            "4:7",
            "error_handling.retry_strategies.network.max_retry",
        ),
        (
            "budgets:\n  phases:\n    research:\n      max_cost: 1\n",
            "4:7",
            "budgets.phases.research.max_cost",
        ),
        (
            "pricing:\n  my-model:\n    input: 1\n    output: 2\n    cache: 1\n",
            "5:5",
            "pricing.my-model.cache",
        ),
        (
            "alerts:\n  - metric: cost_usd\n    operator: gt\n    threshold: 1\n    comand: x\n",
            "5:5",
            "alerts.0.comand",
        ),
    ],
)
def test_unknown_keys_point_at_the_key(tmp_path: Path, text: str, where: str, path: str) -> None:
    message = error(tmp_path, text)
    assert message == f"{tmp_path / 'pliny.yaml'}:{where}: {path}: unknown key (typo?)"


def test_unknown_retry_category_points_at_its_key(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """
        error_handling:
          retry_strategies:
            netwrk:
              max_retries: 3
    """,
    )
    assert message.startswith(f"{tmp_path / 'pliny.yaml'}:3:5: error_handling.retry_strategies")
    assert "netwrk" in message


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("execution:\n  max_concurrency: lots\n", "2:20", "valid integer"),
        ("execution:\n  max_concurrency: 0\n", "2:20", "greater than or equal to 1"),
        ("execution:\n  checkpoint: always\n", "2:15", "'phase', 'agent', 'step' or 'none'"),
        ("llm:\n  temperature: 3\n", "2:16", "less than or equal to 2"),
        ("llm:\n  model: a\n  model: b\n", "3:3", "duplicate key 'model'"),
        ("llm:\n  model: [a\n", "3:1", "invalid YAML"),
        ("- a\n- b\n", "1:1", "expected a mapping at the top level"),
    ],
)
def test_bad_values_carry_file_line_col(
    tmp_path: Path, text: str, where: str, expected: str
) -> None:
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'pliny.yaml'}:{where}: ")
    assert expected in message


# -- YAML merge keys --------------------------------------------------------------


def test_merge_keys_share_settings_and_explicit_keys_win(tmp_path: Path) -> None:
    write(
        tmp_path / "pliny.yaml",
        """
        error_handling:
          retry_strategies:
            network: &patient
              max_retries: 7
              backoff: linear
              initial_delay: 100
            system:
              <<: *patient
              max_retries: 1
    """,
    )
    strategies = load_settings(tmp_path).error_handling.retry_strategies
    assert (strategies["system"].max_retries, strategies["system"].backoff) == (1, "linear")
    assert strategies["system"].initial_delay == 100
    assert strategies["network"].max_retries == 7


def test_typo_inside_a_merged_mapping_points_at_the_anchor(tmp_path: Path) -> None:
    write(
        tmp_path / "pliny.yaml",
        """
        budgets:
          phases:
            research: &limit
              max_tokenz: 1000
            identify:
              <<: *limit
    """,
    )
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    # One line per place the typo lands; both point at the line that has it.
    where = f"{tmp_path / 'pliny.yaml'}:4:7"
    assert str(info.value).splitlines() == [
        f"{where}: budgets.phases.research.max_tokenz: unknown key (typo?)",
        f"{where}: budgets.phases.identify.max_tokenz: unknown key (typo?)",
    ]
