"""Lookup API over loopback: exact hashes, PDQ near-match of real images, provenance."""
from __future__ import annotations

import hashlib
import json

import aiohttp
import numpy as np
import pytest
from click.testing import CliRunner

from federation.cli.main import cli
from federation.core.entries import Add, Withdraw
from federation.platform.pdq_index import PdqIndex
from federation.store.mirror import Mirror

from support.deployment import FEED, ORIGIN
from support.images import distance, make_image, md5_add, near_duplicate, pdq_add, pdq_hex

pytestmark = pytest.mark.timeout(60)


def flip(hex_value: str, n: int, seed: int = 0) -> str:
    """``hex_value`` with ``n`` distinct bits flipped (distance exactly ``n``)."""
    rng = np.random.default_rng(seed)
    v = int(hex_value, 16)
    for b in rng.choice(256, n, replace=False):
        v ^= 1 << int(b)
    return "%064x" % v


async def post(url: str, body) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "lookup", data=json.dumps(body) if not isinstance(body, bytes) else body) as r:
            return r.status, await r.json()


async def get(url: str, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + path) as r:
            return r.status, await r.json()


async def test_near_duplicate_images_match_with_provenance(deployment):
    originals = {f"case-{i}": pdq_hex(make_image(i)) for i in range(6)}
    deployment.publish([pdq_add(h, case, ("csam", f"l{i}")) for i, (case, h) in enumerate(originals.items())])
    await deployment.sync()

    queries = {case: pdq_hex(near_duplicate(make_image(i), 100 + i)) for i, case in enumerate(originals)}
    for case, q in queries.items():
        assert 0 < distance(q, originals[case]) <= 31  # a real near-duplicate, not the same hash
    unrelated = pdq_hex(make_image(999))
    status, body = await post(deployment.url, {"queries": [{"type": "pdq", "hash": q} for q in queries.values()]
                                               + [{"type": "pdq", "hash": unrelated}]})
    assert status == 200
    results = body["results"]
    for i, (case, q) in enumerate(queries.items()):
        r = results[i]
        assert r["matched"] and r["threshold"] == 31 and r["hash"] == q
        (m,) = r["matches"]
        assert m == dict(feed=FEED, origin=ORIGIN, type="pdq", hash=originals[case], case=case,
                         labels=sorted(["csam", f"l{i}"]), added_version=1, distance=distance(q, originals[case]))
    assert results[-1] == dict(type="pdq", hash=unrelated, matched=False, matches=[], threshold=31)


async def test_threshold_boundary_is_inclusive_and_configurable(deployment):
    h = pdq_hex(make_image(7))
    deployment.publish([pdq_add(h, "c7")])
    await deployment.sync()
    at31, at32 = flip(h, 31, 1), flip(h, 32, 2)
    _, r = await get(deployment.url, f"lookup/pdq/{at31}")
    assert r["matched"] and r["matches"][0]["distance"] == 31
    _, r = await get(deployment.url, f"lookup/pdq/{at32}")
    assert not r["matched"]
    _, r = await get(deployment.url, f"lookup/pdq/{at32}?threshold=32")
    assert r["matched"] and r["matches"][0]["distance"] == 32
    _, r = await get(deployment.url, f"lookup/pdq/{flip(h, 1, 3)}?threshold=0")
    assert not r["matched"]
    _, r = await get(deployment.url, f"lookup/pdq/{h.upper()}?threshold=0")
    assert r["matched"] and r["matches"][0]["distance"] == 0


async def test_exact_lookup_of_every_type_single_and_batch(deployment):
    seed = b"case-x"
    ops = [Add("md5", hashlib.md5(seed).digest(), "cx", ("csam",), 0),
           Add("sha1", hashlib.sha1(seed).digest(), "cx", ("csam",), 0),
           Add("sha256", hashlib.sha256(seed).digest(), "cx", ("csam",), 0),
           Add("photodna", hashlib.shake_256(seed).digest(144), "cx", ("csam",), 0)]
    deployment.publish(ops)
    await deployment.sync()
    for a in ops:
        status, r = await get(deployment.url, f"lookup/{a.hash_type}/{a.value.hex()}")
        assert status == 200 and r["matched"], a.hash_type
        assert r["matches"][0]["case"] == "cx" and r["matches"][0]["added_version"] == 1
        assert "threshold" not in r
    other = hashlib.md5(b"nope").hexdigest()
    status, body = await post(deployment.url, {"queries": [{"type": a.hash_type, "hash": a.value.hex()} for a in ops]
                                               + [{"type": "md5", "hash": other}]})
    assert status == 200 and [r["matched"] for r in body["results"]] == [True] * 4 + [False]
    # PhotoDNA given as base64 is normalised like the batch importer does
    import base64
    status, body = await post(deployment.url, {"queries": [{"type": "photodna",
                                                            "hash": base64.b64encode(ops[3].value).decode()}]})
    assert body["results"][0]["matched"]


@pytest.mark.parametrize("query, fragment", [
    ({"type": "md5", "hash": "xyz"}, "query 1: md5 hash"),
    ({"type": "md5", "hash": "00" * 16, "threshold": 5}, "threshold applies to pdq only"),
    ({"type": "pdq", "hash": "00" * 32, "threshold": 64}, "threshold 64"),
    ({"type": "pdq", "hash": "00" * 32, "extra": 1}, "unknown query field"),
    ({"type": "nope", "hash": "00"}, "unknown hash type"),
    ("md5", "each query must be a JSON object"),
    ({"type": ["md5"], "hash": "00"}, "must be strings"),
])
async def test_a_bad_query_is_reported_in_its_place_and_the_batch_still_answered(deployment, query, fragment):
    deployment.publish([md5_add("hit", "c1")])
    await deployment.sync()
    hit = hashlib.md5(b"hit").hexdigest()
    status, r = await post(deployment.url, {"queries": [{"type": "md5", "hash": hit}, query,
                                                        {"type": "md5", "hash": "00" * 16}]})
    assert status == 200, r
    good, bad, miss = r["results"]
    assert good["matched"] is True and miss["matched"] is False
    assert bad["index"] == 1 and bad["kind"] == "input" and fragment in bad["error"] and "matched" not in bad


