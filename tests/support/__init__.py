"""Helpers shared by the test files (the CLI runner); fixtures live in tests/conftest.py."""
