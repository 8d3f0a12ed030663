"""Worker process for ``lthash.ParallelSum`` (run as ``python -m federation.lthash_worker``).

Protocol on stdin/stdout, one request at a time, in order:

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

import sys

import msgpack

from federation.core.entries import elements_of
from federation.core.lthash import _lane_sum


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
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
