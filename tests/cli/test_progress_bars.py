"""Progress of sync, publish and export: tqdm on stderr, on a terminal or when asked (--progress), with a
total and a percentage (sync: from the accepted checkpoint's size), and the summary never drawn over it."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request

import pytest

pytestmark = pytest.mark.timeout(120)

ROWS = 300


def run(home, *args, check=True, input=None):
    env = dict(os.environ, FEDERATION_HOME=str(home))
    p = subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                       timeout=60, input=input)
    assert not check or p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def on_a_terminal(home, *args) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on one pseudo-terminal, as a user sees it; (exit code, screen bytes)."""
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    env = dict(os.environ, FEDERATION_HOME=str(home), COLUMNS="120")
    p = subprocess.Popen([sys.executable, "-m", "federation", *args], env=env, stdin=subprocess.DEVNULL,
                         stdout=sub, stderr=sub)
    os.close(sub)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
    os.close(main)
    return p.wait(timeout=10), out.decode(errors="replace")


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows at the end: carriage returns move to column 0 and later text overwrites."""
    lines, line, col = [], [], 0
    for ch in raw:
        if ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    lines.append("".join(line).rstrip())
    return [x for x in lines if x]


def batch_csv(path, n: int, start: int = 0):
    path.write_text("op,type,hash,case,labels,reason\n"
                    + "".join(f"add,md5,{i:032x},c-{i},csam,\n" for i in range(start, start + n)))
    return path


@pytest.fixture
def served(tmp_path):
    """A publisher home with two versions (2 x ROWS adds), served by `federation serve` on loopback."""
    pub = tmp_path / "publisher"
    out = run(pub, "feed", "create", "tid", "--origin", "127.0.0.1/feeds/tid", "--access", "public").stdout
    vkey = re.search(r"vkey:\s+(\S+)", out)[1]
    run(pub, "publish", "tid", str(batch_csv(tmp_path / "b1.csv", ROWS)))
    run(pub, "publish", "tid", str(batch_csv(tmp_path / "b2.csv", ROWS, ROWS)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "federation", "serve", "--port", str(port)],
                              env=dict(os.environ, FEDERATION_HOME=str(pub)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/feeds/tid/"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "checkpoint", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    size = int(urllib.request.urlopen(url + "checkpoint", timeout=5).read().split(b"\n")[1])
    yield pub, url, vkey, size
    server.terminate()
    server.wait(timeout=10)


def follow(home, url, vkey):
    run(home, "follow", "tid", "--url", url, "--origin", "127.0.0.1/feeds/tid", "--vkey", vkey)


def test_sync_progress_shows_the_total_from_the_checkpoint_and_a_percentage(served, tmp_path):
    _, url, vkey, size = served
    home = tmp_path / "platform"
    follow(home, url, vkey)
    p = run(home, "sync", "--progress")
    assert f"{size}/{size}" in p.stderr and "100%" in p.stderr, p.stderr  # entries of 2 versions, of the total
    assert p.stdout == f"tid: version 0 -> 2, size 0 -> {size}\n"


def test_no_bar_in_a_pipe_unless_asked(served, tmp_path):
    _, url, vkey, _ = served
    home = tmp_path / "platform"
    follow(home, url, vkey)
    p = run(home, "sync")
    assert "\r" not in p.stderr and "%" not in p.stderr, p.stderr


def test_on_a_terminal_the_summary_is_not_drawn_over_the_bar(served, tmp_path):
    _, url, vkey, size = served
    home = tmp_path / "platform"
    follow(home, url, vkey)
    code, screen = on_a_terminal(home, "sync")
    assert code == 0, screen
    assert "sync tid" in screen and f"/{size}" in screen and "%" in screen, screen  # drawn unasked
    # At the end the bar is gone and the summary stands alone on its line: nothing drawn over it,
    # and no log line glued to a bar.
    assert screen_lines(screen) == [f"tid: version 0 -> 2, size 0 -> {size}"], repr(screen)


def test_publish_shows_how_much_of_the_batch_was_read(tmp_path):
    pub = tmp_path / "publisher"
    run(pub, "feed", "create", "tid", "--origin", "127.0.0.1/feeds/tid")
    batch = batch_csv(tmp_path / "big.csv", 2000)
    p = run(pub, "publish", "tid", str(batch), "--progress")
    assert "publish tid" in p.stderr and "100%" in p.stderr, p.stderr
    assert p.stdout.startswith("published tid version 1: 2000 adds")
    p = run(pub, "publish", "tid", "-", "--format", "jsonl", "--progress",
            input='{"op":"withdraw","case":"c-1","reason":"other"}\n')  # stdin: no total, still a count
    assert "publish tid" in p.stderr and p.stdout.startswith("published tid version 2")


def test_export_shows_its_files(served, tmp_path):
    pub, _, _, _ = served
    p = run(pub, "export", str(tmp_path / "static"), "--progress")
    assert "export tid" in p.stderr and "100%" in p.stderr, p.stderr
    assert p.stdout.startswith("tid: size ")
