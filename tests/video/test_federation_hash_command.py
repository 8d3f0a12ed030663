"""``federation hash FILE``: an image's PDQ, a video's vPDQ, MD5 and SHA-256
of the bytes, as a real subprocess and through click."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from click.testing import CliRunner

from federation.cli.main import cli
from federation.core import vpdq as V

from support.images import make_image, pdq_hex, png_bytes
from support.system_tools import require_vpdq
from support.videos import make_video


def test_an_image_gives_pdq_md5_and_sha256(tmp_path):
    img = make_image(7)
    path = tmp_path / "upload.png"
    path.write_bytes(png_bytes(img))
    out = subprocess.run([sys.executable, "-m", "federation", "hash", str(path), "--json"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    data = path.read_bytes()
    assert got == {"file": str(path), "kind": "image", "md5": hashlib.md5(data).hexdigest(),
                   "sha256": hashlib.sha256(data).hexdigest(), "pdq": pdq_hex(img), "pdq_quality": got["pdq_quality"]}
    assert 0 <= got["pdq_quality"] <= 100


def test_a_video_gives_vpdq_md5_and_sha256(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 5, seed=8)
    res = CliRunner().invoke(cli, ["hash", str(path), "--vpdq", str(tmp_path / "clip.vpdq")])
    assert res.exit_code == 0, res.output
    data = path.read_bytes()
    assert f"md5 {hashlib.md5(data).hexdigest()}" in res.output
    assert f"sha256 {hashlib.sha256(data).hexdigest()}" in res.output
    theirs = require_vpdq().computeHash(str(path), seconds_per_hash=1.0)  # Meta's vPDQ, called directly
    ours = V.parse_frames((tmp_path / "clip.vpdq").read_text())
    assert [(f.number, f.quality, f.pdq.hex(), f.timestamp_ms) for f in ours] == \
        [(f.frame_number, f.quality, f.hex, round(f.timestamp * 1000)) for f in theirs]
    assert f"vpdq {len(ours)} frames video={V.video_id(ours).hex()}" in res.output


def test_add_lines_publish_as_a_batch(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 3, seed=9)
    res = CliRunner().invoke(cli, ["hash", str(path), "--add", "case-9", "--labels", "csam ncii"])
    lines = [json.loads(x) for x in res.output.splitlines()]
    assert [x["type"] for x in lines] == ["vpdq", "md5", "sha256"]
    assert {(x["op"], x["case"], x["labels"]) for x in lines} == {("add", "case-9", "csam ncii")}


def test_what_is_not_media_is_an_input_error(tmp_path):
    require_vpdq()  # without it, a file that is not an image may still be a video: next test
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / "broken.png").write_bytes(png_bytes(make_image(1))[:200])  # a truncated PNG
    (tmp_path / "img.png").write_bytes(png_bytes(make_image(1)))
    for args, says in ((["notes.txt"], "neither an image nor a video"), (["broken.png"], "not a readable image"),
                       (["missing.mp4"], "is not a file"), (["."], "is a directory"),
                       (["img.png", "--vpdq", "x.vpdq"], "is an image: --vpdq is for videos")):
        res = CliRunner().invoke(cli, ["hash", *[str(tmp_path / a) if i == 0 else a for i, a in enumerate(args)]])
        assert res.exit_code == 2 and says in res.output, (args, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)


def test_without_the_video_extra_a_non_image_is_unavailable_and_names_the_extra(tmp_path):
    """Fail closed, not "no match" or a traceback: ``vpdq`` missing (a shim on
    PYTHONPATH makes ``import vpdq`` fail, whether or not it is installed)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "vpdq.py").write_text("raise ImportError('the [video] extra is not installed')\n")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    res = subprocess.run([sys.executable, "-m", "federation", "hash", str(tmp_path / "clip.mp4")],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(shim)})
    assert res.returncode == 5, res
    assert "needs the vpdq package" in res.stderr + res.stdout and "Traceback" not in res.stderr
