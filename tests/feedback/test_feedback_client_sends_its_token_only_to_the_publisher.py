"""A member's feedback token goes to the publisher it was issued by, and nowhere else;
a batch of reports larger than one request completes.

Real parts: the clearinghouse made by the CLI and served in-process on 127.0.0.1, a stand-in relay
on 127.0.0.1 that records what it is sent, the platform's `federation feedback` as a subprocess.
"""
from __future__ import annotations

import json

import pytest
from aiohttp import web

from support.loopback import start_app

from support.served_clearinghouse import FEED, H1, ORIGIN, clearinghouse, cli, ok, serve_home

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """A server that records each request's Authorization header and answers 404
    (a relay of a public feed: no feedback route), or redirects elsewhere."""

    def __init__(self, redirect_to: str | None = None):
        self.seen: list[str | None] = []
        self.redirect_to = redirect_to
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.headers.get("Authorization"))
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to + request.path_qs)
        return web.Response(status=404, text="no such route")


async def test_feedback_report_does_not_send_the_member_token_to_a_relay(tmp_path):
    ch, platform = tmp_path / "ch", tmp_path / "platform"
    vkey, tokens = await clearinghouse(ch, access="public")
    runner, url = await serve_home(ch)
    relay = Recorder()
    relay_runner, relay_url = await start_app(relay.app)
    try:
        # A public feed followed through a relay first (no token needed to read it),
        # with the publisher as the fallback: an ordinary set-up.
        await ok(platform, "follow", FEED, "--url", f"{relay_url}/feeds/{FEED}/", "--url", f"{url}/feeds/{FEED}/",
                 "--origin", ORIGIN, "--vkey", vkey)
        env = {"FEDERATION_TOKEN": tokens["platform-a"]}
        # Without --url the client cannot tell the publisher from a relay among the followed URLs:
        # it refuses (exit 2), saying where the token goes, and sends nothing anywhere.
        rc, _out, err = await cli(platform, "feedback", "report", FEED, "md5", H1, "false_positive", env=env)
        assert rc == 2 and "--url" in err and "publisher only" in err, (rc, err)
        await ok(platform, "feedback", "report", FEED, "md5", H1, "false_positive", "--url", f"{url}/feeds/{FEED}/",
                 env=env)
        # The relay operator holds no grant from the publisher: it must never see the member's token.
        assert not any(h and tokens["platform-a"] in h for h in relay.seen), relay.seen
    finally:
        await relay_runner.cleanup()
        await runner.cleanup()


async def test_feedback_status_does_not_carry_the_token_across_a_redirect_to_another_host(tmp_path):
    platform = tmp_path / "platform"
    elsewhere = Recorder()
    else_runner, else_url = await start_app(elsewhere.app)
    # "localhost" vs "127.0.0.1": another host, as a browser or aiohttp would judge it.
    else_url = else_url.replace("127.0.0.1", "localhost")
    front = Recorder(redirect_to=else_url)
    front_runner, front_url = await start_app(front.app)
    token = "fedtok_abcdefghijkl_" + "A" * 43
    try:
        rc, _out, err = await cli(platform, "feedback", "status", FEED, "--url", f"{front_url}/feeds/{FEED}/",
                                  env={"FEDERATION_TOKEN": token})
        assert front.seen, "the client never called the publisher's URL"
        assert rc == 3 and "redirect" in err and "not followed" in err, (rc, err)
        assert not any(h and token in h for h in elsewhere.seen), elsewhere.seen
    finally:
        await front_runner.cleanup()
        await else_runner.cleanup()


async def test_report_batch_of_more_than_one_request_completes(tmp_path):
    ch, platform = tmp_path / "ch", tmp_path / "platform"
    vkey, tokens = await clearinghouse(ch, access="public")
    # 1000 reports a second (the default is 10): the second request of 1000 finds the bucket
    # the first emptied, is answered 429 with Retry-After 1, and is sent again a second later.
    runner, url = await serve_home(ch, report_rate=1000.0)
    try:
        batch = tmp_path / "seen.csv"
        rows = ["kind,type,hash"] + [f"seen,md5,{i:032x}" for i in range(2001)]
        batch.write_text("\n".join(rows) + "\n")
        rc, out, err = await cli(platform, "feedback", "report-batch", FEED, str(batch), "--url",
                                 f"{url}/feeds/{FEED}/", "--json", env={"FEDERATION_TOKEN": tokens["platform-a"]})
        assert rc == 0, f"exit {rc}\n{out[-500:]}\n{err[-2000:]}"
        assert len(json.loads(out)["reports"]) == 2001
        assert "rate-limited by the publisher" in err, "the test meant to cross the rate limit did not"
        # A rerun is all replays: not charged, so not refused either.
        rc, out, err = await cli(platform, "feedback", "report-batch", FEED, str(batch), "--url",
                                 f"{url}/feeds/{FEED}/", "--json", env={"FEDERATION_TOKEN": tokens["platform-a"]})
        assert rc == 0 and "rate-limited" not in err, err[-2000:]
        assert all(r["replayed"] for r in json.loads(out)["reports"])
    finally:
        await runner.cleanup()


async def test_feedback_reads_the_token_from_the_variable_the_feed_was_followed_with(tmp_path):
    ch, platform = tmp_path / "ch", tmp_path / "platform"
    vkey, tokens = await clearinghouse(ch, access="members")
    runner, url = await serve_home(ch)
    try:
        feed_url = f"{url}/feeds/{FEED}/"
        await ok(platform, "follow", FEED, "--url", feed_url, "--origin", ORIGIN, "--vkey", vkey,
                 "--token-env", "TID_TOKEN")
        env = {"TID_TOKEN": tokens["platform-a"]}  # and no FEDERATION_TOKEN
        out = await ok(platform, "feedback", "report", FEED, "md5", H1, "seen", "--url", feed_url, "--json", env=env)
        assert json.loads(out)["reports"][0]["kind"] == "seen"
        # --token-env still names another variable outright.
        rc, _out, err = await cli(platform, "feedback", "status", FEED, "--url", feed_url, "--token-env", "OTHER",
                                  env=env)
        assert rc == 2 and "$OTHER" in err, (rc, err)
    finally:
        await runner.cleanup()
