"""CLI: ``federation hash FILE`` -- the hashes a platform or clearinghouse
matches and publishes. Thin: the work is in ``platform.media``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from federation.core.errors import InputError


@click.command("hash")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object (a video's frames as vPDQ text).")
@click.option("--vpdq", "vpdq_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Video: also write its vPDQ text (frame,quality,pdq_hex,timestamp lines) to this file.")
@click.option("--add", "add_case", metavar="CASE",
              help="Print the file's hashes as JSONL 'add' lines of case CASE, for 'federation publish'.")
@click.option("--labels", default="", help="With --add: labels, separated by ';' or spaces.")
def hash_cmd(file: Path, as_json, vpdq_out, add_case, labels):
    """Hash FILE: an image gives PDQ, MD5 and SHA-256; a video gives vPDQ
    (a PDQ hash a second with quality and timestamp), MD5 and SHA-256.

    Exit 2 if FILE is neither; 5 if the hashing library for its kind is not
    installed (pip install 'hashlist-federation[image,video]').

    \b
    Example:
      federation hash upload.jpg
      federation hash clip.mp4 --vpdq clip.vpdq
      federation hash clip.mp4 --add case-17 --labels csam | federation publish tid - --format jsonl
    """
    from federation.core.vpdq import format_frames, video_id
    from federation.platform.media import hash_file
    h = hash_file(file)
    vpdq_text = format_frames(h.frames) if h.kind == "video" else None
    if vpdq_out is not None and vpdq_text is None:
        raise InputError(f"{file} is an image: --vpdq is for videos")
    if vpdq_out is not None:
        vpdq_out.write_text(vpdq_text)
    values = {"md5": h.md5.hex(), "sha256": h.sha256.hex()}
    if h.kind == "image":
        values["pdq"] = h.pdq.hex()
    else:
        values["vpdq"] = vpdq_text
    if add_case is not None:
        for hash_type in ("pdq", "vpdq", "md5", "sha256"):
            if hash_type in values:
                click.echo(json.dumps({"op": "add", "type": hash_type, "hash": values[hash_type],
                                       "case": add_case, "labels": labels}))
        return
    if as_json:
        out = {"file": str(file), "kind": h.kind, **values}
        if h.kind == "image":
            out["pdq_quality"] = h.pdq_quality
        else:
            out.update(frames=len(h.frames), video=video_id(h.frames).hex())
        click.echo(json.dumps(out))
        return
    click.echo(f"kind {h.kind}")
    if h.kind == "image":
        click.echo(f"pdq {h.pdq.hex()} quality={h.pdq_quality}")
    else:
        click.echo(f"vpdq {len(h.frames)} frames video={video_id(h.frames).hex()}"
                   + (f" (written to {vpdq_out})" if vpdq_out else ""))
    click.echo(f"md5 {values['md5']}")
    click.echo(f"sha256 {values['sha256']}")


def register(cli: click.Group) -> None:
    cli.add_command(hash_cmd)
