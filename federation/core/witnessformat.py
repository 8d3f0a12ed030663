"""The c2sp.org/tlog-witness wire format (``add-checkpoint``). Pure.

A request body is an ``old <size>`` line, the consistency proof's hashes
(base64, one per line, at most ``MAX_PROOF_LINES``), an empty line, and the
checkpoint note. A 409 answer names the witness's latest size as a decimal
line with content type ``text/x.tlog.size``. ``add_checkpoint_body`` writes
requests (the publisher's witness client), ``parse_request`` reads them
(the witness), ``witness_size`` reads a 409's size.
"""
from __future__ import annotations

import base64
import binascii
import re

from federation.core.bounded import parse_uint
from federation.core.errors import BadWitnessRequest, MalformedError
from federation.core.note import MAX_NOTE_BYTES

MAX_PROOF_LINES = 63  # tlog-witness: clients MUST NOT send more
MAX_BODY = MAX_NOTE_BYTES + (MAX_PROOF_LINES + 2) * 64
_OLD_RE = re.compile(rb"old (0|[1-9][0-9]{0,18})")  # fullmatch; sizes fit 63 bits (checkpoint.MAX_TREE_SIZE)


def parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Split an add-checkpoint body into (old size, proof, checkpoint note); ``BadWitnessRequest`` (400)."""
    pos = 0
    lines = []
    while True:
        end = body.find(b"\n", pos)
        if end < 0:
            raise BadWitnessRequest("request body: missing the empty line before the checkpoint")
        line = body[pos:end]
        pos = end + 1
        if line == b"":
            break
        lines.append(line)
        if len(lines) > MAX_PROOF_LINES + 1:
            raise BadWitnessRequest(f"request body: more than {MAX_PROOF_LINES} consistency proof lines")
    if not lines:
        raise BadWitnessRequest("request body: missing the old size line")
    m = _OLD_RE.fullmatch(lines[0])
    if not m:
        raise BadWitnessRequest("request body: first line must be 'old <size>' without leading zeroes")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise BadWitnessRequest("request body: consistency proof line is not base64") from None
        if len(h) != 32:
            raise BadWitnessRequest("request body: consistency proof hash is not 32 bytes")
        proof.append(h)
    return int(m[1]), proof, body[pos:]


def add_checkpoint_body(old_size: int, proof: list[bytes], note: bytes) -> bytes:
    """tlog-witness request body: old size line, proof lines, empty line, checkpoint."""
    lines = [f"old {old_size}\n".encode()] + [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + note


def witness_size(text: str) -> int | None:
    """The size a witness's 409 names, or None if it is not a plain decimal
    (``str.isdigit`` also accepts "²", which ``int()`` then refuses)."""
    try:
        return parse_uint(text, "witness size", error=MalformedError)
    except MalformedError:
        return None
