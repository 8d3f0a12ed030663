"""Real PDQ hashes of generated images.

Images are made with numpy (random 16x16 fields upsampled, so PDQ has
structure to hash), and near-duplicates are the same image slightly changed
(brightness, noise, a small crop, rescaled): PDQ hashes of those stay within distance
31 of the original, while unrelated images land near 128.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pdqhash
from PIL import Image

from federation.core.entries import Add


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
