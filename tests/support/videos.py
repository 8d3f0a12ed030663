"""Small generated videos, hashed with Meta's vPDQ (through ``federation hash``).

A video is one random-field image (``support.images.make_image``) a second,
slightly moving within the second, encoded with Debian's ffmpeg; a
"re-encoded copy" is the same video scaled, brightened and re-compressed at
a much lower quality, as a platform would see it uploaded again.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from support.images import make_image
from support.system_tools import require_system_tool, require_vpdq


def need_ffmpeg() -> None:
    require_vpdq()  # a test that makes a video hashes it
    require_system_tool(shutil.which("ffmpeg") is not None, "ffmpeg", "apt-get install ffmpeg")


def make_video(path: Path, seconds: int, seed: int, fps: int = 2, size: int = 128) -> Path:
    need_ffmpeg()
    p = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-s", f"{size}x{size}", "-r", str(fps), "-i", "-", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", "-crf", "18", str(path)], stdin=subprocess.PIPE)
    for s in range(seconds):
        img = make_image(seed * 100_000 + s, size)
        for k in range(fps):
            p.stdin.write(np.roll(img, k, axis=1).tobytes())
    p.stdin.close()
    if p.wait(timeout=60) != 0:
        raise RuntimeError(f"ffmpeg failed to write {path}")
    return path


def reencode(src: Path, dst: Path) -> Path:
    need_ffmpeg()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-vf", "scale=112:112,eq=brightness=0.03",
                    "-c:v", "libx264", "-crf", "32", str(dst)], check=True, timeout=60)
    return dst
