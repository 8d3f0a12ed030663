"""Video hashes (vPDQ): frames, their canonical segment encoding, and matching. Pure.

A vPDQ hash is a video's list of frame features -- frame number, quality
(0..100), PDQ hash, timestamp -- as Meta's vPDQ (``vpdq.computeHash``)
and python-threatexchange's VPDQ signal produce them. On the log a video
is one or more ``add`` entries of type ``vpdq`` (docs/PROTOCOL.md section
4, "vpdq"): its frames cut in order into *segments* of ``SEGMENT_FRAMES``
(the last may be shorter), each segment's ``hash`` being::

    video (16 bytes) || part (u16) || parts (u16) || frame*
    frame = frame number (u32) || quality (u8) || timestamp ms (u32) || PDQ (32 bytes)

all big-endian. ``video`` is the first 16 bytes of SHA-256 over every
frame record of the whole video, so one frame list has exactly one set of
segments (canonical), and a mirror can check a reassembled video.

Invariants: ``decode_segment`` checks the length against the bounds before
reading a frame; every error is ``MalformedError`` (log bytes) or
``InputError`` (operator/platform text). Matching is vPDQ's brute-force
algorithm (python-threatexchange ``match_VPDQ_hash_brute``): dedupe, drop
frames under the quality threshold, then the share of query frames within
the distance of some target frame and the reverse.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np

from federation.core.bounded import json_loads
from federation.core.errors import InputError, MalformedError

VIDEO_ID_BYTES = 16
HEADER_BYTES = VIDEO_ID_BYTES + 4
FRAME_BYTES = 41
SEGMENT_FRAMES = 80          # an add entry stays under 4,096 bytes with the longest case and labels
MAX_PARTS = 1024             # 81,920 frames: 22 hours at vPDQ's default of one frame a second
MIN_SEGMENT_BYTES = HEADER_BYTES + FRAME_BYTES
MAX_SEGMENT_BYTES = HEADER_BYTES + SEGMENT_FRAMES * FRAME_BYTES
MAX_FRAME_NUMBER = (1 << 32) - 1
MAX_TIMESTAMP_MS = (1 << 32) - 1
MAX_QUERY_FRAMES = 4096      # a lookup query; a longer video is looked up in pieces
MAX_VIDEO_FRAMES = SEGMENT_FRAMES * MAX_PARTS

# vPDQ's defaults (python-threatexchange extensions/vpdq/vpdq_util.py).
DISTANCE_THRESHOLD = 31
QUALITY_THRESHOLD = 50
QUERY_MATCH_PERCENT = 80.0
TARGET_MATCH_PERCENT = 0.0

_FRAME = struct.Struct(">IBI32s")
_HEADER = struct.Struct(">16sHH")


@dataclass(frozen=True)
class Frame:
    number: int
    quality: int
    pdq: bytes       # 32 bytes
    timestamp_ms: int

    def record(self) -> bytes:
        return _FRAME.pack(self.number, self.quality, self.timestamp_ms, self.pdq)


@dataclass(frozen=True)
class Segment:
    video: bytes
    part: int
    parts: int
    frames: tuple[Frame, ...]


def _check_frames(frames, what: str, error) -> None:
    last = -1
    for f in frames:
        if not (type(f.number) is int and 0 <= f.number <= MAX_FRAME_NUMBER and f.number > last):
            raise error(f"{what}: frame numbers must increase strictly within 0..2**32-1 (got {f.number!r})")
        if not (type(f.quality) is int and 0 <= f.quality <= 100):
            raise error(f"{what}: frame {f.number} quality {f.quality!r} is not 0..100")
        if not (type(f.timestamp_ms) is int and 0 <= f.timestamp_ms <= MAX_TIMESTAMP_MS):
            raise error(f"{what}: frame {f.number} timestamp {f.timestamp_ms!r} ms is out of range")
        if not (type(f.pdq) is bytes and len(f.pdq) == 32):
            raise error(f"{what}: frame {f.number} PDQ hash is not 32 bytes")
        last = f.number


def video_id(frames: list[Frame] | tuple[Frame, ...]) -> bytes:
    return hashlib.sha256(b"".join(f.record() for f in frames)).digest()[:VIDEO_ID_BYTES]


def segments(frames: list[Frame]) -> list[bytes]:
    """The canonical segment values of one video (``InputError`` if out of bounds)."""
    if not frames:
        raise InputError("a vpdq hash needs at least one frame")
    if len(frames) > MAX_VIDEO_FRAMES:
        raise InputError(f"a vpdq video has at most {MAX_VIDEO_FRAMES} frames, this one {len(frames)}")
    _check_frames(frames, "vpdq hash", InputError)
    vid = video_id(frames)
    chunks = [frames[i:i + SEGMENT_FRAMES] for i in range(0, len(frames), SEGMENT_FRAMES)]
    return [_HEADER.pack(vid, i, len(chunks)) + b"".join(f.record() for f in chunk)
            for i, chunk in enumerate(chunks)]


def check_segment_length(n: int) -> None:
    """Bounds of a segment's length, checked before any of it is read."""
    if not MIN_SEGMENT_BYTES <= n <= MAX_SEGMENT_BYTES or (n - HEADER_BYTES) % FRAME_BYTES:
        raise MalformedError(f"vpdq hash is {n} bytes, want 20 + 41 x (1..{SEGMENT_FRAMES}) bytes")


