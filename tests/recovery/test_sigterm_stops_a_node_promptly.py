"""SIGTERM stops a server within 2 s, long-polls held or not (issue 14).

A held long-poll is answered with the current checkpoint (as on its
timeout), not dropped; the log says which signal stopped the node and that
it stopped.
"""
from __future__ import annotations

import threading
import urllib.request

from support.processes import cli_run, free_port, start_server

STOP_BOUND = 2.0  # seconds: docs/node.md's promise


def _hold_long_polls(url: str, after: int, n: int) -> tuple[list, list[threading.Thread]]:
    answers: list = []

    def poll():
        try:
            with urllib.request.urlopen(f"{url}?wait=30&after={after}", timeout=40) as r:
                answers.append((r.status, r.read()))
        except Exception as e:  # noqa: BLE001 -- recorded, and the test asserts on it
            answers.append(e)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return answers, threads


def test_sigterm_ends_serve_within_two_seconds_answering_held_long_polls(tmp_path):
    home = tmp_path / "home"
    cli_run(home, "feed", "create", "tid", "--access", "public")
    (tmp_path / "b.csv").write_text("op,type,hash,case\nadd,md5," + "ab" * 16 + ",c-1\n")
    cli_run(home, "publish", "tid", str(tmp_path / "b.csv"))
    port = free_port()
    server = start_server(home, "serve", "--port", str(port), port=port, log=tmp_path / "serve.log")
    checkpoint = f"{server.url}/feeds/tid/checkpoint"
    with urllib.request.urlopen(checkpoint, timeout=10) as r:
        current = r.read()
    size = int(current.split(b"\n")[1])
    answers, threads = _hold_long_polls(checkpoint, size, 3)
    # Give the requests time to reach the server and be held (there is no
    # event to await across processes); they are held for 30 s otherwise.
    for t in threads:
        t.join(0.5)
    assert all(t.is_alive() for t in threads), "the long-polls were answered before the signal"
    took = server.stop()
    for t in threads:
        t.join(5)
    assert server.proc.returncode == 0
    assert took < 2.0, f"SIGTERM took {took:.2f} s"
    assert answers == [(200, current)] * 3
    log = server.stderr()
    assert "received SIGTERM: stopping" in log and "stopped in" in log
    assert "answered 3 held long-poll(s)" in log
