"""C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint) note bodies.

Pure. A checkpoint body is exactly three lines -- origin, decimal tree size
without leading zeros (at most 2**63 - 1, what SQLite stores), canonical
base64 of a 32-byte root hash -- each ending in a newline. This project
writes no extension lines and rejects any it receives, so every signed byte
is auditable. Every rule here is docs/PROTOCOL.md section 3, and every
failure is ``MalformedError`` except an origin other than the expected one,
which is ``SignatureError`` (the trusted key signed a tree of another log).
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from federation.core.b64 import b64decode_canonical
from federation.core.errors import MalformedError, SignatureError
from federation.core.note import Note, Signer, Verifier, open_note, parse_note, sign_note

# An origin: printable ASCII without space and '+' (tlog-checkpoint: "neither
# Unicode spaces nor plus"; a URL prefix without scheme is ASCII), and not the
# tlog-cosignature header line, so a checkpoint text can never read as a
# cosigned message (docs/PROTOCOL.md section 3a).
ORIGIN_RE = re.compile(r"[\x21-\x2a\x2c-\x7e]+")  # full match
RESERVED_ORIGIN = "cosignature/v1"
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")  # full match; at most 19 digits, checked <= 2**63 - 1 below
MAX_TREE_SIZE = (1 << 63) - 1  # SQLite's INTEGER; tlog-checkpoint allows up to 2**64 - 1


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()

    def sign(self, signers: list[Signer]) -> bytes:
        return sign_note(self.body(), signers)


def check_origin_text(origin: str) -> str:
    """'' when ``origin`` may be a checkpoint origin, else what is wrong with it."""
    if not ORIGIN_RE.fullmatch(origin):
        return "must be printable ASCII (U+0021..U+007E) other than '+', at least one character"
    if origin == RESERVED_ORIGIN:
        return "is reserved (it is the tlog-cosignature header line)"
    return ""


def parse_checkpoint_body(text: bytes) -> Checkpoint:
    """Parse a checkpoint note text; raises ``MalformedError``."""
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise MalformedError("checkpoint is not UTF-8") from e
    if lines[-1] != "":
        raise MalformedError("checkpoint text must end with a newline")
    lines = lines[:-1]
    if len(lines) < 3:
        raise MalformedError(f"checkpoint has {len(lines)} lines, want origin, size and root")
    if len(lines) > 3:
        raise MalformedError("checkpoint has extension lines; this protocol allows none")
    origin, size_line, root_line = lines
    origin_problem = check_origin_text(origin)
    if origin_problem:
        raise MalformedError(f"checkpoint origin {origin[:100]!r} {origin_problem}")
    if not _SIZE_RE.fullmatch(size_line):
        raise MalformedError(f"checkpoint tree size {size_line[:40]!r} is not a canonical decimal of at most 19 digits")
    if int(size_line) > MAX_TREE_SIZE:
        raise MalformedError(f"checkpoint tree size {size_line} is over this implementation's limit of 2**63 - 1")
    try:
        root = b64decode_canonical(root_line)
    except MalformedError as e:
        raise MalformedError(f"checkpoint root hash: {e}") from e
    if len(root) != 32:
        raise MalformedError(f"checkpoint root hash is {len(root)} bytes, want 32")
    return Checkpoint(origin, int(size_line), root)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose note verified against the log's trusted keys."""

    checkpoint: Checkpoint
    note: Note
    raw: bytes  # the exact bytes received, re-served unchanged by relays


def open_checkpoint(data: bytes, origin: str, log_keys: list[Verifier]) -> SignedCheckpoint:
    """Verify a checkpoint note from ``origin`` signed by one of ``log_keys``."""
    note = open_note(data, log_keys)
    cp = parse_checkpoint_body(note.text)
    if cp.origin != origin:
        raise SignatureError(f"checkpoint origin is {cp.origin!r}, expected {origin!r}")
    return SignedCheckpoint(cp, note, data)


def checkpoint_size(note: bytes) -> int:
    """Tree size of a checkpoint note, unverified (a hint: for waiting, listing
    and audit records, never for trusting anything)."""
    return parse_checkpoint_body(parse_note(note).text).size
