"""Trust files: who may sign a followed feed, and how fresh it must be.

A trust file (``keys/<feed>.trust``) is a C2SP signed note whose text is a
small TOML document, so an operator can read it and ``diff`` two versions::

    format = "federation-trust/v1"
    origin = "clearinghouse.example/feeds/tid"
    version = 1
    max_staleness_seconds = 86400
    log_keys = ["clearinghouse.example/feeds/tid+1a2b3c4d+AW..."]

    [witnesses]
    quorum = 1
    keys = ["witness.platform-a.example+5e6f7a8b+BA..."]

    [trust_keys]
    threshold = 1
    keys = ["clearinghouse.example/trust/root-1+9c0d1e2f+AW..."]

    — clearinghouse.example/trust/root-1 <base64 signature>

* ``log_keys`` (type 0x01) sign checkpoints; each key's name is the origin.
* ``witnesses.keys`` (type 0x04) make timestamped cosignatures
  (c2sp.org/tlog-cosignature); a checkpoint is accepted only with valid
  cosignatures from ``quorum`` of them, a quorum of them at most
  ``max_staleness_seconds`` old. Any quorum will do: a trusted witness's
  cosignature that does not verify or is dated in the future (beyond
  ``clock_skew_allowance``) is not counted and is reported, and the others
  still make the quorum (``quorum_cosignatures``).
* ``trust_keys`` (type 0x01) sign trust files. Version N+1 needs
  ``threshold`` signatures of version N's trust keys *and* of its own
  (``federation.rotation``).

Pure: bytes in, a ``TrustFile`` or a precise exception out. ``parse_trust``
raises ``MalformedError``/``SignatureError`` (remote bytes);
``load_trust_file`` turns those into ``InputError`` naming the file, for an
operator's file. Invariants of a returned ``TrustFile``: every key parsed and
has the type of its role; no public key is listed twice (under any name)
or in two roles, so thresholds and quorums count distinct keys;
``1 <= quorum <= len(witnesses)``; ``1 <= threshold <= len(trust_keys)``;
and the file carries valid signatures by ``threshold`` of its own trust keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federation.core.bounded import toml_loads
from federation.core.checkpoint import check_origin_text
from federation.core.errors import FederationError, InputError, MalformedError, SignatureError, StaleError
from federation.core.note import (SIG_COSIGNATURE_V1, SIG_ED25519, Note, Signer, Verifier, parse_note, parse_vkey,
                   sign_note)

FORMAT = "federation-trust/v1"
MAX_TRUST_BYTES = 32 * 1024
MAX_KEYS_PER_ROLE = 32
TRUST_MAX_DEPTH = 4  # document -> table -> key list -> key; deeper is malformed
MAX_STALENESS_LIMIT = 366 * 86400
# tlog-cosignature: verifiers MAY reject timestamps in the future. A little
# clock skew between witness and mirror is normal; more is refused.
MAX_CLOCK_SKEW = 300


def clock_skew_allowance(max_age: int) -> int:
    """Seconds a signed timestamp may lie in the future, for a freshness
    window of ``max_age`` seconds: at most ``MAX_CLOCK_SKEW`` and at most a
    tenth of the window, so a future-dated timestamp can extend freshness by
    no more than 10% (with a 20 s window, 2 s; with a day, 300 s)."""
    return max(0, min(MAX_CLOCK_SKEW, max_age // 10))

_TOP = {"format", "origin", "version", "max_staleness_seconds", "log_keys", "witnesses", "trust_keys"}
_WITNESSES = {"quorum", "keys"}
_TRUST_KEYS = {"threshold", "keys"}


class QuorumError(SignatureError):
    """Fewer than the required witnesses cosigned a checkpoint (possible split view)."""


@dataclass(frozen=True)
class TrustFile:
    origin: str
    version: int
    max_staleness: int
    log_keys: tuple[Verifier, ...]
    witness_keys: tuple[Verifier, ...]
    quorum: int
    trust_keys: tuple[Verifier, ...]
    threshold: int
    note: Note  # signatures as received; note.text is the TOML
    raw: bytes  # exact bytes, stored and re-served unchanged

    @property
    def text(self) -> str:
        return self.note.text.decode()

    def describe(self) -> str:
        return f"trust version {self.version} for {self.origin}"


# ---- writing ------------------------------------------------------------------


def _toml_list(values: list[str]) -> str:
    return "[\n" + "".join(f'  "{v}",\n' for v in values) + "]"


def render_trust(origin: str, version: int, max_staleness: int, log_keys: list[str], witness_keys: list[str],
                 quorum: int, trust_keys: list[str], threshold: int) -> bytes:
    """The canonical TOML text of a trust file (unsigned). Checked by parsing it back."""
    text = (
        "# federation trust file: see keys/README.md and docs/trust.md.\n"
        "# Check it out of band with the feed's operator before trusting it.\n"
        f'format = "{FORMAT}"\n'
        f'origin = "{origin}"\n'
        f"version = {version}\n"
        f"max_staleness_seconds = {max_staleness}\n"
        f"log_keys = {_toml_list(log_keys)}\n"
        "\n[witnesses]\n"
        f"quorum = {quorum}\n"
        f"keys = {_toml_list(witness_keys)}\n"
        "\n[trust_keys]\n"
        f"threshold = {threshold}\n"
        f"keys = {_toml_list(trust_keys)}\n"
    ).encode()
    _parse_body(text)  # refuse to write what we would refuse to read
    return text


def sign_trust(text: bytes, signers: list[Signer]) -> bytes:
    """Sign a trust file's TOML text with trust keys (old and/or new ones)."""
    return sign_note(text, signers)


