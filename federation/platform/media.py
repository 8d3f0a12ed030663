"""Hashes of a media file: an image's PDQ, a video's vPDQ, and MD5/SHA-256 of the bytes.

``hash_file`` reads the file once for MD5 and SHA-256 (in chunks: memory
does not grow with the file), then decides what it is: an image if Pillow
can decode it (PDQ by ``pdqhash``, Meta's PDQ), otherwise a video if it is
one (``video_container``) and Meta's ``vpdq`` can decode it (vPDQ: one PDQ
hash a second, with quality and timestamp), otherwise ``InputError``. The
hashing libraries are optional extras (``hashlist-federation[image]``,
``hashlist-federation[video]``); without one, that kind of file is
``UnavailableError`` naming the extra.

An image over ``MAX_IMAGE_PIXELS`` is refused as too many pixels (read
from its header, before it is decoded), never taken for a video.

A video is what libav reads with the demuxer of a video container
(``VIDEO_DEMUXERS``) and has a video stream of a real video codec. libav
opens far more than videos: a text file is "ANSI art" to its ``tty``
demuxer (one rendered frame, of a quality vPDQ keeps), and playlists
(``concat``, ``hls``) read other files or URLs. So the file is probed
first (PyAV, the ``[video]`` extra, with only the ``file`` protocol) and
given to ``vpdq`` only if it is such a container.

PDQ's 256 bits are written first bit most significant, as
python-threatexchange and vPDQ's text form write them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.core.errors import InputError, UnavailableError
from federation.core.vpdq import MAX_VIDEO_FRAMES, Frame

try:  # optional: hashlist-federation[image]
    import pdqhash
    from PIL import Image, UnidentifiedImageError
except ImportError:  # pragma: no cover - exercised only on an install without the extra
    pdqhash = None
try:  # optional: hashlist-federation[video]
    import av
    import vpdq
except ImportError:  # pragma: no cover
    av = vpdq = None

CHUNK = 1 << 20
SECONDS_PER_HASH = 1.0  # vPDQ's default (python-threatexchange VPDQSignal.hash_from_file)
MAX_IMAGE_PIXELS = 100_000_000  # Pillow's decompression-bomb bound, made an error of ours

# libav demuxers (``AVInputFormat.name``: a comma-separated list of aliases)
# of real video containers and elementary video streams. Not here, by
# design: text and ANSI art (tty, bin), subtitles, playlists and references
# to other files or URLs (concat, hls, dash), images (Pillow's, above),
# audio-only formats and raw formats that need options to be read.
VIDEO_DEMUXERS = frozenset({
    "mov", "mp4", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "flv", "live_flv", "mpegts", "mpeg",
    "mpegvideo", "asf", "ogg", "h264", "hevc", "m4v", "mjpeg", "ivf", "obu", "nut", "rm", "dv", "mxf",
    "yuv4mpegpipe", "wtv", "vc1", "h261", "h263", "flic", "gif",
})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})  # text rendered as pictures


@dataclass(frozen=True)
class MediaHashes:
    kind: str                     # "image" or "video"
    md5: bytes
    sha256: bytes
    pdq: bytes | None = None      # image
    pdq_quality: int | None = None
    frames: tuple[Frame, ...] = ()  # video


def _digests(path: Path) -> tuple[bytes, bytes]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                md5.update(chunk)
                sha.update(chunk)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    return md5.digest(), sha.digest()


def _image(path: Path):
    """The decoded RGB image, or None if Pillow does not take it for an image."""
    if pdqhash is None:
        return None
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as img:  # reads the header only: the size is known before decoding
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{img.width}x{img.height}")
            return np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError:  # Pillow's own (at twice the bound on open), or ours above
        raise InputError(f"{path}: an image of too many pixels (over {MAX_IMAGE_PIXELS:,}): "
                         "refused before decoding it") from None
    except (OSError, ValueError, SyntaxError) as e:  # a truncated or corrupt image file
        raise InputError(f"{path}: not a readable image: {e}") from None


def pdq_of(rgb: np.ndarray) -> tuple[bytes, int]:
    bits, quality = pdqhash.compute(rgb)
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


def video_container(path: Path) -> str:
    """The libav demuxer of ``path`` if it is a video container with a video
    stream (``VIDEO_DEMUXERS``, not ``TEXT_CODECS``), else ``InputError``."""
    try:
        # Only the file protocol: a playlist naming URLs is not fetched while probing.
        with av.open(str(path), options={"protocol_whitelist": "file"}) as container:
            demuxer = container.format.name
            codecs = [s.codec_context.name for s in container.streams.video]
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is neither an image nor a video (libav: {e})") from None
    if not set(demuxer.split(",")) & VIDEO_DEMUXERS:
        raise InputError(f"{path} is neither an image nor a video (libav reads it as {demuxer!r}, "
                         "not a video container)")
    if not any(c not in TEXT_CODECS for c in codecs):
        raise InputError(f"{path} is neither an image nor a video (no video stream in its {demuxer!r} container)")
    return demuxer


def video_frames(path: Path) -> tuple[Frame, ...]:
    if vpdq is None:
        raise UnavailableError(f"{path} is not an image, and hashing videos needs the vpdq package "
                               "(pip install 'hashlist-federation[video]')")
    video_container(path)
    try:
        features = vpdq.computeHash(str(path), seconds_per_hash=SECONDS_PER_HASH)
    except Exception as e:  # vpdq raises a bare Exception when the file is not a video it can decode
        raise InputError(f"{path} is neither an image nor a video vPDQ can decode ({e})") from None
    if not features:
        raise InputError(f"{path}: vPDQ found no frame to hash")
    if len(features) > MAX_VIDEO_FRAMES:
        raise InputError(f"{path}: {len(features)} frames, over the {MAX_VIDEO_FRAMES} a vpdq hash may have")
    return tuple(Frame(f.frame_number, f.quality, bytes.fromhex(f.hex), round(f.timestamp * 1000))
                 for f in features)


def hash_file(path: Path | str) -> MediaHashes:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    md5, sha = _digests(path)
    rgb = _image(path)
    if rgb is not None:
        pdq, quality = pdq_of(rgb)
        return MediaHashes("image", md5, sha, pdq, quality)
    if pdqhash is None and vpdq is None:
        raise UnavailableError("hashing media needs pdqhash and pillow, or vpdq "
                               "(pip install 'hashlist-federation[image,video]')")
    return MediaHashes("video", md5, sha, frames=video_frames(path))
