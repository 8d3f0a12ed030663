"""A stock ``threatexchange`` CLI syncs a feed from a live platform node, withdrawals included.

Drives the real CLI as subprocesses (its state in a temporary TX_STATEDIR):
``config extensions add``, ``config collab edit ... --create``, ``fetch``,
``match``. Images are generated; threatexchange hashes them itself.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from federation.core.entries import Withdraw
from federation.platform.threatexchange import FederationSignalMetadata, page_updates

from support.images import make_image, near_duplicate, pdq_add, pdq_hex, png_bytes

pytestmark = pytest.mark.timeout(120)

TX = str(Path(sys.executable).parent / "threatexchange")


async def tx(state: Path, *args: str, ok: bool = True) -> str:
    env = dict(os.environ, TX_STATEDIR=str(state))
    proc = await asyncio.create_subprocess_exec(TX, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    if ok:
        assert proc.returncode == 0, f"threatexchange {' '.join(args)} exited {proc.returncode}:\n{text}"
    return text


async def test_threatexchange_cli_fetches_matches_and_drops_withdrawn(deployment, tmp_path):
    img_a, img_b = make_image(31), make_image(32)
    # Three hashes, so two remain after the withdrawal: faiss-cpu 1.15's IndexBinaryMultiHash
    # loses its only vector in a serialize/deserialize round trip, which breaks
    # threatexchange's stored index when it holds exactly one PDQ hash (not our bug).
    deployment.publish([pdq_add(pdq_hex(img_a), "case-a"), pdq_add(pdq_hex(img_b), "case-b"),
                        pdq_add(pdq_hex(make_image(34)), "case-c")])
    await deployment.sync()
    upload_a = tmp_path / "upload-a.png"   # a near-duplicate of A, as an upload would be
    upload_a.write_bytes(png_bytes(near_duplicate(img_a, 7)))
    upload_b = tmp_path / "upload-b.png"
    upload_b.write_bytes(png_bytes(img_b))
    unrelated = tmp_path / "other.png"
    unrelated.write_bytes(png_bytes(make_image(33)))

    state = tmp_path / "tx-state"
    await tx(state, "config", "extensions", "add", "federation.platform.threatexchange")
    await tx(state, "config", "collab", "edit", "federation", "tid-platform", "--create",
             "--url", deployment.url, "--feed", "tid")
    await tx(state, "fetch")
    out = await tx(state, "match", "photo", str(upload_a))
    assert "tid-platform" in out and "pdq" in out, out
    out = await tx(state, "match", "photo", str(unrelated))
    assert "tid-platform" not in out, out

    deployment.publish([Withdraw("submitter_request", 0, case="case-a")])
    await deployment.sync()
    await tx(state, "fetch")
    out = await tx(state, "match", "photo", str(upload_a))
    assert "tid-platform" not in out, out  # the tombstone removed it from threatexchange's index
    out = await tx(state, "match", "photo", str(upload_b))
    assert "tid-platform" in out, out


def test_page_updates_tombstones_only_when_no_case_is_left():
    h = "ab" * 32
    changes = [dict(seq=1, feed="tid", type="pdq", hash=h, action="withdraw"),
               dict(seq=2, feed="tid", type="sha256", hash="cd" * 32, action="add"),
               dict(seq=3, feed="other", type="md5", hash="ef" * 16, action="add")]
    still = {("pdq", h): [dict(feed="tid", case="c2", labels=["csam"], added_version=3)]}
    up = page_updates(changes, still, "tid", {"pdq", "video_md5"})
    assert up == {("pdq", h): FederationSignalMetadata([("tid", "c2", ("csam",), 3)])}
    assert page_updates(changes, {}, "tid", {"pdq"}) == {("pdq", h): None}
    # a record of another feed does not keep the hash alive for this collab
    other = {("pdq", h): [dict(feed="other", case="c9", labels=[], added_version=1)]}
    assert page_updates(changes, other, "tid", {"pdq"}) == {("pdq", h): None}
    assert page_updates(changes, {}, None, {"video_md5"}) == {("video_md5", "ef" * 16): None}