def add_trust_signatures(data: bytes, signers: list[Signer]) -> bytes:
    """Add signatures to an already signed trust file (signing ceremonies with
    several key holders: each adds theirs)."""
    note = parse_note(data)
    have = {(s.name, s.key_id) for s in note.signatures}
    extra = sign_note(note.text, [s for s in signers if (s.name, s.verifier.key_id) not in have])
    return note.to_bytes() + extra[len(note.text) + 1:]


# ---- parsing ------------------------------------------------------------------


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise MalformedError(message)


def _int(table: dict, key: str, where: str) -> int:
    value = table.get(key)
    # bool is an int subclass in Python; "quorum = true" must not read as 1.
    _require(isinstance(value, int) and not isinstance(value, bool), f"{where}{key} must be an integer")
    return value


def _keys(values, role: str, sig_type: int, strict: bool = True) -> tuple[Verifier, ...]:
    """The keys of one role. ``strict=False`` (a stored file that was
    accepted before a rule existed) keeps the first of keys sharing a public
    key instead of refusing the file: it still counts as one vote."""
    _require(isinstance(values, list) and all(isinstance(v, str) for v in values),
             f"{role} must be a list of vkey strings")
    _require(len(values) <= MAX_KEYS_PER_ROLE, f"{role} lists {len(values)} keys, over {MAX_KEYS_PER_ROLE}")
    out = []
    for v in values:
        try:
            key = parse_vkey(v)
        except InputError as e:
            raise MalformedError(f"{role}: {e}") from None
        want = "0x01 (Ed25519)" if sig_type == SIG_ED25519 else "0x04 (cosignature/v1)"
        _require(key.sig_type == sig_type, f"{role}: key {key.name}+{key.key_id:08x} must have type {want}")
        if not strict and any(k.public_key == key.public_key for k in out):
            continue
        _require(key not in out, f"{role}: key {key.name}+{key.key_id:08x} is listed twice")
        # The signed-note and cosignature/v1 messages do not commit to the key's
        # name: one key listed under two names would sign for both, two votes.
        for k in out:
            _require(k.public_key != key.public_key, f"{role}: key {key.name}+{key.key_id:08x} has the public key "
                                                     f"of {k.name}+{k.key_id:08x}: the same key listed twice "
                                                     "under different names (one key, one vote)")
        _require(all((k.name, k.key_id) != (key.name, key.key_id) for k in out),
                 f"{role}: two different keys share the name and key ID {key.name}+{key.key_id:08x}")
        out.append(key)
    return tuple(out)


