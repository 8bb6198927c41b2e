"""LLM providers behind one small interface, chosen by name from settings.

The registry maps names to ``"module:Class"`` strings imported only when chosen, so an unused
SDK is never loaded. An unknown name fails at boot and lists the known ones.
"""

from __future__ import annotations

from microclaw.agent.providers.base import BaseProvider
from microclaw.config import AgentSettings
from microclaw.registry import load_class

PROVIDERS: dict[str, str] = {
    "": "microclaw.agent.providers.scripted:UnconfiguredProvider",
    "none": "microclaw.agent.providers.scripted:UnconfiguredProvider",
    "scripted": "microclaw.agent.providers.scripted:ScriptedProvider",
    "anthropic": "microclaw.agent.providers.anthropic:AnthropicProvider",
    "openai": "microclaw.agent.providers.openai:OpenAIProvider",
}


def load_provider(settings: AgentSettings) -> BaseProvider:
    """The provider named by ``agent.provider``; `ConfigError` for an unknown name."""
    cls = load_class(PROVIDERS, settings.provider, "agent.provider")
    return cls.from_settings(settings)
