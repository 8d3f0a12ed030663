"""Tests that need a system tool (Go, nginx) outside Python.

On a developer's machine with only Python they are skipped with the install
hint; CI sets FEDERATION_REQUIRE_SYSTEM_TOOLS=1 (see .ci/run), which turns a
missing tool into a failure, so CI always runs them.
"""
import importlib
import os

import pytest


def require_system_tool(present: bool, what: str, hint: str) -> None:
    if present:
        return
    message = f"{what} is not installed: {hint}"
    if os.environ.get("FEDERATION_REQUIRE_SYSTEM_TOOLS"):
        pytest.fail(message + " (FEDERATION_REQUIRE_SYSTEM_TOOLS is set)", pytrace=False)
    pytest.skip(message)


VPDQ_HINT = ("pip install -e '.[video]' (builds from source: apt-get install libavcodec-dev libavformat-dev "
             "libavdevice-dev libavfilter-dev libswresample-dev libswscale-dev libavutil-dev pkg-config cmake g++)")


def require_python_package(name: str, hint: str):
    """The module ``name``, or skip (fail under FEDERATION_REQUIRE_SYSTEM_TOOLS)
    when an optional extra that needs system libraries is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require_system_tool(False, f"the Python package {name!r}", hint)


def require_vpdq():
    """Meta's ``vpdq`` (the ``[video]`` extra): not in ``[test]``, so that the
    README's test command works on a machine with only Python."""
    return require_python_package("vpdq", VPDQ_HINT)