def _parse_body(text: bytes, strict: bool = True) -> dict:
    # Bounded before parsing: a hostile trust/latest with a huge integer or
    # deep nesting is malformed, not a ValueError/RecursionError.
    doc = toml_loads(text, "trust file", max_bytes=MAX_TRUST_BYTES, max_depth=TRUST_MAX_DEPTH)
    unknown = set(doc) - _TOP
    _require(not unknown, f"trust file has unknown field(s): {', '.join(sorted(unknown))}")
    _require(doc.get("format") == FORMAT, f"trust file format must be {FORMAT!r}, got {doc.get('format')!r}")
    origin = doc.get("origin")
    _require(isinstance(origin, str) and not check_origin_text(origin),
             f"origin {str(origin)[:100]!r} is not a checkpoint origin (docs/PROTOCOL.md section 3): "
             f"{check_origin_text(origin) if isinstance(origin, str) else 'not a string'}")
    version = _int(doc, "version", "")
    _require(version >= 1, f"version must be at least 1, got {version}")
    staleness = _int(doc, "max_staleness_seconds", "")
    _require(0 < staleness <= MAX_STALENESS_LIMIT,
             f"max_staleness_seconds must be between 1 and {MAX_STALENESS_LIMIT}, got {staleness}")
    log_keys = _keys(doc.get("log_keys"), "log_keys", SIG_ED25519)
    _require(len(log_keys) >= 1, "log_keys must list at least one key")
    for k in log_keys:
        # The publisher signs checkpoints with a key named after the origin.
        _require(k.name == origin, f"log key {k.name}+{k.key_id:08x} is not named after the origin {origin!r}")
    tables = {}
    for name, fields in (("witnesses", _WITNESSES), ("trust_keys", _TRUST_KEYS)):
        t = doc.get(name)
        _require(isinstance(t, dict), f"trust file needs a [{name}] table")
        extra = set(t) - fields
        _require(not extra, f"[{name}] has unknown field(s): {', '.join(sorted(extra))}")
        tables[name] = t
    w = tables["witnesses"]
    witness_keys = _keys(w.get("keys"), "witnesses.keys", SIG_COSIGNATURE_V1, strict)
    # A witness named after the origin would share the log's own lines' name
    # (its signature and timestamp), and tools that sort lines by name (key
    # rotation keeps the log's lines, replaces the rest) would mistake it.
    _require(all(k.name != origin for k in witness_keys),
             f"a witness key is named after the origin {origin!r}: that name is the log's own")
    quorum = _int(w, "quorum", "witnesses.")
    # A quorum of 0 would accept checkpoints with no timestamp: no freshness
    # and no split-view protection. That contradicts max_staleness_seconds.
    # Mirrors count one vote per witness name (a witness may list an old and
    # a new key while it rotates), so a quorum above the names is unreachable.
    names = len({k.name for k in witness_keys})
    _require(1 <= quorum <= (names if strict else len(witness_keys)),
             f"witnesses.quorum is {quorum} with {len(witness_keys)} witness key(s) ({names} distinct witness "
             f"name(s)); want 1..{names}")
    t = tables["trust_keys"]
    trust_keys = _keys(t.get("keys"), "trust_keys.keys", SIG_ED25519, strict)
    threshold = _int(t, "threshold", "trust_keys.")
    _require(1 <= threshold <= len(trust_keys),
             f"trust_keys.threshold is {threshold} with {len(trust_keys)} trust key(s); want 1..{len(trust_keys)}")
    # One key, one role: a stolen log key must not also rotate trust, and the
    # cosignature/v1 message does not commit to the signer's role (spec).
    seen: dict[bytes, str] = {}
    for role, keys in (("log_keys", log_keys), ("witnesses.keys", witness_keys), ("trust_keys.keys", trust_keys)):
        for k in keys:
            other = seen.setdefault(k.public_key, role)
            _require(other == role, f"the same public key appears in {other} and {role} ({k.name})")
    return dict(origin=origin, version=version, max_staleness=staleness, log_keys=log_keys,
                witness_keys=witness_keys, quorum=quorum, trust_keys=trust_keys, threshold=threshold)


