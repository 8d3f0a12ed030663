"""A version committed and sent to a witness, but never served (its quorum
was not reached), then lost with the disk: recovery from a copy of what was
served succeeds, yet signing stays refused -- the witness holds that
checkpoint signed, and a different tree would be a fork to it -- until the
operator gives it up with ``feed recover --abandon-witnessed``.
"""
from __future__ import annotations

import pytest

from federation.core.note import Cosigner
from federation.net.relay import RelaySource
from federation.net.server import create_app
from federation.trust.witness import Witness, install_witness

from support.disk import acli, batch

pytestmark = pytest.mark.timeout(120)

ORIGIN = "127.0.0.1/feeds/tid"


async def test_a_version_witnesses_saw_is_given_up_only_on_purpose(tmp_path, serve, node):
    pub, member, vkey = node.pub, node.mirror, node.vkey  # feed tid of ORIGIN, served; member follows it
    await acli(pub, "publish", "tid", str(batch(tmp_path / "v1.csv", 30, "c1")))
    await acli(member, "sync")
    relay = await serve(create_app([RelaySource(member / "mirror.db")])) + "/feeds/tid/"

    # One witness answers and cosigns; the second is down, and the quorum is 2: version 2 stays pending.
    witness = Witness(tmp_path / "w.db", Cosigner.generate("w1.example"))
    witness.add_log(ORIGIN, [vkey])
    try:
        wurl = await serve(create_app([], extensions=[install_witness(witness)]))
        down = Cosigner.generate("w2.example").vkey
        await acli(pub, "cosign", "configure", "tid", "--witness", f"{wurl}/witness={witness.cosigner.vkey}",
                   "--witness", f"http://127.0.0.1:9/witness={down}", "--quorum", "2")
        p = await acli(pub, "publish", "tid", str(batch(tmp_path / "v2.csv", 10, "c2")), check=False)
        assert "not served" in p.stderr, p.stderr
        assert (pub / "state" / "publisher" / "tid.witnessed-checkpoint").exists()
    finally:
        witness.close()

    for suffix in ("", "-wal", "-shm"):
        (pub / f"publisher.db{suffix}").unlink(missing_ok=True)
    r = await acli(pub, "feed", "recover", "tid", "--from", relay, "--access", "public")
    assert "still cannot sign" in r.stderr and "--abandon-witnessed" in r.stderr, r.stderr
    await acli(pub, "cosign", "configure", "tid", "--off")
    refused = await acli(pub, "publish", "tid", str(batch(tmp_path / "v3.csv", 5, "c3")), check=False)
    assert refused.returncode == 5 and "--abandon-witnessed" in refused.stderr, refused.stderr
    doctor = await acli(pub, "doctor", "--no-network", check=False)
    assert doctor.returncode != 0 and "cannot sign" in doctor.stdout, doctor.stdout

    r = await acli(pub, "feed", "recover", "tid", "--from", relay, "--access", "public", "--abandon-witnessed")
    assert "gave up the checkpoint" in r.stderr, r.stderr
    assert not (pub / "state" / "publisher" / "tid.witnessed-checkpoint").exists()
    p = await acli(pub, "publish", "tid", str(batch(tmp_path / "v3.csv", 5, "c3")), check=False)
    assert p.returncode == 0, p.stderr
    assert "version 2" in p.stdout and "tree size 31 -> 37" in p.stdout, p.stdout  # the served log continues
