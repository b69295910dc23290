"""The one rule for a test whose real component (sshd, Chromium, a compiler, a dev package) is missing.

Outside CI the test is skipped with the reason; with CI=true it fails, because a test that needs a
component the CI image is meant to have must never skip there unnoticed.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the tests run in CI (CI=true, as GitHub Actions and most CI services set it)."""
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Fail with REASON in CI, skip with it elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this test may not skip in CI)", pytrace=False)
    pytest.skip(reason)