@pytest.mark.parametrize("body, fragment", [
    ({"queries": [{"type": "md5", "hash": "00" * 16}] * 1001}, "at most 1000"),
    ({"nope": []}, "'queries' list"),
    (b"{not json", "body must be JSON"),
])
async def test_bad_queries_are_400_with_kind_input(deployment, body, fragment):
    status, r = await post(deployment.url, body)
    assert status == 400 and r["kind"] == "input" and fragment in r["error"], r


async def test_withdrawn_pdq_never_answered_and_readd_returns(deployment):
    h = pdq_hex(make_image(11))
    near = pdq_hex(near_duplicate(make_image(11), 5))
    deployment.publish([pdq_add(h, "c11"), pdq_add(h, "c12"), md5_add("x", "c11")])
    await deployment.sync()
    _, r = await get(deployment.url, f"lookup/pdq/{near}")
    assert sorted(m["case"] for m in r["matches"]) == ["c11", "c12"]
    deployment.publish([Withdraw("submitter_request", 0, case="c11")])
    await deployment.sync()
    _, r = await get(deployment.url, f"lookup/pdq/{near}")
    assert [m["case"] for m in r["matches"]] == ["c12"]  # still active in the other case
    deployment.publish([Withdraw("hash_error", 0, "pdq", bytes.fromhex(h))])
    await deployment.sync()
    _, r = await get(deployment.url, f"lookup/pdq/{near}")
    assert {k: v for k, v in r.items() if k != "based_on"} == dict(type="pdq", hash=near, matched=False, matches=[],
                                                                   threshold=31)
    assert [(b["feed"], b["version"], b["ready"]) for b in r["based_on"]] == [("tid", 3, True)]
    deployment.publish([pdq_add(h, "c13")])
    await deployment.sync()
    _, r = await get(deployment.url, f"lookup/pdq/{near}")
    assert [(m["case"], m["added_version"]) for m in r["matches"]] == [("c13", 4)]


def test_index_finds_exactly_what_brute_force_finds(tmp_path):
    """Multi-index hashing must not miss anything within the threshold."""
    rng = np.random.default_rng(5)
    centers = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    # clusters around the centers at every distance 0..48, plus uniform noise
    rows = []
    for c in centers:
        for d in range(0, 49, 2):
            v = int.from_bytes(c.tobytes(), "big")
            for b in rng.choice(256, d, replace=False):
                v ^= 1 << int(b)
            rows.append(v.to_bytes(32, "big"))
    rows += [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(3000)]
    m = Mirror(tmp_path / "m.db")
    m.conn.execute("INSERT INTO follows (name, origin, vkeys, urls, compact, digest) VALUES ('f','o','','', x'', x'')")
    m.conn.executemany("INSERT OR IGNORE INTO hashes VALUES (1,'pdq',?,'c','',1,0)", [(r,) for r in rows])
    index = PdqIndex(m.conn)
    assert len(index) == len(set(rows))
    data = index.values()
    queries = [c.tobytes() for c in centers[:20]]
    for t in (0, 15, 16, 31, 40):
        got = index.candidates(queries, t)
        for q, found in zip(queries, got):
            d = np.unpackbits(data ^ np.frombuffer(q, dtype=np.uint8), axis=1).sum(axis=1)
            want = {(data[i].tobytes(), int(d[i])) for i in np.nonzero(d <= t)[0]}
            assert set(found) == want, (t, len(found), len(want))
    m.close()


async def test_cli_platform_lookup_near(deployment):
    h = pdq_hex(make_image(21))
    deployment.publish([pdq_add(h, "c21")])
    await deployment.sync()
    near = pdq_hex(near_duplicate(make_image(21), 1))
    home = str(deployment.root)  # mirror.db lives at HOME/mirror.db
    res = CliRunner().invoke(cli, ["--home", home, "platform", "lookup", "pdq", near])
    assert res.exit_code == 0, res.output
    assert f"case=c21 labels=csam version=1 distance={distance(h, near)} matched={h}" in res.output
    res = CliRunner().invoke(cli, ["--home", home, "platform", "lookup", "pdq", near, "--threshold", "0", "--json"])
    assert res.exit_code == 1 and json.loads(res.output)["matched"] is False
    res = CliRunner().invoke(cli, ["--home", home, "platform", "lookup", "pdq", "abc"])
    assert res.exit_code == 2 and "pdq hash" in res.output


def test_rows_loaded_without_change_rows_are_indexed(tmp_path):
    """A snapshot bootstrap writes active rows and a new version but no change rows."""
    m = Mirror(tmp_path / "m.db")
    m.conn.execute("INSERT INTO follows (name, origin, vkeys, urls, compact, digest) VALUES ('f','o','','', x'', x'')")
    index = PdqIndex(m.conn)
    h = bytes.fromhex(pdq_hex(make_image(41)))
    m.conn.execute("INSERT INTO hashes VALUES (1,'pdq',?,'c41','csam',7,0)", (h,))
    index.refresh()
    assert index.candidates([h], 0) == [[]]  # same version: nothing announced it yet
    m.conn.execute("UPDATE follows SET version=7")
    index.refresh()
    assert index.candidates([h], 0) == [[(h, 0)]]
    (match,) = index.search([h])[0]
    assert (match.case, match.added_version, match.distance) == ("c41", 7, 0)
    m.close()
