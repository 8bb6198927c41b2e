"""The providers registry and the [agent] settings that choose a provider."""

from __future__ import annotations

import importlib

import pytest

from microclaw.agent.providers import PROVIDERS, load_provider
from microclaw.agent.providers.anthropic import AnthropicProvider
from microclaw.agent.providers.base import BaseProvider
from microclaw.agent.providers.openai import OpenAIProvider
from microclaw.config import AgentSettings, load_settings
from microclaw.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_registry_string_imports_a_provider(name: str) -> None:
    module, _, attr = PROVIDERS[name].partition(":")
    assert issubclass(getattr(importlib.import_module(module), attr), BaseProvider)


def test_unknown_provider_names_the_setting_and_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"agent\.provider.*'anthropic'.*'openai'") as info:
        load_provider(AgentSettings(provider="gemini"))
    assert info.value.key == "agent.provider"


def test_missing_keys_fail_at_boot_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_provider(AgentSettings(provider="anthropic"))
    assert info.value.key == "ANTHROPIC_API_KEY"
    with pytest.raises(ConfigError) as info:
        load_provider(AgentSettings(provider="openai"))
    assert info.value.key == "OPENAI_API_KEY"


def test_settings_build_the_provider() -> None:
    provider = load_provider(AgentSettings(provider="anthropic", api_key="k", model="claude-haiku-4-5"))
    assert isinstance(provider, AnthropicProvider) and provider.model == "claude-haiku-4-5"
    local = load_provider(AgentSettings(provider="openai", base_url="http://127.0.0.1:11434/v1"))
    assert isinstance(local, OpenAIProvider) and local.model == "gpt-4o-mini"


def test_agent_settings_come_from_the_usual_environment_variables(isolated_env, monkeypatch) -> None:
    monkeypatch.setenv("MICROCLAW_AGENT__PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPENAI_MODEL", "qwen2.5")
    agent = load_settings().agent
    assert (agent.api_key, agent.base_url, agent.model) == (
        "sk-secret",
        "http://127.0.0.1:8000/v1",
        "qwen2.5",
    )
    assert "sk-secret" not in repr(agent)
    monkeypatch.setenv("MICROCLAW_AGENT__MODEL", "llama3.2")
    assert load_settings().agent.model == "llama3.2"  # settings win over the env default


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_STEPS", "0"),
        ("RUN_TIMEOUT_S", "nope"),
        ("BASE_URL", "localhost:11434"),
        ("DAILY_TOKEN_BUDGET", "-1"),
    ],
)
def test_bad_agent_values_name_the_key(isolated_env, monkeypatch, key: str, value: str) -> None:
    monkeypatch.setenv(f"MICROCLAW_AGENT__{key}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == f"agent.{key.lower()}"
