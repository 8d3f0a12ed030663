"""Review (issue 17): ``federation hash`` on a file that is neither an image
nor a video must exit 2 (its --help says so). A plain text file is taken by
ffmpeg's ``tty`` demuxer (ANSI art) and comes out as a one-frame vPDQ
"video", which ``--add`` would then publish."""
from __future__ import annotations

import subprocess
import sys

import pytest

from support.system_tools import require_vpdq


@pytest.mark.xfail(strict=True, reason="review: a plain text file is hashed as a one-frame vPDQ video (exit 0)")
def test_a_text_file_is_not_a_video(tmp_path):
    require_vpdq()
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 100)
    out = subprocess.run([sys.executable, "-m", "federation", "hash", str(path), "--add", "case-1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout
    assert "vpdq" not in out.stdout
