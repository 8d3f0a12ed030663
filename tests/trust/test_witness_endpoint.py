"""The tlog-witness add-checkpoint endpoint over real HTTP: every status code
the spec names, the 409 body and content type, and atomic check-and-persist."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from federation.core.checkpoint import Checkpoint
from federation.core.note import Signer, parse_note
from federation.core.witnessformat import add_checkpoint_body
from federation.trust.cosign import cosign_feed
from federation.trust.witness_client import WitnessClient, publisher_proof

from support.feeds import NAME, ORIGIN, adds
from support.loopback import start_app
from support.trust_world import World


async def post(world: World, body: bytes, i: int = 0):
    async with world.session.post(world.witness_urls[i] + "/witness/add-checkpoint", data=body) as r:
        return r.status, r.content_type, await r.read()


def note_at(world: World) -> tuple[bytes, int]:
    f = world.pub.feed(NAME)
    return f.checkpoint, f.size


async def test_witness_status_codes(world: World):
    world.pub.publish(NAME, adds(3), world.log_key)
    note, size = note_at(world)
    # 400: body does not parse / old size above the checkpoint size / proof with old 0
    assert (await post(world, b"old 01\n\n" + note))[0] == 400
    assert (await post(world, b"garbage"))[0] == 400
    assert (await post(world, add_checkpoint_body(size + 1, [], note)))[0] == 400
    assert (await post(world, add_checkpoint_body(0, [b"\x00" * 32], note)))[0] == 400
    # 404: unknown origin (signed by a key of that unknown log)
    other = Signer.generate("other.example/log")
    assert (await post(world, add_checkpoint_body(0, [], Checkpoint("other.example/log", 0, b"\x00" * 32)
                                                  .sign([other]))))[0] == 404
    # 403: known origin, no trusted signature
    stranger = Signer.generate(ORIGIN)
    forged = Checkpoint(ORIGIN, size, b"\x01" * 32).sign([stranger])
    assert (await post(world, add_checkpoint_body(0, [], forged)))[0] == 403
    # 200: first checkpoint from old size 0; the cosignature verifies
    status, _, body = await post(world, add_checkpoint_body(0, [], note))
    assert status == 200 and body.startswith("\u2014 witness-1.example ".encode())
    cosigned = parse_note(note + body)
    v = world.witnesses[0].cosigner.verifier
    assert v.verify(cosigned.text, cosigned.signatures[-1].signature)
    # 409: wrong old size; body is the latest size, text/x.tlog.size
    world.pub.publish(NAME, adds(2), world.log_key)
    note2, size2 = note_at(world)
    status, ctype, body = await post(world, add_checkpoint_body(0, [], note2))
    assert (status, ctype, body) == (409, "text/x.tlog.size", f"{size}\n".encode())
    # 422: right old size, bad proof
    feed = world.pub.feed(NAME)
    proof = publisher_proof(world.pub, feed, size, size2)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1])] + proof[1:]
    assert (await post(world, add_checkpoint_body(size, bad, note2)))[0] == 422
    # 200 with the real proof; the witness now holds size2
    assert (await post(world, add_checkpoint_body(size, proof, note2)))[0] == 200
    assert world.witnesses[0].latest(ORIGIN)[0] == size2
    # 409: same size, different root (a split view); evidence kept
    fork = Checkpoint(ORIGIN, size2, b"\x02" * 32).sign([world.log_key])
    status, ctype, body = await post(world, add_checkpoint_body(size2, [], fork))
    assert (status, ctype, body) == (409, "text/x.tlog.size", f"{size2}\n".encode())
    ev = world.witnesses[0].conn.execute("SELECT status, reason FROM witness_evidence ORDER BY id").fetchall()
    assert (422, f"no consistency proof from {size}") in ev and (409, "same size, different root") in ev
    # Refusals did not move the witness.
    assert world.witnesses[0].latest(ORIGIN)[0] == size2


async def test_witness_refuses_an_inconsistent_checkpoint(world: World):
    """A log that rewrote history cannot prove consistency: 422, no cosignature."""
    world.pub.publish(NAME, adds(3), world.log_key)
    note, size = note_at(world)
    assert (await post(world, add_checkpoint_body(0, [], note)))[0] == 200
    # A different tree, larger, signed by the real key, with a proof from its own history.
    from federation.store.publisher import Publisher
    # Rebuild from scratch: same key, different entries, bigger.
    other = Publisher(world.tmp / "rewritten.db")
    other.create_feed(NAME, ORIGIN, world.log_key)
    other.publish(NAME, adds(3), world.log_key)
    other.publish(NAME, adds(3), world.log_key)
    f = other.feed(NAME)
    proof = publisher_proof(other, f, size, f.size)
    status, _, body = await post(world, add_checkpoint_body(size, proof, f.checkpoint))
    assert status == 422, body
    assert world.witnesses[0].latest(ORIGIN)[0] == size
    other.close()


async def test_check_and_persist_is_atomic_under_concurrency(world: World):
    """Many concurrent requests from the same old size: exactly one wins, the
    others get 409 naming the winner's size; the witness never rolls back."""
    world.pub.publish(NAME, adds(2), world.log_key)
    sizes_notes = []
    for _ in range(6):
        world.pub.publish(NAME, adds(1), world.log_key)
        sizes_notes.append(note_at(world))
    results = await asyncio.gather(*(post(world, add_checkpoint_body(0, [], n)) for n, _ in sizes_notes))
    wins = [i for i, r in enumerate(results) if r[0] == 200]
    assert len(wins) == 1
    won = sizes_notes[wins[0]][1]
    assert all(r[0] == 409 and r[2] == f"{won}\n".encode() for i, r in enumerate(results) if i != wins[0])
    assert world.witnesses[0].latest(ORIGIN)[0] == won


def _split_witness(real_url: str, pause: float = 0.3) -> web.Application:
    """A tlog-witness front that relays to a real witness and sends its answer
    in two pieces (chunked, a pause between): what a witness behind a proxy,
    or one that writes line by line, looks like on the wire."""
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with aiohttp.ClientSession() as s:
            async with s.post(real_url + "/witness/add-checkpoint", data=body) as r:
                status, answer = r.status, await r.read()
        resp = web.StreamResponse(status=status)
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await resp.write(answer[:20])
        await asyncio.sleep(pause)
        await resp.write(answer[20:])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/witness/add-checkpoint", handle)
    return app


@pytest.mark.timeout(90)
async def test_a_witness_answer_that_arrives_in_two_pieces_is_read_whole(world: World):
    """``WitnessClient.submit`` reads the answer with one
    ``StreamReader.read(MAX_RESPONSE)``, which returns as soon as *some* bytes
    are there, not up to the limit. An honest witness whose line arrives in
    two TCP segments (behind a proxy; a slow link) is then "not signature
    lines" or "no cosignature", and its vote is lost for the round."""
    world.pub.publish(NAME, adds(2), world.log_key)
    runner, front = await start_app(_split_witness(world.witness_urls[0]))
    try:
        client = WitnessClient(front + "/witness", world.witnesses[0].cosigner.verifier, world.session)
        out = await cosign_feed(world.pub, NAME, [], [client] + world.clients([1, 2]), quorum=2)
        assert out.failures == (), out.describe()
        assert "witness-1.example" in out.cosigned_by, out.describe()
    finally:
        await runner.cleanup()
