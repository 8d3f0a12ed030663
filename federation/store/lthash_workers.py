"""Hashing LtHash16 elements in worker processes, for big writes (a large
publish, a snapshot bootstrap), so the caller's core stays free for SQLite.

``ParallelSum`` feeds ``python -m federation.store.lthash_workers`` worker
processes (``main``) over pipes. Protocol on a worker's stdin/stdout, one
request at a time, in order:

* request: u32 big-endian length, then msgpack ``[kind, items]`` where kind
  is ``"e"`` (items are elements, bytes) or ``"r"`` (items are records
  ``[hash_type, value, case, labels]``, turned into elements with
  ``entries.elements_of``);
* response: 2,048 bytes, the 1,024 lane sums modulo 2**16 as little-endian
  uint16 (an LtHash16 digest of the batch).

A separate interpreter started with ``-m`` (not ``multiprocessing``) never
re-imports the caller's ``__main__``, so scripts without a main guard work.
"""
from __future__ import annotations

import os
import subprocess
import sys

import msgpack
import numpy as np

from federation.core.entries import elements_of
from federation.core.errors import StorageError
from federation.core.lthash import DIGEST_BYTES, LANES, LtHash16, _lane_sum


class ParallelSum:
    """Accumulates ``LtHash16().add(elements)`` over many batches, hashing in
    worker processes so that the caller's core stays free (for SQLite, in a
    bootstrap or a large publish). SHAKE-256 is ~5 us per element and holds
    the GIL, so threads would not help; processes do.

    Workers are ``python -m federation.store.lthash_workers`` subprocesses fed
    over pipes (``main`` below), not ``multiprocessing``: they never re-import
    the caller's ``__main__``. The result is identical to
    ``LtHash16().add(all elements)``, since lane sums are order-independent.
    At most two batches per worker are in flight, which bounds memory.
    ``workers=0`` hashes in this process (start-up costs ~0.1 s).
    """

    MAX_IN_FLIGHT = 2

    def __init__(self, workers: int = 1):
        self._total = np.zeros(LANES, dtype=np.uint16)
        self._procs = [subprocess.Popen([sys.executable, "-m", "federation.store.lthash_workers"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                       for _ in range(workers)]
        self._pending: list = []  # (proc) in submission order
        self._next = 0

    def _submit(self, kind: str, items: list) -> None:
        proc = self._procs[self._next % len(self._procs)]
        self._next += 1
        while sum(1 for p in self._pending if p is proc) >= self.MAX_IN_FLIGHT:
            self._collect_one()
        frame = msgpack.packb([kind, items], use_bin_type=True)
        try:
            proc.stdin.write(len(frame).to_bytes(4, "big") + frame)
            proc.stdin.flush()
        except BrokenPipeError:
            raise StorageError("LtHash worker process died") from None  # local: retry, nothing was applied
        self._pending.append(proc)

    def _collect_one(self) -> None:
        proc = self._pending.pop(0)
        data = proc.stdout.read(DIGEST_BYTES)
        if len(data) != DIGEST_BYTES:
            raise StorageError(f"LtHash worker process died (exit code {proc.poll()})")
        self._total += np.frombuffer(data, dtype="<u2")

    def add(self, elements: list[bytes]) -> None:
        if not self._procs:
            self._total += _lane_sum(elements)
        else:
            self._submit("e", elements)

    def add_records(self, records: list[tuple[str, bytes, str, tuple[str, ...]]]) -> None:
        """Add the elements of (hash_type, value, case, labels) records,
        computing the elements in the worker too."""
        if not self._procs:
            self._total += _lane_sum(elements_of(records))
        else:
            self._submit("r", [list(r) for r in records])

    def result(self) -> "LtHash16":
        """Wait for every batch; return the digest of all elements added."""
        while self._pending:
            self._collect_one()
        d = LtHash16()
        d._lanes = self._total.copy()
        return d

    def close(self) -> None:
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 -- TimeoutExpired, or interrupted: never leave a worker behind
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self._procs = []
        self._pending = []

    def __enter__(self) -> "ParallelSum":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- the worker process ------------------------------------------------------------


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return  # parent closed the pipe
        kind, items = msgpack.unpackb(stdin.read(int.from_bytes(head, "big")), raw=False)
        elements = items if kind == "e" else elements_of([(t, v, c, tuple(labels)) for t, v, c, labels in items])
        stdout.write(_lane_sum(elements).astype("<u2").tobytes())
        stdout.flush()


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # The parent stopped reading (its publish or bootstrap failed and it
        # closed the pipes): nothing to report. Silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
