"""The CLI as a user runs it: real subprocesses, a real server on loopback."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest


def run(home, *args, check=True, input=None, timeout=60):
    env = dict(os.environ, FEDERATION_HOME=str(home))
    p = subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                       input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"federation {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    pub_home = tmp_path / "publisher"
    out = run(pub_home, "feed", "create", "tid", "--origin", "127.0.0.1/feeds/tid",
              "--access", "public").stdout
    vkey = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    port = free_port()
    env = dict(os.environ, FEDERATION_HOME=str(pub_home))
    server = subprocess.Popen([sys.executable, "-m", "federation", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    else:
        server.kill()
        raise AssertionError("server did not start")
    yield pub_home, vkey, url
    server.terminate()
    server.wait(timeout=10)


def test_publish_follow_sync_lookup_withdraw(served, tmp_path):
    pub_home, vkey, url = served
    batch = tmp_path / "batch.csv"
    batch.write_text("op,type,hash,case,labels,reason\n"
                     "add,md5,9e107d9d372bb6826bd81d3542a419d6,c-17,csam;tid,\n"
                     "add,sha1,2fd4e1c67a2d28fced849ee1bb76e7391b93eb12,c-18,csam,\n")
    assert "version 1" in run(pub_home, "publish", "tid", str(batch)).stdout
    home = tmp_path / "platform"
    run(home, "follow", "tid", "--url", url + "/feeds/tid/", "--origin", "127.0.0.1/feeds/tid", "--vkey", vkey)
    assert "version 0 -> 1" in run(home, "sync").stdout
    hit = json.loads(run(home, "lookup", "md5", "9E107D9D372BB6826BD81D3542A419D6", "--json").stdout)
    assert hit["matched"] and hit["matches"][0]["case"] == "c-17"
    (basis,) = hit["based_on"]  # what the answer stands on
    assert (basis["feed"], basis["version"], basis["ready"]) == ("tid", 1, True) and 0 <= basis["age"] < 60
    run(pub_home, "publish", "tid", "-", "--format", "jsonl",
        input='{"op":"withdraw","case":"c-17","reason":"submitter_request"}\n')
    assert "version 1 -> 2" in run(home, "sync", "tid").stdout
    miss = run(home, "lookup", "md5", "9e107d9d372bb6826bd81d3542a419d6", check=False)
    assert miss.returncode == 1 and "no match" in miss.stdout
    assert run(home, "lookup", "sha1", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12").returncode == 0
    assert "ok (version 2" in run(home, "verify").stdout
    status = json.loads(run(home, "status", "--json").stdout)
    assert status["followed"][0]["version"] == 2 and status["followed"][0]["count"] == 1
    changes = [json.loads(x) for x in run(home, "changes", "tid").stdout.splitlines()]
    assert [c["action"] for c in changes] == ["add", "add", "withdraw"]


def test_sync_with_wrong_key_fails_with_signature(served, tmp_path):
    pub_home, vkey, url = served
    other = tmp_path / "other"
    out = run(other, "feed", "create", "x", "--origin", "127.0.0.1/feeds/tid").stdout
    wrong = next(line.split()[1] for line in out.splitlines() if line.startswith("vkey:"))
    home = tmp_path / "platform"
    run(home, "follow", "tid", "--url", url + "/feeds/tid/", "--origin", "127.0.0.1/feeds/tid", "--vkey", wrong)
    p = run(home, "sync", check=False)
    assert p.returncode == 1
    assert "error (signature)" in p.stderr
    assert "signature: " in json.loads(run(home, "status", "--json").stdout)["followed"][0]["last_error"]


def test_bad_input_exits_2_and_publishes_nothing(served, tmp_path):
    pub_home, _, _ = served
    bad = tmp_path / "bad.csv"
    bad.write_text("op,type,hash,case\nadd,md5,9e107d9d372bb6826bd81d3542a419d6,c\nadd,md5,nothex,c\n")
    p = run(pub_home, "publish", "tid", str(bad), check=False)
    assert p.returncode == 2 and "line 3" in p.stderr
    assert "version 0" in run(pub_home, "feed", "list").stdout


def test_unreachable_upstream_exits_3(tmp_path):
    home = tmp_path / "platform"
    from federation.core.note import Signer
    s = Signer.generate("a.example/f")
    run(home, "follow", "f", "--url", f"http://127.0.0.1:{free_port()}/feeds/f/", "--origin", "a.example/f",
        "--vkey", s.vkey)
    p = run(home, "sync", check=False)
    assert p.returncode == 3 and "error (transport)" in p.stderr


def test_demo_runs():
    p = subprocess.run([sys.executable, "-m", "federation", "demo"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no match -- withdrawal took effect" in p.stdout
    assert "PASS" in p.stdout


def test_serve_exposes_longpoll_snapshots_and_trust_routes(served, tmp_path):
    pub_home, vkey, url = served
    batch = tmp_path / "b.csv"
    batch.write_text("op,type,hash,case\nadd,md5,9e107d9d372bb6826bd81d3542a419d6,c-1\n")
    run(pub_home, "publish", "tid", str(batch))
    run(pub_home, "snapshot", "write", "tid")
    with urllib.request.urlopen(url + "/feeds/tid/snapshot/index", timeout=5) as r:
        index = json.loads(r.read())
    assert index["snapshots"] and index["snapshots"][0]["version"] == 1
    started = time.monotonic()
    with urllib.request.urlopen(url + "/feeds/tid/checkpoint?wait=0.5&after=2", timeout=5) as r:
        assert r.headers["Cache-Control"] == "no-store" and r.read().startswith(b"127.0.0.1/feeds/tid\n2\n")
    assert time.monotonic() - started >= 0.4  # held: nothing newer than size 2
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/feeds/tid/trust/latest", timeout=5)
    assert e.value.code == 404  # route present, no trust file published for this feed
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/feeds/tid/checkpoint?wait=abc", timeout=5)
    assert e.value.code == 400


def test_lost_key_rotation_of_a_feed_without_trust_chain_is_refused_and_changes_nothing(tmp_path):
    """Mirrors of a feed followed by vkey alone trust only the lost key:
    nothing in-band can vouch for a new one, so the switch is refused."""
    from federation.node.keys import load_signer
    from federation.store.publisher import Publisher
    home = tmp_path / "publisher"
    run(home, "feed", "create", "tid", "--origin", "127.0.0.1/feeds/tid")
    new_key = tmp_path / "new.key"
    p = run(home, "feed", "rotate-key", "tid", "--new-key", str(new_key), "--old-key-lost", check=False)
    assert p.returncode == 2 and "publishes no trust chain" in p.stderr, (p.stdout, p.stderr)
    pub = Publisher(next(home.rglob("publisher.db")))
    assert pub.feed("tid").vkey != load_signer(new_key).vkey
    pub.close()