def verified_signers(note: Note, keys: tuple[Verifier, ...] | list[Verifier]) -> list[Verifier]:
    """The keys among ``keys`` with a valid signature on ``note``.

    signed-note: unknown keys are ignored; a known key whose signature does
    not verify rejects the whole note. One entry per distinct public key: a
    key listed under two names (which ``_keys`` refuses, but a stored file
    may predate that) signs as one, so a threshold counts keys, not names.
    """
    known = {(k.name, k.key_id): k for k in keys}
    good: list[Verifier] = []
    for sig in note.signatures:
        k = known.get((sig.name, sig.key_id))
        if k is None:
            continue
        if not k.verify(note.text, sig.signature):
            raise SignatureError(f"signature by {k.name}+{k.key_id:08x} does not verify")
        if all(g.public_key != k.public_key for g in good):
            good.append(k)
    return good


def parse_trust_unverified(data: bytes, strict: bool = True) -> TrustFile:
    """Parse and check the fields, without checking any signature.

    Only for reading the version number of a candidate before verifying it.
    """
    if len(data) > MAX_TRUST_BYTES:
        raise MalformedError(f"trust file is {len(data)} bytes, over {MAX_TRUST_BYTES}")
    note = parse_note(data)
    return TrustFile(note=note, raw=data, **_parse_body(note.text, strict))


def parse_trust(data: bytes, strict: bool = True) -> TrustFile:
    """Parse a signed trust file and check it is signed by a threshold of its own keys.

    ``strict=False`` is for a version the store accepted earlier, under the
    rules of its time: a key listed twice in a role (refused since) counts
    once instead of making the stored chain unreadable -- so its holder can
    still verify and publish the corrected successor. Files from the
    network and from operators are always parsed strictly.
    """
    tf = parse_trust_unverified(data, strict)
    good = verified_signers(tf.note, tf.trust_keys)
    if len(good) < tf.threshold:
        raise SignatureError(f"{tf.describe()} is signed by {len(good)} of its own trust keys, "
                             f"needs {tf.threshold}")
    return tf


