"""Fixtures of the platform tests: real PDQ hashes of generated images, and a
whole loopback deployment (publisher server -> mirror -> platform node).

Images are made with numpy (random 16x16 fields upsampled, so PDQ has
structure to hash), and near-duplicates are the same image slightly changed
(brightness, noise, a small crop, rescaled): PDQ hashes of those stay within distance
31 of the original, while unrelated images land near 128.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from aiohttp import web
from PIL import Image

from federation.core.entries import Add, Withdraw
from federation.store.mirror import Mirror
from federation.core.note import Signer
from federation.platform.node import PlatformNode
from federation.store.publisher import Publisher
from federation.net.server import PublisherSource, create_app
from federation.sync.orchestrator import sync_once

FEED = "tid"
ORIGIN = "clearinghouse.test/feeds/tid"


# ---- images and their PDQ hashes -------------------------------------------------

def make_image(seed: int, size: int = 256) -> np.ndarray:
    """A smooth random RGB image (a random field upsampled), uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
    return np.asarray(img)


def near_duplicate(img: np.ndarray, seed: int) -> np.ndarray:
    """A re-encoded copy: brighter, with pixel noise, slightly cropped and rescaled."""
    rng = np.random.default_rng(seed)
    x = np.clip(img.astype(np.int16) + 8 + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    h, w = x.shape[:2]
    return np.asarray(Image.fromarray(x[2:h - 2, 2:w - 2]).resize((w * 3 // 4, h * 3 // 4), Image.BILINEAR))


def pdq_hex(img: np.ndarray) -> str:
    """PDQ hash as 64 hex digits, first bit most significant (threatexchange's convention)."""
    bits, _quality = pdqhash.compute(img)
    return "%064x" % int("".join(str(int(b)) for b in bits), 2)


def png_bytes(img: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="PNG")
    return out.getvalue()


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def pdq_add(hex_value: str, case: str, labels=("csam",)) -> Add:
    return Add("pdq", bytes.fromhex(hex_value), case, tuple(labels), 0)


def md5_add(seed: str, case: str) -> Add:
    return Add("md5", hashlib.md5(seed.encode()).digest(), case, ("csam",), 0)


# ---- a loopback deployment ------------------------------------------------------

async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


@dataclass
class Deployment:
    root: Path
    pub: Publisher
    signer: Signer
    feed_url: str
    mirror: Mirror
    node: PlatformNode
    url: str  # the platform node's base URL

    def publish(self, ops: list[Add | Withdraw]):
        return self.pub.publish(FEED, ops, self.signer)

    async def sync(self):
        r = await sync_once(self.mirror, FEED)
        self.node.deliverer.notify()
        return r


@pytest.fixture
async def deployment(tmp_path):
    """Publisher served on loopback, a mirror following it, and a platform node over the mirror."""
    signer = Signer.generate(ORIGIN)
    pub = Publisher(tmp_path / "pub.db")
    pub.create_feed(FEED, ORIGIN, signer)
    runners = []
    r, base = await start(create_app([PublisherSource(tmp_path / "pub.db")]))
    runners.append(r)
    feed_url = f"{base}feeds/{FEED}/"
    mirror = Mirror(tmp_path / "mirror.db")
    mirror.follow(FEED, ORIGIN, [signer.vkey], [feed_url])
    node = PlatformNode(tmp_path / "mirror.db", tmp_path / "platform.db", poll=5.0, retry_base=0.05, retry_cap=0.2)
    r, url = await start(node.app)
    runners.append(r)
    yield Deployment(tmp_path, pub, signer, feed_url, mirror, node, url)
    for r in reversed(runners):
        await r.cleanup()
    mirror.close()
    pub.close()
