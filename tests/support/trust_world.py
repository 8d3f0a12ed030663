"""A publisher with a trust chain, three witnesses on loopback, and mirrors
following under a trust file (the ``world`` and ``home_world`` fixtures).
Keys are generated per test; nothing is written outside ``tmp_path``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from federation.core.note import Cosigner, Signer
from federation.core.trustfile import parse_trust, render_trust, sign_trust
from federation.net.server import PublisherSource, create_app
from federation.store.mirror import Mirror
from federation.store.publisher import Publisher
from federation.trust.cosign import refresh_checkpoint
from federation.trust.rotation import TrustChain, follow_with_trust, install_trust_routes, publish_trust
from federation.trust.witness import Witness, install_witness
from federation.trust.witness_client import WitnessClient

from support.feeds import NAME, ORIGIN, adds, feed_url
from support.loopback import start_app


def trust_bytes(log_keys, witnesses, trust_keys, signers, *, version=1, quorum=2, threshold=2,
                max_staleness=3600, origin=ORIGIN) -> bytes:
    text = render_trust(origin, version, max_staleness, [k.vkey for k in log_keys],
                        [w.vkey for w in witnesses], quorum, [k.vkey for k in trust_keys], threshold)
    return sign_trust(text, signers)


@dataclass
class World:
    tmp: Path
    pub: Publisher
    log_key: Signer
    roots: list[Signer]
    witnesses: list[Witness]
    witness_urls: list[str]
    base: str
    session: aiohttp.ClientSession
    runners: list = field(default_factory=list)
    mirrors: list = field(default_factory=list)
    home: Path | None = None
    stopped: dict = field(default_factory=dict)  # witness index -> port it listened on

    async def stop_witness(self, i: int) -> None:
        """Take witness ``i`` off the network (its state is kept)."""
        port = int(self.witness_urls[i].rsplit(":", 1)[1])
        await self.runners[i].cleanup()
        self.runners[i] = None
        self.stopped[i] = port

    async def start_witness(self, i: int) -> None:
        """Bring a stopped witness back on the same URL."""
        runner, _ = await start_app(create_app([], extensions=[install_witness(self.witnesses[i])]),
                                    port=self.stopped.pop(i))
        self.runners[i] = runner

    def witness_specs(self, which=None) -> list[str]:
        """``URL=VKEY`` arguments for ``cosign configure/run --witness``."""
        idx = range(len(self.witnesses)) if which is None else which
        return [f"{self.witness_urls[i]}/witness={self.witnesses[i].cosigner.vkey}" for i in idx]

    @property
    def url(self) -> str:
        return feed_url(self.base)

    def cosigners(self) -> list[Cosigner]:
        return [w.cosigner for w in self.witnesses]

    def clients(self, which=None) -> list[WitnessClient]:
        idx = range(len(self.witnesses)) if which is None else which
        return [WitnessClient(self.witness_urls[i] + "/witness", self.witnesses[i].cosigner.verifier, self.session)
                for i in idx]

    def trust_v1(self, **kw) -> bytes:
        return trust_bytes([self.log_key], self.cosigners(), self.roots, self.roots, **kw)

    async def publish(self, n: int = 3, which=None, signer: Signer | None = None):
        r = self.pub.publish(NAME, adds(n), signer or self.log_key)
        await self.cosign(which)
        return r

    async def cosign(self, which=None, local=(), now=None) -> bytes:
        note = await refresh_checkpoint(self.pub, NAME, list(local), self.clients(which), now=now)
        assert note is not None
        return note

    def mirror(self, filename: str = "m.db", trust: bytes | None = None, url: str | None = None) -> Mirror:
        m = Mirror(self.tmp / filename)
        self.mirrors.append(m)
        follow_with_trust(m, NAME, parse_trust(trust or self.trust_v1()), [url or self.url])
        return m

    def chain(self, m: Mirror) -> TrustChain:
        return TrustChain(m.conn, NAME)

    def trust_rows(self, m: Mirror) -> list[tuple[int, bytes]]:
        return m.conn.execute("SELECT version, data FROM trust_chain WHERE feed=? ORDER BY version",
                              (NAME,)).fetchall()


async def make_world(tmp_path: Path, pf):
    roots = [Signer.generate(f"example.org/trust/root-{i}") for i in (1, 2)]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    runners, witnesses, urls = [], [], []
    for i in (1, 2, 3):
        w = Witness(tmp_path / f"w{i}.db", Cosigner.generate(f"witness-{i}.example"))
        w.add_log(ORIGIN, [pf.signer.vkey])
        runner, url = await start_app(create_app([], extensions=[install_witness(w)]))
        runners.append(runner)
        witnesses.append(w)
        urls.append(url)
    app = create_app([PublisherSource(pf.path)], extensions=[install_trust_routes([pf.path])])
    runner, base = await start_app(app)
    runners.append(runner)
    world = World(tmp_path, pf.pub, pf.signer, roots, witnesses, urls, base, session, runners)
    publish_trust(pf.pub.conn, NAME, world.trust_v1())
    return world


async def close_world(world: World) -> None:
    await world.session.close()
    for r in reversed(world.runners):
        if r is not None:
            await r.cleanup()
    for m in world.mirrors:
        m.close()
    for w in world.witnesses:
        w.close()


def now() -> int:
    return int(time.time())
