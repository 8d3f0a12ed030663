"""--log-json on every long-running command: JSON lines from python-json-logger, an access log for the
servers, and one line per sync outcome (applied, up to date, failed with its kind)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.note import Signer

from support.loopback import closed_port

pytestmark = pytest.mark.timeout(90)

LONG_RUNNING = [["serve"], ["sync"], ["export"], ["cosign", "run"], ["witness", "serve"], ["platform", "serve"]]


@pytest.mark.parametrize("command", LONG_RUNNING, ids=" ".join)
def test_every_long_running_command_takes_log_json(command):
    out = CliRunner().invoke(cli, [*command, "--help"]).output
    assert "--log-json" in out, command


def run(home, *args, check=True):
    env = dict(os.environ, FEDERATION_HOME=str(home))
    p = subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert not check or p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def json_lines(text: str) -> list[dict]:
    """Every non-empty line parsed as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_sync_outcomes_and_the_servers_access_log_are_json_lines(tmp_path):
    pub = tmp_path / "publisher"
    out = run(pub, "feed", "create", "tid", "--origin", "127.0.0.1/feeds/tid", "--access", "public").stdout
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    (tmp_path / "b.csv").write_text("op,type,hash,case,labels,reason\n"
                                    "add,md5,9e107d9d372bb6826bd81d3542a419d6,c-17,csam,\n")
    run(pub, "publish", "tid", str(tmp_path / "b.csv"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server_log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "federation", "serve", "--port", str(port), "--log-json"],
                              env=dict(os.environ, FEDERATION_HOME=str(pub)), stdout=subprocess.DEVNULL,
                              stderr=server_log)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        home = tmp_path / "platform"
        run(home, "follow", "tid", "--url", url + "/feeds/tid/", "--origin", "127.0.0.1/feeds/tid", "--vkey", vkey)
        first = json_lines(run(home, "sync", "--log-json").stderr)
        second = json_lines(run(home, "sync", "--log-json").stderr)
    finally:
        server.terminate()
        server.wait(timeout=10)
        server_log.close()
    (applied,) = [r for r in first if "outcome" in r]
    assert (applied["outcome"], applied["feed"], applied["version"], applied["old_version"]) == ("applied", "tid", 1, 0)
    assert applied["level"] == "info" and applied["logger"] == "federation.sync.outcome" and applied["ts"].endswith("Z")
    (same,) = [r for r in second if "outcome" in r]
    assert (same["outcome"], same["version"]) == ("up_to_date", 1)
    access = [r for r in json_lines((tmp_path / "serve.log").read_text()) if r["logger"] == "aiohttp.access"]
    assert any("GET /feeds/tid/checkpoint" in r["first_request_line"] and r["response_status"] == 200
               for r in access), access


def test_a_failed_sync_is_one_json_line_with_its_kind(tmp_path):
    home = tmp_path / "platform"
    run(home, "follow", "tid", "--url", f"http://127.0.0.1:{closed_port()}/feeds/tid/", "--origin",
        "127.0.0.1/feeds/tid", "--vkey", Signer.generate("127.0.0.1/feeds/tid").vkey)
    p = run(home, "sync", "--log-json", check=False)
    assert p.returncode == 3
    logged = [line for line in p.stderr.splitlines() if not line.startswith("tid: error (transport)")]
    (failed,) = [r for r in json_lines("\n".join(logged)) if "outcome" in r]  # the CLI's own line aside
    assert (failed["outcome"], failed["kind"], failed["level"]) == ("failed", "transport", "warning")
