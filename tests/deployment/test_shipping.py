"""What ships besides the package: the Docker image's entrypoint and
Dockerfile, and the systemd units (docs/node.md).

No docker here: the entrypoint script runs directly (serve, healthcheck,
pass-through, a missing config), and the Dockerfile is checked for what the
image promises (non-root, the home as a volume, HEALTHCHECK through the
entrypoint). The units go through ``systemd-analyze verify``, which must
print nothing (it exits 0 on mere warnings).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from support.processes import free_port
from support.system_tools import require_system_tool

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
UNITS = ROOT / "deploy" / "systemd"
FEDERATION = Path(sys.executable).parent / "federation"


def _env(home: Path) -> dict:
    return {**os.environ, "FEDERATION_HOME": str(home), "FEDERATION_BIN": str(FEDERATION),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _entrypoint(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), *args], env=_env(home), capture_output=True, text=True, timeout=60)


def test_the_entrypoint_serves_the_homes_config_answers_its_healthcheck_and_stops_on_sigterm(tmp_path):
    home = tmp_path / "home"
    r = _entrypoint(home)
    assert r.returncode == 2 and "no node config" in r.stderr, r.stderr
    assert _entrypoint(home, "healthcheck").returncode == 2
    # Pass-through: any other command is the CLI's.
    r = _entrypoint(home, "feed", "create", "tid", "--access", "public")
    assert r.returncode == 0 and "created feed tid" in r.stdout, r.stderr
    port = free_port()
    (home / "node.toml").write_text(f'[node]\nlisten = "127.0.0.1:{port}"\n\n[[publish]]\nname = "tid"\n')
    r = _entrypoint(home, "healthcheck")
    assert r.returncode == 1 and "healthz" in r.stderr  # nothing listens yet
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([str(ENTRYPOINT)], env=_env(home), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while _entrypoint(home, "healthcheck").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)  # another process starting: no event to await
        # exec: the shell became the node, so the signal reaches it.
        began = time.monotonic()
        proc.terminate()
        proc.wait(10)
        assert time.monotonic() - began < 2.0 and proc.returncode == 0
        assert "received SIGTERM" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    # The node's files are the service user's alone (umask 077).
    assert (home / "publisher.db").stat().st_mode & 0o077 == 0


def test_the_dockerfile_runs_the_entrypoint_as_an_unprivileged_user_with_the_home_as_a_volume():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert 'VOLUME ["/var/lib/federation"]' in lines
    assert any(line.startswith("ENV FEDERATION_HOME=/var/lib/federation") for line in lines)
    assert 'CMD ["federation-entrypoint", "healthcheck"]' in text and "HEALTHCHECK" in text
    assert 'ENTRYPOINT ["federation-entrypoint"]' in lines  # exec form: the node is PID 1 and gets SIGTERM
    copied = re.search(r"^COPY (\S+) /usr/local/bin/federation-entrypoint$", text, re.M)
    assert copied and (ROOT / copied[1]).resolve() == ENTRYPOINT and os.access(ENTRYPOINT, os.X_OK)
    for src in re.findall(r"^COPY (.+) /src/", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), part


def test_the_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    require_system_tool(analyze is not None, "systemd-analyze", "apt-get install systemd")
    units = []
    for unit in sorted(UNITS.iterdir()):
        # verify checks that ExecStart's program exists: point it at this install.
        text = unit.read_text().replace("/usr/local/bin/federation", str(FEDERATION))
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    assert {Path(u).name for u in units} == {"federation-node.service", "federation-sync.service",
                                             "federation-sync.timer"}
    r = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    node = (UNITS / "federation-node.service").read_text()
    assert "ExecStart=/usr/local/bin/federation serve --config /etc/federation/node.toml" in node
    assert "User=federation" in node and "KillSignal=SIGTERM" in node
    assert "ExecStart=/usr/local/bin/federation sync" in (UNITS / "federation-sync.service").read_text()
