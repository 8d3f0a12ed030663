"""Feedback drives a reviewed withdrawal, end to end (issue 13, "Done when" 1).

A platform node reports ``false_positive`` for a hash; the clearinghouse
lists it, reviews it into a withdrawal, publishes; the platform's mirror no
longer matches the hash and the report shows the resolving version.

Real parts only: two node homes made by the CLI, the clearinghouse served by
``federation serve`` (a subprocess on 127.0.0.1, port 0), and every step a
``python -m federation`` subprocess as an operator runs it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

FEED = "tid"
ORIGIN = "clearinghouse.test/feeds/tid"
H1 = "9e107d9d372bb6826bd81d3542a419d6"   # reported as a false positive, then withdrawn
H2 = "e4d909c290d0fb1ca068ffaddf22cbd0"   # stays


def cli(home: Path, *args: str, token: str | None = None, ok: bool | None = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, FEDERATION_HOME=str(home))
    env.pop("FEDERATION_TOKEN", None)
    if token is not None:
        env["FEDERATION_TOKEN"] = token
    r = subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                       timeout=60)
    if ok:
        assert r.returncode == 0, f"federation {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


class Served:
    """``federation serve --port 0`` of a home, stopped (by its pid) at the end."""

    def __init__(self, home: Path):
        env = dict(os.environ, FEDERATION_HOME=str(home))
        self.proc = subprocess.Popen([sys.executable, "-m", "federation", "serve", "--port", "0"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:  # bounded by the test's timeout
            m = re.search(r"on (http://127\.0\.0\.1:\d+)/feeds/", line)
            if m:
                self.url = m[1]
                return
        raise AssertionError(f"federation serve exited {self.proc.wait()} before serving")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def clearinghouse(tmp_path):
    home = tmp_path / "clearinghouse"
    out = cli(home, "feed", "create", FEED, "--origin", ORIGIN, "--access", "public").stdout
    vkey = re.search(r"vkey:\s+(\S+)", out)[1]
    batch = tmp_path / "v1.csv"
    batch.write_text(f"op,type,hash,case,labels,reason\nadd,md5,{H1},c-1,csam,\nadd,md5,{H2},c-2,csam,\n")
    cli(home, "publish", FEED, str(batch))
    tokens = {m: cli(home, "token", "issue", m, "--feed", FEED).stdout.split()[-1]
              for m in ("platform-a", "platform-b")}
    served = Served(home)
    yield home, vkey, tokens, served.url
    served.stop()


def test_false_positive_report_is_reviewed_into_a_withdrawal_the_mirror_applies(clearinghouse, tmp_path):
    ch, vkey, tokens, url = clearinghouse
    platform, other = tmp_path / "platform-a", tmp_path / "platform-b"
    for home in (platform, other):
        cli(home, "follow", FEED, "--url", f"{url}/feeds/{FEED}/", "--origin", ORIGIN, "--vkey", vkey)
        cli(home, "sync", FEED)
    assert cli(platform, "lookup", "md5", H1).returncode == 0  # it matches, wrongly

    # The platform reports it, to the publisher's URL (never to the followed URLs: a relay may be one).
    pub = f"{url}/feeds/{FEED}/"
    out = cli(platform, "feedback", "report", FEED, "--url", pub, "md5", H1, "false_positive", "--note", "a stock photo",
              "--label", "stock", "--json", token=tokens["platform-a"]).stdout
    mine = json.loads(out)["reports"][0]
    assert (mine["kind"], mine["hash"], mine["state"], mine["replayed"]) == ("false_positive", H1, "open", False)
    # Sent again: a replay (the id is derived from the content), not a second report.
    again = json.loads(cli(platform, "feedback", "report", FEED, "--url", pub, "md5", H1, "false_positive", "--note",
                           "a stock photo", "--label", "stock", "--json", token=tokens["platform-a"]).stdout)
    assert again["reports"][0]["id"] == mine["id"] and again["reports"][0]["replayed"] is True
    # Another member saw the same hash.
    cli(other, "feedback", "report", FEED, "--url", pub, "md5", H1, "seen", token=tokens["platform-b"])

    # The clearinghouse sees them aggregated, with who reported.
    listed = json.loads(cli(ch, "feedback", "list", FEED, "--json").stdout)["targets"]
    assert len(listed) == 1
    assert listed[0]["target"] == f"md5:{H1}" and listed[0]["counts"] == {"false_positive": 1, "seen": 1}
    assert listed[0]["members"] == ["platform-a", "platform-b"] and listed[0]["open"] == 2
    fp = json.loads(cli(ch, "feedback", "list", FEED, "--kind", "false_positive", "--json").stdout)["targets"]
    assert fp[0]["counts"] == {"false_positive": 1} and fp[0]["members"] == ["platform-a"]

    # Review: the withdrawal is published as version 2.
    out = cli(ch, "feedback", "review", FEED, "--withdraw", f"md5:{H1}").stdout
    assert f"published {FEED} version 2: 1 withdrawals" in out and "2 reports resolved" in out

    # The platform's mirror applies it: no match any more, the other hash still matches.
    cli(platform, "sync", FEED)
    r = cli(platform, "lookup", "md5", H1, ok=False)
    assert r.returncode == 1 and "no match" in r.stdout
    assert cli(platform, "lookup", "md5", H2).returncode == 0
    changes = [json.loads(line) for line in cli(platform, "changes", FEED).stdout.splitlines()]
    assert [(c["action"], c["hash"], c["version"]) for c in changes if c["action"] == "withdraw"] == \
        [("withdraw", H1, 2)]

    # The reporter reads the resolving version of its own report -- and only its own reports.
    status = json.loads(cli(platform, "feedback", "status", FEED, "--url", pub, "--json", token=tokens["platform-a"]).stdout)
    assert [(r["id"], r["state"], r["resolved_version"]) for r in status["reports"]] == [(mine["id"], "withdrawn", 2)]
    one = json.loads(cli(platform, "feedback", "status", FEED, "--url", pub, mine["id"], "--json",
                         token=tokens["platform-a"]).stdout)["reports"][0]
    assert one["resolved_version"] == 2 and one["note"] == "a stock photo"
    theirs = json.loads(cli(other, "feedback", "status", FEED, "--url", pub, "--json", token=tokens["platform-b"]).stdout)
    assert [r["kind"] for r in theirs["reports"]] == ["seen"] and "platform-a" not in json.dumps(theirs)
    r = cli(other, "feedback", "status", FEED, "--url", pub, mine["id"], token=tokens["platform-b"], ok=False)
    assert r.returncode == 2 and "no report" in r.stderr  # another member's report does not exist for it

    # Everything is in the audit log.
    audit = [json.loads(line) for line in cli(ch, "audit", "--feed", FEED).stdout.splitlines()]
    actions = [(a["action"], a["member"]) for a in audit]
    assert ("feedback", "platform-a") in actions and ("feedback", "platform-b") in actions
    review = [a for a in audit if a["action"] == "feedback-review"]
    assert len(review) == 1 and review[0]["detail"].startswith(f"version 2: withdrew md5:{H1}")


def test_a_missing_or_wrong_token_is_a_clear_error(clearinghouse, tmp_path):
    ch, vkey, tokens, url = clearinghouse
    platform = tmp_path / "p"
    feed_url = f"{url}/feeds/{FEED}/"
    r = cli(platform, "feedback", "report", FEED, "md5", H1, "seen", "--url", feed_url, ok=False)
    assert r.returncode == 2 and "no member token: set $FEDERATION_TOKEN" in r.stderr, r.stderr
    r = cli(platform, "feedback", "report", FEED, "md5", H1, "seen", "--url", feed_url,
            token="fedtok_aaaaaaaaaaaa_" + "A" * 43, ok=False)
    assert r.returncode == 2 and "refused the token (401" in r.stderr, r.stderr
    cli(ch, "token", "revoke", tokens["platform-a"].split("_")[1])
    r = cli(platform, "feedback", "report", FEED, "md5", H1, "seen", "--url", feed_url, token=tokens["platform-a"],
            ok=False)
    assert r.returncode == 2 and "refused the token (401" in r.stderr and "revoked" in r.stderr, r.stderr
    # Nothing was recorded by the refused requests.
    assert "no reports on tid" in cli(ch, "feedback", "list", FEED).stdout


def test_review_refuses_an_item_nobody_reported_and_publishes_nothing(clearinghouse, tmp_path):
    ch, _vkey, tokens, url = clearinghouse
    feed_url = f"{url}/feeds/{FEED}/"
    cli(tmp_path, "feedback", "report", FEED, "case", "c-2", "disputed", "--url", feed_url, token=tokens["platform-a"])
    r = cli(ch, "feedback", "review", FEED, "--withdraw", f"md5:{H1}", "--reject", "case:c-2", ok=False)
    assert r.returncode == 2 and f"md5:{H1}: no open report" in r.stderr
    assert "version 1" in cli(ch, "feed", "list").stdout  # nothing published
    out = cli(ch, "feedback", "review", FEED, "--reject", "case:c-2").stdout
    assert "rejected case:c-2: 1 reports closed" in out
    status = json.loads(cli(tmp_path, "feedback", "status", FEED, "--url", feed_url, "--json",
                            token=tokens["platform-a"]).stdout)["reports"]
    assert [(s["state"], s["resolved_version"]) for s in status] == [("rejected", None)]