def decode_segment(value: bytes) -> Segment:
    """Parse and validate one segment (docs/PROTOCOL.md section 4, "vpdq")."""
    check_segment_length(len(value))
    vid, part, parts = _HEADER.unpack_from(value)
    n = (len(value) - HEADER_BYTES) // FRAME_BYTES
    if not (1 <= parts <= MAX_PARTS and part < parts):
        raise MalformedError(f"vpdq segment part {part} of {parts}: want part < parts <= {MAX_PARTS}")
    if part < parts - 1 and n != SEGMENT_FRAMES:
        raise MalformedError(f"vpdq segment {part} of {parts} has {n} frames; every segment but the last "
                             f"has {SEGMENT_FRAMES}")
    frames = tuple(Frame(num, q, pdq, ts) for num, q, ts, pdq in _FRAME.iter_unpack(value[HEADER_BYTES:]))
    _check_frames(frames, "vpdq segment", MalformedError)
    return Segment(vid, part, parts, frames)


def reassemble(parts: list[Segment]) -> tuple[Frame, ...] | None:
    """The whole video from its segments, or None when they are not one whole
    video (a part missing or repeated, frames out of order, or a video id
    that is not the hash of its frames)."""
    if not parts:
        return None
    parts = sorted(parts, key=lambda s: s.part)
    total = parts[0].parts
    if [s.part for s in parts] != list(range(total)) or any(s.parts != total or s.video != parts[0].video
                                                             for s in parts):
        return None
    frames = tuple(f for s in parts for f in s.frames)
    if any(a.number >= b.number for a, b in zip(frames, frames[1:])) or video_id(frames) != parts[0].video:
        return None
    return frames


# ---- text forms ---------------------------------------------------------------

def _frame_from_fields(fields: list[str], number: int | None, where: str) -> Frame:
    try:
        if number is None:  # vpdq's file: frame,quality,pdq_hex,timestamp
            num_s, q_s, hex_s, ts_s = fields
            number = int(num_s)
        else:               # threatexchange's compact feature: pdq_hex,quality,timestamp
            hex_s, q_s, ts_s = fields
        quality = int(q_s)
        seconds = float(ts_s)
        pdq = bytes.fromhex(hex_s) if len(hex_s) == 64 else b""
    except ValueError:
        raise InputError(f"{where}: not a vPDQ frame (frame,quality,pdq_hex,timestamp)") from None
    if not (0 <= seconds * 1000 < MAX_TIMESTAMP_MS):  # also refuses nan and inf
        raise InputError(f"{where}: timestamp {ts_s!r} is out of range")
    if len(pdq) != 32 or not 0 <= quality <= 100 or not 0 <= number <= MAX_FRAME_NUMBER:
        raise InputError(f"{where}: want a 64-hex-digit PDQ hash, quality 0..100 and a frame number 0..2**32-1")
    return Frame(number, quality, pdq, round(seconds * 1000))


