"""Where a bare ``ValueError``/``RuntimeError`` used to come out, one of ours
with a kind does now (test_errors_structure.py checks the source for it;
these pin each site's class)."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from federation.core.b64 import b64decode_canonical
from federation.core.errors import FederationError, InputError, MalformedError, StorageError, TransportError
from federation.core.lthash import LtHash16
from federation.core.merkle import consistency_proof, inclusion_proof
from federation.core.note import Cosigner
from federation.core.tiles import MAX_ENTRY_BYTES, TileHashes, encode_bundle
from federation.net.fetcher import Fetcher
from federation.store.lthash_workers import ParallelSum

pytestmark = pytest.mark.timeout(30)


def _mth(start: int, end: int) -> bytes:
    return bytes(32)


@pytest.mark.parametrize("call, cls", [
    (lambda: consistency_proof(5, 3, _mth), MalformedError),       # a tree cannot shrink
    (lambda: inclusion_proof(3, 3, _mth), MalformedError),         # index past the tree
    (lambda: TileHashes(3).mth(0, 9), MalformedError),
    (lambda: encode_bundle([b"x" * (MAX_ENTRY_BYTES + 1)]), InputError),
    (lambda: b64decode_canonical("\u00e9"), MalformedError),
    (lambda: b64decode_canonical("AA=="[:3]), MalformedError),
    (lambda: b64decode_canonical("AB=="), MalformedError),         # padding bits set: not canonical
    (lambda: LtHash16(b"short"), MalformedError),
    (lambda: Cosigner.generate("w.example").cosign(b"text\n", -1), InputError),
])
def test_pure_code_raises_ours(call, cls):
    with pytest.raises(cls) as info:
        call()
    assert str(info.value)


def test_a_dead_lthash_worker_is_a_storage_error():
    summer = ParallelSum(workers=1)
    try:
        summer._procs[0].kill()
        summer._procs[0].wait()
        with pytest.raises(StorageError, match="LtHash worker process died"):
            for _ in range(3):  # the first write may still fit the dead pipe's buffer
                summer.add([b"x" * 64] * 1000)
            summer.result()
    finally:
        summer.close()


async def test_a_fetcher_used_unopened_is_a_transport_error():
    with pytest.raises(TransportError, match="not open"):
        await Fetcher("http://127.0.0.1:9/").get("checkpoint", 100)


async def test_threatexchange_adapter_wraps_a_bad_answer(serve):
    from threatexchange.signal_type.pdq.signal import PdqSignal

    from federation.platform.threatexchange import FederationCollabConfig, FederationSignalExchangeAPI

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>a proxy's error page</html>")

    app = web.Application()
    app.router.add_get("/changes", not_json)
    url = await serve(app)
    collab = FederationCollabConfig(name="tid", api="federation", enabled=True, url=url)

    def fetch():
        return list(FederationSignalExchangeAPI.for_collab(collab).fetch_iter([PdqSignal], None))

    with pytest.raises(MalformedError, match="not JSON"):
        await asyncio.to_thread(fetch)
    collab.url = url + "/missing/"
    with pytest.raises(TransportError, match="404"):
        await asyncio.to_thread(fetch)
    assert issubclass(MalformedError, FederationError)