def load_trust_file(path: Path | str) -> TrustFile:
    """Read an operator's trust file; any problem is an ``InputError`` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read trust file {path}: {e.strerror}") from None
    try:
        return parse_trust(data)
    except FederationError as e:
        raise InputError(f"trust file {path}: {e}") from None


# ---- acceptance of a checkpoint --------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    """Witnesses whose cosignatures verified, and the time a quorum vouched for."""

    cosigners: dict[str, int]  # witness name -> newest timestamp
    quorum_time: int  # the quorum-th newest timestamp
    ignored: tuple[str, ...] = ()  # trusted witnesses' cosignatures not counted, each with why


def cosignature_problem(key: Verifier, text: bytes, signature: bytes, now: int, allowance: int) -> str:
    """Why ``key``'s cosignature on note ``text`` must not be counted, or "".

    Used by mirrors (``quorum_cosignatures``) and by the publisher before it
    serves a note (``cosign.cosign_feed``), so both apply the same rule.
    tlog-cosignature: verifiers MAY reject timestamps in the future; a
    little skew is normal, up to ``allowance`` seconds.
    """
    if not key.verify(text, signature):
        return "does not verify"
    t = key.cosignature_time(signature) or 0  # never None: key is type 0x04 and verified
    if t > now + allowance:
        return f"is dated {t - now} s in the future (allowed clock skew: {allowance} s)"
    return ""


def check_cosignatures(trust: TrustFile, note_bytes: bytes, now: int, what: str = "checkpoint") -> Freshness:
    """Require valid cosignatures by ``quorum`` witnesses, a quorum of them fresh enough.

    Freshness uses the quorum-th newest timestamp: a quorum of witnesses
    must each have seen this tree as their newest within
    ``max_staleness`` seconds. One fresh witness alone cannot vouch for a
    frozen view. Raises ``QuorumError`` (too few trusted witnesses with a
    countable cosignature: a possible split view; the message names the
    ones not counted and why) or ``StaleError`` (a freeze).
    """
    fresh = quorum_cosignatures(trust, note_bytes, now, what)
    age = now - fresh.quorum_time
    if age > trust.max_staleness:
        raise StaleError(f"{what}: newest time a quorum of {trust.quorum} witness(es) vouched for it is {age} s ago, "
                         f"over the maximum of {trust.max_staleness} s (frozen or withheld feed)"
                         + _not_counted(fresh.ignored))
    return fresh


def _not_counted(ignored) -> str:
    return f"; not counted: {'; '.join(ignored)}" if ignored else ""


def quorum_cosignatures(trust: TrustFile, note_bytes: bytes, now: int, what: str = "checkpoint") -> Freshness:
    """``check_cosignatures`` without the staleness limit: the verified
    cosigners and the quorum time, however old.

    A quorum is any quorum (tlog-cosignature lets a client verify a quorum
    of cosignatures): each trusted witness's cosignature is counted or set
    aside on its own, so one witness with a bad cosignature (a wrong key, a
    clock ahead by more than ``clock_skew_allowance``) cannot veto the
    checkpoint while ``quorum`` others vouch for it. Set-aside ones are
    listed in ``Freshness.ignored`` and in the ``QuorumError``. This is not
    the signed-note rule for the *log's* key (a known key whose signature
    does not verify rejects the note, ``note.open_note``), which still holds.

    One vote per witness: per distinct public key, and per name (a witness
    listed with an old and a new key while it rotates counts once).
    """
    note = parse_note(note_bytes)
    allowance = clock_skew_allowance(trust.max_staleness)
    known = {(k.name, k.key_id): k for k in trust.witness_keys}
    # The log's own lines: its signatures and its timestamps (freshness), not "unknown keys".
    logs = {(k.name, k.key_id) for k in trust.log_keys} | \
        {(t.name, t.key_id) for t in (k.timestamp_key() for k in trust.log_keys)}
    times: dict[str, int] = {}
    counted: dict[bytes, str] = {}  # public key -> the witness name it voted as
    unknown: list[str] = []
    ignored: list[str] = []
    for sig in note.signatures:
        k = known.get((sig.name, sig.key_id))
        if k is None:
            if (sig.name, sig.key_id) not in logs:
                unknown.append(f"{sig.name}+{sig.key_id:08x}")
            continue
        problem = cosignature_problem(k, note.text, sig.signature, now, allowance)
        if problem:
            ignored.append(f"cosignature by witness {k.name}+{k.key_id:08x} {problem}")
            continue
        if counted.setdefault(k.public_key, k.name) != k.name:
            ignored.append(f"witness {k.name}+{k.key_id:08x} has the public key of witness "
                           f"{counted[k.public_key]}: one key, one vote")
            continue
        times[k.name] = max(times.get(k.name, 0), k.cosignature_time(sig.signature) or 0)
    if len(times) < trust.quorum:
        trusted = ", ".join(k.name for k in trust.witness_keys)
        unknown_note = f"; ignored signatures by keys not in the trust file: {', '.join(unknown)}" if unknown else ""
        raise QuorumError(f"{what}: witness quorum not met: cosigned by {len(times)} of the {trust.quorum} "
                          f"required trusted witnesses ({trusted}){_not_counted(ignored)}{unknown_note}. "
                          "Refusing a view no quorum of witnesses has seen (possible split view)")
    return Freshness(times, sorted(times.values(), reverse=True)[trust.quorum - 1], tuple(ignored))
