"""Review (issue 17): ``federation hash`` on a file that is neither an image
nor a video must exit 2 (its --help says so). A plain text file is taken by
ffmpeg's ``tty`` demuxer (ANSI art) and comes out as a one-frame vPDQ
"video", which ``--add`` would then publish; a concat list is read as the
videos it names; an image over the pixel bound is not a video either."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib

from support.system_tools import require_vpdq
from support.videos import make_video


def _hash(path, *args):
    return subprocess.run([sys.executable, "-m", "federation", "hash", str(path), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_text_file_is_not_a_video(tmp_path):
    require_vpdq()
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 100)
    out = _hash(path, "--add", "case-1")
    assert out.returncode == 2, out.stdout
    assert "vpdq" not in out.stdout
    assert "neither an image nor a video" in out.stderr and "'tty'" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_playlist_naming_a_video_is_not_that_video(tmp_path):
    """libav's concat demuxer reads the files a text list names: hashing the
    list must not hash (and publish) another file."""
    make_video(tmp_path / "clip.mp4", 3, seed=5)
    playlists = {"list.ffconcat": "ffconcat version 1.0\nfile 'clip.mp4'\n",
                 "list.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\nclip.mp4\n#EXT-X-ENDLIST\n"}
    for name, text in playlists.items():
        (tmp_path / name).write_text(text)
        out = _hash(tmp_path / name)
        assert out.returncode == 2, (name, out.stdout, out.stderr)
        assert "neither an image nor a video" in out.stderr and "vpdq" not in out.stdout, name
    assert _hash(tmp_path / "clip.mp4").returncode == 0  # the video itself is one


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with no image data to speak of."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_an_image_of_too_many_pixels_is_named_so(tmp_path):
    """Over the bound (and over Pillow's own error, at twice it): refused from
    the header, as an image of too many pixels, not tried as a video."""
    require_vpdq()
    for w, h in ((12_000, 10_000), (40_000, 40_000)):
        path = tmp_path / f"bomb-{w}x{h}.png"
        path.write_bytes(_png_header_only(w, h))
        out = _hash(path)
        assert out.returncode == 2, (w, h, out.stdout, out.stderr)
        assert "too many pixels" in out.stderr, (w, h, out.stderr)
        assert "Traceback" not in out.stderr
