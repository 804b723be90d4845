"""Settings: the layered config model, line-aware YAML, bundled resources."""
