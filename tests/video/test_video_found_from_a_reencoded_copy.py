"""Issue 17 section 2, done when: a video published as vPDQ is found by
``federation platform lookup`` (and the HTTP lookup API) from a re-encoded
copy, with the vPDQ percentages in the answer; after its withdrawal it is not.

Everything is real: ffmpeg makes the videos, Meta's vPDQ hashes them through
``federation hash``, the publisher serves on loopback, the mirror verifies
and applies, and the platform node answers.
"""
from __future__ import annotations

import json

import aiohttp
import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.batch import read_jsonl
from federation.core.entries import Withdraw
from federation.core.vpdq import SEGMENT_FRAMES

from support.videos import make_video, reencode

pytestmark = pytest.mark.timeout(120)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def publish_video(deployment, path, case: str):
    """``federation hash --add`` lines, published as one version."""
    res = run("hash", str(path), "--add", case, "--labels", "csam")
    assert res.exit_code == 0, res.output
    ops = list(read_jsonl(res.output.splitlines()))
    return deployment.publish(ops), ops


def lookup(deployment, vpdq_file, *extra: str):
    res = run("--home", str(deployment.root), "platform", "lookup", "vpdq", str(vpdq_file), "--json", *extra)
    return res.exit_code, json.loads(res.output.splitlines()[0])


async def test_reencoded_copy_is_found_with_percentages_and_not_after_withdrawal(deployment, tmp_path):
    original = make_video(tmp_path / "original.mp4", 100, seed=1)  # 100 frames: two segments
    copy = reencode(original, tmp_path / "copy.mp4")
    other = make_video(tmp_path / "other.mp4", 30, seed=2)
    _, ops = publish_video(deployment, original, "case-v1")
    vpdq_adds = [op for op in ops if op.hash_type == "vpdq"]
    assert len(vpdq_adds) == 2 and len(ops) == 4  # two segments, md5, sha256
    await deployment.sync()

    res = run("hash", str(copy), "--vpdq", str(tmp_path / "copy.vpdq"))
    assert res.exit_code == 0 and "vpdq 100 frames" in res.output, res.output
    assert run("hash", str(other), "--vpdq", str(tmp_path / "other.vpdq")).exit_code == 0
    code, r = lookup(deployment, tmp_path / "copy.vpdq")
    assert code == 0 and r["matched"], r
    (m,) = r["matches"]
    assert (m["feed"], m["case"], m["labels"], m["added_version"], m["frames"]) == ("tid", "case-v1", ["csam"], 1, 100)
    assert m["video"] == vpdq_adds[0].value[:16].hex()
    assert 80 <= m["query_match_percent"] <= 100 and 80 <= m["target_match_percent"] <= 100
    assert (r["threshold"], r["quality"], r["query_percent"], r["target_percent"]) == (31, 50, 80.0, 0.0)
    # The human form carries the percentages too.
    res = run("--home", str(deployment.root), "platform", "lookup", "vpdq", str(tmp_path / "copy.vpdq"))
    assert res.exit_code == 0 and "case=case-v1" in res.output and f"query={m['query_match_percent']}%" in res.output
    # An unrelated video does not match; a demand above what the copy reaches does not either.
    assert lookup(deployment, tmp_path / "other.vpdq")[0] == 1
    assert lookup(deployment, tmp_path / "copy.vpdq", "--query-percent", "100")[0] == 1

    deployment.publish([Withdraw("submitter_request", 0, case="case-v1")])
    await deployment.sync()
    code, r = lookup(deployment, tmp_path / "copy.vpdq")
    assert code == 1 and r["matched"] is False and r["matches"] == []


async def test_a_video_with_one_segment_withdrawn_never_matches(deployment, tmp_path):
    original = make_video(tmp_path / "original.mp4", SEGMENT_FRAMES + 10, seed=3)
    _, ops = publish_video(deployment, original, "case-v2")
    assert run("hash", str(original), "--vpdq", str(tmp_path / "same.vpdq")).exit_code == 0
    await deployment.sync()
    code, r = lookup(deployment, tmp_path / "same.vpdq")
    assert code == 0 and r["matches"][0]["query_match_percent"] == 100.0
    second = [op for op in ops if op.hash_type == "vpdq"][1]
    deployment.publish([Withdraw("hash_error", 0, "vpdq", second.value)])  # by hash: the second segment only
    await deployment.sync()
    # The first segment alone still holds 80 of the 90 frames, but the video is no longer whole.
    code, r = lookup(deployment, tmp_path / "same.vpdq")
    assert code == 1 and r["matches"] == []


async def test_http_lookup_api_answers_a_video_query(deployment, tmp_path):
    original = make_video(tmp_path / "original.mp4", 12, seed=4)
    copy = reencode(original, tmp_path / "copy.mp4")
    publish_video(deployment, original, "case-v3")
    await deployment.sync()
    res = run("hash", str(copy), "--json")
    assert res.exit_code == 0, res.output
    text = json.loads(res.output)["vpdq"]
    async with aiohttp.ClientSession() as s:
        async with s.post(deployment.url + "lookup", json={"queries": [
                {"type": "vpdq", "hash": text}, {"type": "vpdq", "hash": text, "target_percent": 100.5}]}) as resp:
            # A bad query is answered in its place; the good one still is (docs/openapi.yaml, QueryError).
            assert resp.status == 200
            good, bad = (await resp.json())["results"]
            assert good["matched"] and bad["kind"] == "input" and "target_percent" in bad["error"]
        async with s.post(deployment.url + "lookup", json={"queries": [
                {"type": "vpdq", "hash": text, "threshold": 30, "quality": 60}]}) as resp:
            assert resp.status == 200
            body = await resp.json()
    (r,) = body["results"]
    assert r["matched"] and r["threshold"] == 30 and r["quality"] == 60 and r["frames"] == 12
    (m,) = r["matches"]
    assert m["case"] == "case-v3" and m["query_match_percent"] >= 80 and m["origin"]
    assert body["based_on"][0]["feed"] == "tid"


@pytest.mark.parametrize("query, fragment", [
    ({"type": "vpdq", "hash": "".join(f"{i},100,{'ab' * 32},{i}.000\n" for i in range(4097))}, "at most 4096"),
    ({"type": "vpdq", "hash": "[" * 100_000}, "JSON list"),
    ({"type": "vpdq", "hash": f"0,100,{'ab' * 32},nan"}, "out of range"),
    ({"type": "vpdq", "hash": f"0,100,{'ab' * 32},0", "quality": 101}, "quality must be an integer 0..100"),
    ({"type": "vpdq", "hash": f"0,100,{'ab' * 32},0", "query_percent": "80"}, "query_percent must be a number 0..100"),
    ({"type": "vpdq", "hash": "00" * 61}, "vpdq segment part"),
    ({"type": "vpdq", "hash": "zz"}, "neither a segment"),
    ({"type": "md5", "hash": "00" * 16, "quality": 50}, "vpdq only"),
])
async def test_hostile_video_queries_are_refused_in_their_place_naming_the_problem(deployment, query, fragment):
    await deployment.sync()  # a mirror that stands behind its answers, so the good query is answered
    async with aiohttp.ClientSession() as s:
        async with s.post(deployment.url + "lookup", json={"queries": [query, {"type": "md5", "hash": "00" * 16}]}) as resp:
            body = await resp.json()
    assert resp.status == 200, body
    bad, good = body["results"]
    assert bad["index"] == 0 and bad["kind"] == "input" and fragment in bad["error"], bad
    assert good["matched"] is False
