"""The CLI in a child process whose files may not grow past a size: a full
disk produced for real (``RLIMIT_FSIZE``; with ``SIGXFSZ`` ignored a write
past the limit fails with ``EFBIG``, as one on a full disk fails with
``ENOSPC``), and batch files for it to choke on.

These tests call the blocking CLI from async tests on purpose: the loopback
server runs in the test's event loop, so each call runs in a thread.
"""
from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

CLI_TIMEOUT = 60  # seconds, every run


def limited(max_file_bytes: int):
    """A ``preexec_fn``: files of the child may not grow past ``max_file_bytes``."""
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    return preexec


def cli(home: Path, *args: str, max_file_bytes: int | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m federation ARGS`` with ``FEDERATION_HOME=home``; with
    ``max_file_bytes``, no file it writes may grow past that many bytes."""
    env = dict(os.environ, FEDERATION_HOME=str(home))
    p = subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, preexec_fn=None if max_file_bytes is None else limited(max_file_bytes))
    if check and p.returncode != 0:
        raise AssertionError(f"federation {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


async def acli(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """``cli`` in a thread, so a server in this event loop keeps serving."""
    return await asyncio.to_thread(cli, home, *args, **kw)


def batch(path: Path, n: int, case: str) -> Path:
    """A CSV batch of ``n`` random md5 additions of ``case``."""
    rows = ["op,type,hash,case,labels,reason"] + [f"add,md5,{os.urandom(16).hex()},{case},csam," for _ in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def assert_clean_storage_failure(p: subprocess.CompletedProcess) -> None:
    """Exit 4, one ``error (storage)`` line naming the full disk, no traceback."""
    assert p.returncode == 4, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [x for x in p.stderr.splitlines() if "error (" in x]
    assert len(lines) == 1 and "error (storage)" in lines[0], p.stderr
    assert "cannot rollback" not in p.stderr
