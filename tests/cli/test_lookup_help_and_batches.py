"""Lookups say what they match, and a batch reports a bad query per item instead of failing the whole batch."""
from __future__ import annotations

import hashlib
import json

from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.entries import HASH_LENGTHS

from support.images import md5_add


def test_lookup_help_lists_the_hash_types_and_says_it_is_exact():
    out = " ".join(CliRunner().invoke(cli, ["lookup", "--help"]).output.split())
    for hash_type in HASH_LENGTHS:
        assert hash_type in out, hash_type
    assert "exact" in out and "federation platform lookup pdq" in out and "near-match" in out


def test_platform_lookup_help_lists_the_hash_types_and_near_match():
    out = " ".join(CliRunner().invoke(cli, ["platform", "lookup", "--help"]).output.split())
    for hash_type in HASH_LENGTHS:
        assert hash_type in out, hash_type
    assert "near-match" in out and "Hamming" in out


async def test_cli_batch_reports_a_bad_value_and_answers_the_others(deployment):
    deployment.publish([md5_add("hit", "c1")])
    await deployment.sync()
    home = str(deployment.root)
    hit, miss = hashlib.md5(b"hit").hexdigest(), hashlib.md5(b"miss").hexdigest()
    r = CliRunner().invoke(cli, ["--home", home, "platform", "lookup", "md5", hit, "xyz", miss])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"MATCH md5 {hit} -> feed=") and "case=c1" in lines[0]
    assert lines[1].startswith("error xyz: query 1: md5 hash 'xyz'")
    assert lines[2] == f"no match md5 {miss}"
    r = CliRunner().invoke(cli, ["--home", home, "platform", "lookup", "md5", "xyz", miss, "--json"])
    assert r.exit_code == 2, r.output  # nothing matched, and a value was bad
    bad, answered = [json.loads(x) for x in r.output.splitlines()]
    assert (bad["index"], bad["kind"], bad["hash"]) == (0, "input", "xyz") and "matched" not in bad
    assert answered["matched"] is False and answered["hash"] == miss
