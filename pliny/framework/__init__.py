"""Frameworks: the phase-graph model loaded from YAML, and its renderers."""
