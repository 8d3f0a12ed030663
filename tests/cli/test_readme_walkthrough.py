"""The README's walk-through, run as written: its batches, its commands, and the answers its comments promise.

The commands of the ``sh`` blocks under "Publisher side" and "Platform side"
run in order as real subprocesses in one node home, with ``serve`` in the
background (its port swapped for a free one, and the placeholder vkey for
the one ``feed create`` printed). ``batch.csv`` and ``withdraw.csv`` are the
README's own ``csv`` blocks. A ``lookup`` whose comment promises ``MATCH ...``
or ``no match`` must print exactly that, so the story the README tells (a
hash added, matched, withdrawn, no longer matched) stays true.
"""
from __future__ import annotations

import os
import socket
import re
import shlex
import subprocess
import sys
import time
import urllib.request

import pytest

from support.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(120)


def walkthrough() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(the named csv files, [(command, promised output or "")]) from the README's "Using it" section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("Publisher side:"):text.index("### Exit codes")]
    files = dict(re.findall(r"`(\w+\.csv)`[^\n]*:\n\n```csv\n(.*?)```", section, re.S))
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition("  #")
            commands.append((command.strip(), comment.strip()))
    return files, commands


def test_the_readme_walkthrough_tells_its_story(tmp_path):
    files, commands = walkthrough()
    assert set(files) == {"batch.csv", "withdraw.csv"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, FEDERATION_HOME=str(tmp_path / "home"))
    vkey, server, promised = None, None, []
    try:
        for command, comment in commands:
            argv = shlex.split(command.replace("8080", port))
            assert argv[0] == "federation", command
            if vkey:
                argv = [vkey if a == "clearinghouse.example/feeds/tid+…" else a for a in argv]
            argv = [sys.executable, "-m", "federation", *argv[1:]]
            if argv[3] == "serve":
                server = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                for _ in range(200):
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                        break
                    except OSError:
                        time.sleep(0.05)
                continue
            p = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            if argv[3] == "lookup":
                first = p.stdout.splitlines()[0]
                expect = comment.removesuffix(" (exit 1)")
                assert first == expect, (command, p.stdout, p.stderr)
                assert p.returncode == (1 if expect == "no match" else 0)
                promised.append(first)
                continue
            assert p.returncode == 0, (command, p.stdout, p.stderr)
            if argv[3:5] == ["feed", "create"]:
                vkey = re.search(r"vkey:\s+(\S+)", p.stdout)[1]
    finally:
        if server:
            server.terminate()
            server.wait(timeout=10)
    assert promised == ["MATCH feed=tid case=c-17 labels=csam,tid version=1", "no match"]
