"""The engine: the phase graph on LangGraph, the executor seam, agents, prompts, tools, cache."""
