"""Endpoint selection: a pure function over settings and an env mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from pliny.config.settings import LLMSettings, LocalModel, load_settings
from pliny.errors import ConfigError
from pliny.llm.endpoint import LOCAL_ALIAS, NO_KEY, host_of, local_model_name, resolve

SECRET = "sk-test-0123456789abcdef"


def test_nothing_configured_uses_the_embedded_model() -> None:
    choice = resolve(LLMSettings(), {})
    assert choice.kind == "local"
    assert choice.single_stream is True
    assert choice.model == LOCAL_ALIAS
    assert choice.base_url is None  # filled in by served_at() once the server runs
    assert "OPENAI_BASE_URL" in choice.reason and "OPENAI_API_KEY" in choice.reason


def test_api_key_in_env_selects_openai() -> None:
    choice = resolve(LLMSettings(model="gpt-4o"), {"OPENAI_API_KEY": SECRET})
    assert (choice.kind, choice.base_url, choice.api_key, choice.model) == (
        "remote",
        None,
        SECRET,
        "gpt-4o",
    )
    assert choice.single_stream is False
    assert choice.host == "api.openai.com"
    assert "OPENAI_API_KEY" in choice.reason


def test_base_url_in_env_needs_no_key() -> None:
    choice = resolve(LLMSettings(), {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert choice.kind == "remote"
    assert choice.base_url == "http://127.0.0.1:11434/v1"
    assert choice.api_key == NO_KEY and choice.key_status == "not needed"
    assert "OPENAI_BASE_URL" in choice.reason


def test_config_base_url_wins_over_env() -> None:
    llm = LLMSettings(base_url="http://vllm.internal:8000/v1")
    env = {"OPENAI_BASE_URL": "http://other:1/v1", "OPENAI_API_KEY": SECRET}
    choice = resolve(llm, env)
    assert choice.base_url == "http://vllm.internal:8000/v1"
    assert choice.api_key == SECRET
    assert "llm.base_url" in choice.reason


def test_config_base_url_without_key_uses_placeholder() -> None:
    choice = resolve(LLMSettings(base_url="http://localhost:8080/v1"), {})
    assert choice.kind == "remote" and choice.api_key == NO_KEY


def test_custom_key_env_is_the_one_read() -> None:
    llm = LLMSettings(api_key_env="MY_LLM_KEY")
    assert resolve(llm, {"MY_LLM_KEY": SECRET}).api_key == SECRET
    # OPENAI_API_KEY is not the configured key variable: it neither selects nor leaks.
    choice = resolve(llm, {"OPENAI_API_KEY": "sk-other"})
    assert choice.kind == "local" and "MY_LLM_KEY" in choice.reason


@pytest.mark.parametrize("env", [{"OPENAI_API_KEY": SECRET}, {"OPENAI_BASE_URL": "http://x/v1"}])
def test_local_flag_and_provider_beat_everything(env: dict[str, str]) -> None:
    remote_cfg = LLMSettings(base_url="http://vllm:8000/v1")
    assert resolve(remote_cfg, env, model_flag="local").kind == "local"
    forced = resolve(LLMSettings(provider="local", base_url="http://vllm:8000/v1"), env)
    assert forced.kind == "local" and "provider" in forced.reason


def test_provider_openai_without_endpoint_says_which_variable() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(LLMSettings(provider="openai", api_key_env="ACME_KEY"), {})
    assert "ACME_KEY" in str(err.value)
    assert resolve(LLMSettings(provider="openai"), {"OPENAI_API_KEY": SECRET}).kind == "remote"


def test_blank_env_values_count_as_unset() -> None:
    assert resolve(LLMSettings(), {"OPENAI_API_KEY": "  ", "OPENAI_BASE_URL": ""}).kind == "local"


def test_model_flag_renames_the_remote_model() -> None:
    choice = resolve(LLMSettings(model="gpt-4o-mini"), {"OPENAI_API_KEY": SECRET}, "gpt-4.1")
    assert choice.model == "gpt-4.1"


def test_key_never_appears_in_repr_or_public_view() -> None:
    choice = resolve(LLMSettings(), {"OPENAI_API_KEY": SECRET})
    for text in (repr(choice), str(choice), f"{choice}", str(choice.public())):
        assert SECRET not in text
    assert choice.public()["api_key"] == "set"
    served = resolve(LLMSettings(), {}).served_at("http://127.0.0.1:5000/v1", SECRET)
    assert served.base_url == "http://127.0.0.1:5000/v1" and served.api_key == SECRET
    assert SECRET not in repr(served)


def test_workspace_config_file_drives_the_choice(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text(
        "llm:\n  base_url: http://gpu-box:8000/v1\n  model: qwen2.5\n  api_key_env: GPU_KEY\n"
    )
    choice = resolve(load_settings(tmp_path).llm, {"GPU_KEY": SECRET})
    assert (choice.kind, choice.base_url, choice.model, choice.api_key) == (
        "remote",
        "http://gpu-box:8000/v1",
        "qwen2.5",
        SECRET,
    )


def test_local_model_name_follows_a_custom_gguf() -> None:
    assert local_model_name(LLMSettings()) == LOCAL_ALIAS
    llm = LLMSettings(local=LocalModel(model_path="/models/Qwen2.5-0.5B-Q4.gguf"))
    assert local_model_name(llm) == "qwen2.5-0.5b-q4"
    assert resolve(llm, {}).model == "qwen2.5-0.5b-q4"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (None, "api.openai.com"),
        ("https://api.openai.com/v1", "api.openai.com"),
        ("https://user:pw@Example.COM:8443/v1?api_key=abc#x", "example.com:8443"),
        ("http://[::1]:8000/v1", "[::1]:8000"),
        ("http://localhost/v1", "localhost"),
        ("gpu-box:8000/v1", "gpu-box:8000"),
    ],
)
def test_host_of_keeps_only_host_and_port(url: str | None, host: str) -> None:
    assert host_of(url) == host
