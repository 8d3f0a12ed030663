"""Tests that need a system tool (Go, nginx) outside Python.

On a developer's machine with only Python they are skipped with the install
hint; CI sets FEDERATION_REQUIRE_SYSTEM_TOOLS=1 (see .ci/run), which turns a
missing tool into a failure, so CI always runs them.
"""
import os

import pytest


def require_system_tool(present: bool, what: str, hint: str) -> None:
    if present:
        return
    message = f"{what} is not installed: {hint}"
    if os.environ.get("FEDERATION_REQUIRE_SYSTEM_TOOLS"):
        pytest.fail(message + " (FEDERATION_REQUIRE_SYSTEM_TOOLS is set)", pytrace=False)
    pytest.skip(message)