def parse_frames(text: str, max_frames: int = MAX_VIDEO_FRAMES) -> list[Frame]:
    """A video hash as text: vpdq's lines ``frame,quality,pdq_hex,timestamp``,
    or python-threatexchange's VPDQ signal (a JSON list of
    ``pdq_hex,quality,timestamp``; frames are then numbered 0, 1, ...).
    Bounded: at most ``max_frames`` frames, checked before they are parsed."""
    if not isinstance(text, str):
        raise InputError("a vpdq hash must be text")
    text = text.strip()
    if len(text) > max_frames * 128:
        raise InputError(f"vpdq hash is {len(text)} characters, too long for {max_frames} frames")
    if text.startswith("["):
        # Bounded before parsing (size, depth, numbers): python-threatexchange's signal string.
        items = json_loads(text, "vpdq hash is not a JSON list of 'pdq_hex,quality,timestamp'",
                           max_bytes=max_frames * 128, error=InputError, max_depth=2)
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise InputError("vpdq hash is not a JSON list of 'pdq_hex,quality,timestamp'")
        lines, numbered = items, True
    else:
        lines, numbered = [ln for ln in text.replace(";", "\n").splitlines() if ln.strip()], False
    if len(lines) > max_frames:
        raise InputError(f"vpdq hash has {len(lines)} frames, at most {max_frames}")
    frames = [_frame_from_fields([x.strip() for x in line.split(",")], i if numbered else None, f"frame {i}")
              for i, line in enumerate(lines)]
    if not frames:
        raise InputError("a vpdq hash needs at least one frame")
    _check_frames(frames, "vpdq hash", InputError)
    return frames


def format_frames(frames) -> str:
    """vpdq's text form, one ``frame,quality,pdq_hex,timestamp`` line per frame."""
    return "".join(f"{f.number},{f.quality},{f.pdq.hex()},{f.timestamp_ms / 1000:.3f}\n" for f in frames)


def signal_string(frames) -> str:
    """python-threatexchange's VPDQ signal string (``vpdq_to_json``)."""
    return json.dumps([f"{f.pdq.hex()},{f.quality},{f.timestamp_ms / 1000:.3}" for f in frames])


# ---- matching -----------------------------------------------------------------

def usable(frames, quality: int = QUALITY_THRESHOLD) -> list[bytes]:
    """The PDQ hashes vPDQ compares: deduplicated, then quality >= ``quality``."""
    seen: set[bytes] = set()
    out = []
    for f in frames:
        if f.pdq not in seen:
            seen.add(f.pdq)
            if f.quality >= quality:
                out.append(f.pdq)
    return out


def _bits(hashes: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, 32)


def match_hits(query: list[bytes], target: list[bytes],
               distance: int = DISTANCE_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Which query frames are within ``distance`` of some target frame, and
    which target frames of some query frame (two boolean arrays), by
    comparing every pair: the reference, for few frames (``platform.video_index``
    answers lookups from its index's candidates and uses this only for frames
    its index does not hold)."""
    q_hit = np.zeros(len(query), dtype=bool)
    t_hit = np.zeros(len(target), dtype=bool)
    if not query or not target:
        return q_hit, t_hit
    q, t = _bits(query), _bits(target)
    step = max(1, (1 << 16) // len(t))  # bounds the pairwise array at ~2 MiB of bytes
    for i in range(0, len(q), step):
        # Hamming distances of every pair in the chunk: XOR, then count the set bits.
        d = np.unpackbits(q[i:i + step, None, :] ^ t[None, :, :], axis=2).sum(axis=2, dtype=np.int32)
        close = d <= distance
        q_hit[i:i + step] = close.any(axis=1)
        t_hit |= close.any(axis=0)
    return q_hit, t_hit


def percents(q_hit: np.ndarray, t_hit: np.ndarray) -> tuple[float, float]:
    """(query match %, target match %) from the hit arrays (0 for an empty side)."""
    return (float(q_hit.sum()) * 100 / len(q_hit) if len(q_hit) else 0.0,
            float(t_hit.sum()) * 100 / len(t_hit) if len(t_hit) else 0.0)


def match_percents(query: list[bytes], target: list[bytes], distance: int = DISTANCE_THRESHOLD) -> tuple[float, float]:
    """(query match %, target match %) of two usable frame lists, as vPDQ's brute matcher."""
    if not query or not target:
        return 0.0, 0.0
    return percents(*match_hits(query, target, distance))
