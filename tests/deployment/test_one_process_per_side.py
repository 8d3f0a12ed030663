"""The README's two deployments, each one process (issue 14, "Done when").

A clearinghouse node (``serve --config``) publishes a members-only feed. A
platform node (``serve --config`` with ``[[follow]] token_env`` and
``[platform]``) follows it with a member token from its environment, and
from the same process answers lookups behind its own platform tokens,
delivers webhooks and serves ``/metrics``. ``kill -TERM`` stops each within
2 s, the clearinghouse while the platform's follower holds a long-poll.
"""
from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request

from support.processes import cli_run, free_port, start_server

ORIGIN = "clearinghouse.example/feeds/ncii"
FIRST, SECOND = "ab" * 16, "cd" * 16
BOUND = 30.0  # seconds for the platform to see what the clearinghouse published


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _until(what: str, check, bound: float = BOUND):
    deadline = time.monotonic() + bound
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound} s: {what}")
        time.sleep(0.1)  # another process's progress: no event to await


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self):  # noqa: N802 -- http.server's naming
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _publish(home, tmp_path, value: str) -> None:
    batch = tmp_path / f"{value}.csv"
    batch.write_text(f"op,type,hash,case,labels\nadd,md5,{value},c-{value[:4]},ncii\n")
    cli_run(home, "publish", "ncii", str(batch))


def test_a_clearinghouse_and_a_platform_each_run_as_one_process(tmp_path):
    # The clearinghouse: one members-only feed, a member token for the platform.
    ch = tmp_path / "clearinghouse"
    out = cli_run(ch, "feed", "create", "ncii", "--origin", ORIGIN).stdout
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    _publish(ch, tmp_path, FIRST)
    member = cli_run(ch, "token", "issue", "platform-a", "--feed", "ncii").stdout.split()[-1]
    ch_port = free_port()
    (tmp_path / "clearinghouse.toml").write_text(
        f'[node]\nlisten = "127.0.0.1:{ch_port}"\nhome = "clearinghouse"\n\n[[publish]]\nname = "ncii"\napi = false\n')

    # The platform: follows with the token from its environment, serves the platform API.
    pf = tmp_path / "platform"
    pf_port = free_port()
    (tmp_path / "platform.toml").write_text(
        f'[node]\nlisten = "127.0.0.1:{pf_port}"\nhome = "platform"\n\n'
        f'[[follow]]\nname = "ncii"\norigin = "{ORIGIN}"\nvkeys = ["{vkey}"]\n'
        f'urls = ["http://127.0.0.1:{ch_port}/feeds/ncii/"]\ntoken_env = "NCII_TOKEN"\nwait = 10\n\n'
        '[platform]\n')
    api_token = cli_run(pf, "platform", "token", "issue", "moderation").stdout.split()[-1]
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    cli_run(pf, "platform", "webhook", "add", "moderation", hook)

    clearinghouse = start_server(ch, "serve", "--config", str(tmp_path / "clearinghouse.toml"), port=ch_port,
                                 log=tmp_path / "clearinghouse.log")
    platform = None
    try:
        platform = start_server(pf, "serve", "--config", str(tmp_path / "platform.toml"), port=pf_port,
                                log=tmp_path / "platform.log", env={"NCII_TOKEN": member})
        base = platform.url
        # Lookups: the platform's own tokens, nothing without one, member tokens refused.
        assert _get(f"{base}/lookup/md5/{FIRST}")[0] == 401
        assert _get(f"{base}/lookup/md5/{FIRST}", member)[0] in (401, 403)
        status, body = _until("the first hash is served", lambda: (
            r if (r := _get(f"{base}/lookup/md5/{FIRST}", api_token))[0] == 200 else None))
        answer = json.loads(body)
        assert answer["matched"] and answer["matches"][0]["feed"] == "ncii"
        # A second publish reaches the platform through its follower's long-poll,
        # and its webhook delivers it.
        _publish(ch, tmp_path, SECOND)
        _until("the webhook delivered the second hash", lambda: any(SECOND.encode() in b for b in _Receiver.bodies))
        assert _get(f"{base}/lookup/md5/{SECOND}", api_token)[0] == 200
        # One sync loop, counted in the platform's /metrics.
        status, metrics = _get(f"{base}/metrics", api_token)
        assert status == 200
        assert b'federation_feed_version{feed="ncii"} 2.0' in metrics
        assert b'federation_feed_last_sync_failed{feed="ncii"} 0.0' in metrics
        assert b'federation_sync_duration_seconds_count{feed="ncii"}' in metrics
        assert b'federation_webhook_attempts_total{result="ok",webhook="moderation"}' in metrics
        # The clearinghouse's read side still needs the member token.
        assert _get(f"http://127.0.0.1:{ch_port}/feeds/ncii/checkpoint")[0] == 401

        # kill -TERM: the clearinghouse while the platform's follower holds a long-poll.
        took = clearinghouse.stop()
        assert took < 2.0 and clearinghouse.proc.returncode == 0, (took, clearinghouse.stderr())
        assert "received SIGTERM: stopping" in clearinghouse.stderr()
        assert "held long-poll" in clearinghouse.stderr()
        took = platform.stop()
        assert took < 2.0 and platform.proc.returncode == 0, (took, platform.stderr())
        assert "received SIGTERM: stopping" in platform.stderr() and "stopped in" in platform.stderr()
    finally:
        for server in (clearinghouse, platform):
            if server is not None and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(5)
        receiver.shutdown()
