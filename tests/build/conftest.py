"""Fixtures live in tests/conftest.py."""

from tests.conftest import write_target  # noqa: F401
