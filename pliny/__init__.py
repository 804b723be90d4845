"""Pliny: multi-agent LLM orchestration on YAML phase graphs."""

__version__ = "0.1.0"
