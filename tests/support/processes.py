"""``federation`` servers as real processes: started on a free loopback port,
waited for, and stopped with a signal, each step bounded in time.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_BOUND = 20.0  # seconds for a server process to listen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_run(home: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``federation --home HOME ARGS`` to completion, bounded."""
    proc = subprocess.run([sys.executable, "-m", "federation", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"federation {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path  # its stderr

    def stop(self, sig: int = signal.SIGTERM, bound: float = 10.0) -> float:
        """Send ``sig``; return the seconds until the process exited (killed past ``bound``)."""
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(bound)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return time.monotonic() - began

    def stderr(self) -> str:
        return self.log.read_text()


def start_server(home: Path, *args: str, port: int, log: Path, env: dict | None = None) -> Server:
    """``federation --home HOME ARGS`` as a server listening on ``port``;
    returns once the port accepts connections."""
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "federation", "--home", str(home), *args],
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + START_BOUND
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Server(proc, f"http://127.0.0.1:{port}", log)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(5)
                raise AssertionError(f"federation {' '.join(args)} did not start: {log.read_text()}")
            time.sleep(0.05)  # waiting on another process's bind; no event to await
