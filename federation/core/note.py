"""C2SP signed-note (https://c2sp.org/signed-note) with Ed25519 keys.

Pure: bytes in, verified ``Note`` or ``SignatureError``/``MalformedError`` out.

Formats implemented here, byte for byte as the spec and Go's
``golang.org/x/mod/sumdb/note`` write them:

* signature line: ``"— " name " " base64(key_id[4] || signature) "\\n"``
* key ID: ``SHA-256(name || 0x0A || type || public key)[:4]``, big-endian uint32
* verifier key (vkey): ``name "+" hex8(key_id) "+" base64(type || public key)``
* private key file: ``"PRIVATE+KEY+" name "+" hex8(key_id) "+" base64(type || seed)``

Invariants: a ``Note`` returned by ``open_note`` has at least one signature
by a trusted key that verified; a known key with a bad signature rejects the
whole note (the spec's SHOULD, taken as MUST here); unknown keys are ignored.
"""
from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.core.b64 import b64decode_canonical
from federation.core.errors import InputError, MalformedError, SignatureError

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 100  # spec: MUST accept at least 16
MAX_COSIGNATURE_TIME = (1 << 63) - 1
EM_DASH = "\u2014"

# A key name: one or more characters, none of them '+' or one of these
# (docs/PROTOCOL.md section 3). The list is spelled out, not "\s", so the rule
# does not move with Python's Unicode tables; it is exactly the set Python's
# str.isspace() gives today (tests/protocol/test_note_and_checkpoint_rules.py): Unicode White_Space,
# plus U+001C..U+001F, which can never appear in a note anyway.
NAME_FORBIDDEN = ("+\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                  "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_NAME_RE = re.compile("[^" + re.escape(NAME_FORBIDDEN) + "]+")  # fullmatch: "$" would let a trailing newline through


# The characters a note may not hold (c2sp.org/signed-note): C0 controls
# except newline. DEL and the C1 controls are allowed, as in the spec and Go's
# sumdb/note (a checkpoint's origin is stricter: checkpoint.ORIGIN_RE).
_CONTROL_RE = re.compile("[\x00-\x09\x0b-\x1f]")


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """signed-note key ID: first four bytes of SHA-256(name || \\n || type || key)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    """c2sp.org/tlog-cosignature, "Ed25519 signed message": what a type 0x04
    key signs for checkpoint note text ``text`` at ``timestamp``."""
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def check_key_name(name: str) -> str:
    if not name or not _NAME_RE.fullmatch(name):
        raise InputError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
    return name


def _b64decode(text: str, what: str) -> bytes:
    try:
        return b64decode_canonical(text)
    except MalformedError as e:
        raise MalformedError(f"{what}: {e}") from e


@dataclass(frozen=True)
class Verifier:
    """A public key that can check one kind of signature on a note."""

    name: str
    key_id: int
    sig_type: int
    public_key: bytes

    @property
    def vkey(self) -> str:
        blob = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{blob}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (key ID stripped) is valid over ``text``.

        Type 0x04 (c2sp.org/tlog-cosignature) signs
        ``"cosignature/v1\ntime <T>\n" || text`` and prefixes the 64-byte
        signature with T as a big-endian uint64.
        """
        if self.sig_type == SIG_COSIGNATURE_V1:
            if len(signature) != 72:
                return False
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp > MAX_COSIGNATURE_TIME:  # tlog-cosignature: MUST NOT exceed 2^63 - 1
                return False
            text = cosigned_message(text, timestamp)
            signature = signature[8:]
        elif self.sig_type != SIG_ED25519:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
            return True
        except (InvalidSignature, ValueError):
            return False

    def timestamp_key(self) -> "Verifier":
        """The type 0x04 (tlog-cosignature) verifier of this Ed25519 key under
        the same name: how a log's own timestamps are checked
        (``federation.freshness``). Its key ID differs (the type byte is
        hashed in), so verifiers that know only the log key ignore the line."""
        return Verifier(self.name, key_id(self.name, SIG_COSIGNATURE_V1, self.public_key), SIG_COSIGNATURE_V1,
                        self.public_key)

    def cosignature_time(self, signature: bytes) -> int | None:
        """The timestamp of a type 0x04 cosignature, or None for other types."""
        if self.sig_type != SIG_COSIGNATURE_V1 or len(signature) != 72:
            return None
        return int.from_bytes(signature[:8], "big")


def parse_vkey(vkey: str) -> Verifier:
    """Parse a ``name+hex8+base64`` verifier key. Ed25519 (0x01) and
    cosignature (0x04) keys are accepted; the key ID must match the key."""
    parts = vkey.strip().split("+", 2)  # the base64 part may itself contain '+'
    if len(parts) != 3:
        raise InputError(f"malformed vkey {vkey!r}: want name+keyid+key")
    name, hex_id, blob = parts
    check_key_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise InputError(f"malformed vkey {vkey!r}: key ID must be 8 lower-case hex digits")
    try:
        raw = b64decode_canonical(blob)
    except MalformedError as e:
        raise InputError(f"malformed vkey {vkey!r}: {e}") from e
    if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
        raise InputError(f"malformed vkey {vkey!r}: want type 0x01 or 0x04 and a 32-byte Ed25519 key")
    kid = int(hex_id, 16)
    if kid != key_id(name, raw[0], raw[1:]):
        raise InputError(f"malformed vkey {vkey!r}: key ID does not match the key")
    return Verifier(name, kid, raw[0], raw[1:])


def format_private_key(name: str, sig_type: int, seed: bytes, kid: int) -> str:
    blob = base64.b64encode(bytes([sig_type]) + seed).decode()
    return f"PRIVATE+KEY+{name}+{kid:08x}+{blob}"


def parse_private_key(text: str, sig_type: int) -> tuple[str, bytes, str]:
    """``PRIVATE+KEY+name+keyid+base64(type || seed)`` -> (name, seed, hex key id).

    The caller checks the key ID against the key it derives from the seed.
    """
    parts = text.strip().split("+", 4)  # the base64 part may itself contain '+'
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise InputError("malformed private key: want PRIVATE+KEY+name+keyid+key")
    name, hex_id, blob = parts[2:]
    check_key_name(name)
    try:
        raw = b64decode_canonical(blob)
    except MalformedError as e:
        raise InputError(f"malformed private key: {e}") from e
    if len(raw) != 33 or raw[0] != sig_type:
        raise InputError(f"malformed private key: want type 0x{sig_type:02x} and a 32-byte seed")
    return name, raw[1:], hex_id


class Signer:
    """An Ed25519 note signer. Only ``federation.keys`` creates these from files."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        self.name = check_key_name(name)
        self._key = private_key
        pub = private_key.public_key().public_bytes_raw()
        self.verifier = Verifier(name, key_id(name, SIG_ED25519, pub), SIG_ED25519, pub)

    @classmethod
    def generate(cls, name: str) -> "Signer":
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> "Signer":
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def private_key_text(self) -> str:
        return format_private_key(self.name, SIG_ED25519, self._key.private_bytes_raw(), self.verifier.key_id)

    @classmethod
    def from_private_key_text(cls, text: str) -> "Signer":
        name, seed, hex_id = parse_private_key(text, SIG_ED25519)
        signer = cls.from_seed(name, seed)
        if f"{signer.verifier.key_id:08x}" != hex_id:
            raise InputError("malformed private key: key ID does not match the key")
        return signer

    def sign(self, text: bytes) -> bytes:
        """Return ``key_id || signature`` over the note text."""
        return self.verifier.key_id.to_bytes(4, "big") + self._key.sign(text)

    def timestamp(self, text: bytes, when: int) -> "NoteSignature":
        """A tlog-cosignature (type 0x04) of checkpoint text ``text`` at time
        ``when`` by this log key: the log's own statement that, as of
        ``when``, this is its newest tree (``federation.freshness``)."""
        if not 0 <= when <= MAX_COSIGNATURE_TIME:
            raise InputError(f"timestamp {when} out of range")
        twin = self.verifier.timestamp_key()
        sig = when.to_bytes(8, "big") + self._key.sign(cosigned_message(text, when))
        return NoteSignature(self.name, twin.key_id, sig)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes  # without the 4-byte key ID

    def line(self) -> bytes:
        blob = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode()
        return f"{EM_DASH} {self.name} {blob}\n".encode()


@dataclass(frozen=True)
class Note:
    text: bytes
    signatures: tuple[NoteSignature, ...]
    verified_by: tuple[Verifier, ...] = field(default=())

    def to_bytes(self) -> bytes:
        return self.text + b"\n" + b"".join(s.line() for s in self.signatures)


def check_note_text(text: bytes) -> None:
    """Note text must be UTF-8, end in a newline, and carry no C0 control
    character other than newline (U+0000..U+0009, U+000B..U+001F)."""
    if not text.endswith(b"\n"):
        raise MalformedError("note text must end with a newline")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedError("note is not valid UTF-8") from e
    bad = _CONTROL_RE.search(decoded)
    if bad is not None:
        raise MalformedError(f"note contains the control character U+{ord(bad.group()):04X}")


def sign_note(text: bytes, signers: list[Signer]) -> bytes:
    """Sign ``text`` with every signer and return the whole note."""
    check_note_text(text)
    sigs = b"".join(
        NoteSignature(s.name, s.verifier.key_id, s.sign(text)[4:]).line() for s in signers
    )
    return text + b"\n" + sigs


def parse_note(data: bytes) -> Note:
    """Split a note into text and signature lines without verifying anything."""
    if len(data) > MAX_NOTE_BYTES:
        raise MalformedError(f"note is {len(data)} bytes, over the {MAX_NOTE_BYTES}-byte limit")
    check_note_text(data)
    split = data.rfind(b"\n\n")
    if split < 0:
        raise MalformedError("note has no blank line before its signatures")
    text, sig_block = data[: split + 1], data[split + 2 :]
    lines = sig_block.decode().split("\n")
    if lines[-1] != "" or len(lines) < 2:
        raise MalformedError("note has no signature lines")
    lines = lines[:-1]
    if len(lines) > MAX_SIGNATURES:
        raise MalformedError(f"note has {len(lines)} signatures, over the limit of {MAX_SIGNATURES}")
    sigs = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise MalformedError(f"malformed signature line {line[:80]!r}")
        parts = line[2:].split(" ")
        if len(parts) != 2 or not parts[0] or not _NAME_RE.fullmatch(parts[0]):
            raise MalformedError(f"malformed signature line {line[:80]!r}")
        raw = _b64decode(parts[1], "signature line")
        if len(raw) < 5:
            raise MalformedError("signature too short")
        sigs.append(NoteSignature(parts[0], int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(sigs))


def open_note(data: bytes, verifiers: list[Verifier]) -> Note:
    """Parse and verify a signed note against trusted ``verifiers``.

    Returns the note with ``verified_by`` set to the trusted keys whose
    signatures verified. Raises ``SignatureError`` if a trusted key's
    signature fails, or if no trusted key signed at all.
    """
    note = parse_note(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    good: list[Verifier] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue  # spec: verifiers MUST ignore signatures from unknown keys
        if not v.verify(note.text, sig.signature):
            raise SignatureError(f"signature by {v.name}+{v.key_id:08x} does not verify")
        if v not in good:
            good.append(v)
    if not good:
        names = ", ".join(f"{v.name}+{v.key_id:08x}" for v in verifiers) or "none"
        raise SignatureError(f"note is not signed by any trusted key (trusted: {names})")
    return Note(note.text, note.signatures, tuple(good))


class Cosigner:
    """An Ed25519 tlog-cosignature (type 0x04) signer: a witness's key, or a
    publisher's own cosigner. Only ``node.keys`` creates these from files."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        self.name = check_key_name(name)
        self._key = private_key
        pub = private_key.public_key().public_bytes_raw()
        self.verifier = Verifier(name, key_id(name, SIG_COSIGNATURE_V1, pub), SIG_COSIGNATURE_V1, pub)

    @classmethod
    def generate(cls, name: str) -> "Cosigner":
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def cosign(self, text: bytes, timestamp: int | None = None) -> NoteSignature:
        """Cosign a checkpoint note text (with its final newline, no signatures)."""
        t = int(time.time()) if timestamp is None else timestamp
        if not 0 <= t <= MAX_COSIGNATURE_TIME:
            raise InputError(f"cosignature timestamp {t} out of range")
        sig = t.to_bytes(8, "big") + self._key.sign(cosigned_message(text, t))
        return NoteSignature(self.name, self.verifier.key_id, sig)

    def private_key_text(self) -> str:
        return format_private_key(self.name, SIG_COSIGNATURE_V1, self._key.private_bytes_raw(), self.verifier.key_id)

    @classmethod
    def from_private_key_text(cls, text: str) -> "Cosigner":
        name, seed, hex_id = parse_private_key(text, SIG_COSIGNATURE_V1)
        c = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if f"{c.verifier.key_id:08x}" != hex_id:
            raise InputError("malformed cosigner key: key ID does not match the key")
        return c


def with_signatures(note: Note, extra: list[NoteSignature]) -> bytes:
    """``note`` with ``extra`` lines, replacing older lines by the same key."""
    replaced = {(s.name, s.key_id) for s in extra}
    kept = [s for s in note.signatures if (s.name, s.key_id) not in replaced]
    return Note(note.text, tuple(kept) + tuple(extra)).to_bytes()
