"""``federation`` as a real process, run so that the test's loopback servers
keep serving while it runs; operator batch files.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

FEDERATION = str(Path(sys.executable).parent / "federation")
CLI_TIMEOUT = 60.0  # seconds; every CLI run in the tests is bounded by this


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``federation ARGS`` as a subprocess (the test's loopback servers keep
    serving while it runs); return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(FEDERATION, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    return proc.returncode, out.decode(), err.decode()


def write_batch(path: Path, n: int, case: str = "case1") -> Path:
    """A CSV batch of ``n`` random md5 additions."""
    rows = ["op,type,hash,case,labels,reason"] + [f"add,md5,{os.urandom(16).hex()},{case},csam," for _ in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path
