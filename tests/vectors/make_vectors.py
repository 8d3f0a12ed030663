#!/usr/bin/env python3
"""Regenerate the golden vectors in this directory.

    python tests/vectors/make_vectors.py           # rewrite vectors.json and checkpoints.txt
    python tests/vectors/make_vectors.py --check   # exit 1 if the files on disk differ

Everything is deterministic: a fixed Ed25519 seed (bytes 0..31; Ed25519
signatures are deterministic), fixed publish times, fixed operations. The
files are what another implementation of docs/PROTOCOL.md should reproduce
byte for byte; tests/test_vectors.py regenerates them and compares.

Contents of vectors.json (bytes as lower-case hex unless the key ends in _b64):

* ``key``: seed, key name, vkey, private key file line, key ID.
* ``note``: a text and the note signed with the key.
* ``entries``: every entry form (add, withdraw by hash / by hash in a case /
  by case, seal) with its fields and encoding, and its RFC 6962 leaf hash.
* ``lthash``: element encodings and LtHash16 digests of small sets.
* ``merkle``: leaf hashes and roots of the feed below, and proofs.
* ``feed``: the feed published by a fixed sequence of versions: per version
  its operations, tree size, count, digest and checkpoint note; the SHA-256 of
  every tile and bundle the publisher stored; the full bytes of a few.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from federation.core import entries as E  # noqa: E402
from federation.core.checkpoint import parse_checkpoint_body  # noqa: E402
from federation.core.layout import ENTRIES, tile_path  # noqa: E402
from federation.core.lthash import LtHash16, digest_of, element_hash  # noqa: E402
from federation.core.merkle import consistency_proof, inclusion_proof, leaf_hash  # noqa: E402
from federation.core.note import Signer, sign_note  # noqa: E402
from federation.store.publisher import Publisher  # noqa: E402
from federation.core.tiles import TileHashes, parse_bundle, parse_hash_tile  # noqa: E402

SEED = bytes(range(32))
ORIGIN = "vectors.example/feeds/golden"
NAME = "golden"
NOW = 1700000000
NOTE_TEXT = b"federation golden vector\nsecond line\n"

# Tiles stored in full (the rest by SHA-256 only, to keep the files small).
FULL_TILES = ["tile/0/000", "tile/0/001.p/35", "tile/1/000.p/1", "tile/entries/001.p/35", "tile/0/000.p/14",
              "tile/entries/000.p/14"]


def h(data: bytes) -> str:
    return data.hex()


def md5(i: int) -> bytes:
    return i.to_bytes(16, "big")


def _ops_json(ops) -> list[dict]:
    out = []
    for o in ops:
        d = {"op": o.op}
        for k, v in vars(o).items():
            if v is None or k == "time":
                continue
            d[k] = h(v) if isinstance(v, bytes) else list(v) if isinstance(v, tuple) else v
        out.append(d)
    return out


def versions() -> list[list]:
    """The operations of each published version (times are stamped at publish)."""
    v1 = [E.Add("md5", md5(i), "case-1", ("csam",), 0) for i in range(8)]
    v1 += [E.Add("sha1", bytes([i]) * 20, "case-2", ("a", "b"), 0) for i in range(2)]
    v1 += [E.Add("sha256", bytes(32), "case-3", (), 0), E.Add("pdq", b"\xff" * 32, "case-3", ("pdq",), 0),
           E.Add("photodna", bytes(range(144)), "case-4", ("csam", "photo"), 0)]
    v2 = [E.Withdraw("hash_error", 0, "md5", md5(1)),  # by hash, every case
          E.Withdraw("duplicate", 0, "md5", md5(2), "case-1"),  # by hash, one case
          E.Withdraw("legal", 0, case="case-2"),  # by case
          E.Add("md5", md5(3), "case-1", ("csam", "relabelled"), 0),  # relabel
          E.Add("md5", md5(4), "case-1", ("csam",), 0)]  # duplicate: no effect
    v2 += [E.Add("md5", md5(1000 + i), f"case-{10 + i % 4}", ("bulk",), 0) for i in range(260)]
    v3 = [E.Add("md5", md5(5000 + i), "case-20", ("late",), 0) for i in range(10)]
    return [v1, v2, v3]


def entry_vectors() -> dict:
    samples = {
        "add": E.Add("md5", bytes(16), "case-1", ("csam",), NOW),
        "add_no_labels": E.Add("sha256", bytes(range(32)), "c", (), 0),
        "add_photodna": E.Add("photodna", bytes(range(144)), "CASE.x:y-z_0", ("a", "b", "c"), (1 << 40) - 1),
        "withdraw_by_hash": E.Withdraw("hash_error", NOW, "md5", bytes(16)),
        "withdraw_by_hash_in_case": E.Withdraw("duplicate", NOW, "sha1", b"\x01" * 20, "case-1"),
        "withdraw_by_case": E.Withdraw("legal", NOW, case="case-1"),
        "seal_empty": E.Seal(1, NOW, 0, LtHash16().digest()),
        "seal": E.Seal(7, NOW, 1, digest_of([E.add_element(E.Add("md5", bytes(16), "case-1", ("csam",), NOW))])),
    }
    out = {}
    for name, entry in samples.items():
        fields = {k: (h(v) if isinstance(v, bytes) else list(v) if isinstance(v, tuple) else v)
                  for k, v in vars(entry).items() if v is not None}
        enc = E.encode(entry)
        out[name] = {"op": entry.op, "fields": fields, "encoded": h(enc), "leaf_hash": h(leaf_hash(enc))}
    return out


def lthash_vectors() -> dict:
    a = E.element("md5", bytes(16), "case-1", ("csam",))
    b = E.element("sha1", b"\x01" * 20, "case-2", ("a", "b"))
    ab = LtHash16().add([a, b]).digest()
    add_then_remove = LtHash16().add([a]).add([b]).remove([b]).digest()
    return {
        "element_a": h(a),
        "element_b": h(b),
        "element_hash_a_b64": base64.b64encode(element_hash(a)).decode(),
        "empty_b64": base64.b64encode(LtHash16().digest()).decode(),
        "a_b64": base64.b64encode(digest_of([a])).decode(),
        "a_b_b64": base64.b64encode(ab).decode(),
        "a_plus_b_minus_b_b64": base64.b64encode(add_then_remove).decode(),
        "a_b_sha256": hashlib.sha256(ab).hexdigest(),
    }


def build(workdir: Path) -> dict[str, bytes]:
    """Return {file name: content} for every golden file."""
    signer = Signer.from_seed(ORIGIN, SEED)
    pub = Publisher(workdir / "golden.db")
    try:
        feed = pub.create_feed(NAME, ORIGIN, signer, now=NOW)
        version_rows = [{"version": 0, "size": 0, "count": 0, "checkpoint": feed.checkpoint.decode()}]
        for v, ops in enumerate(versions(), 1):
            res = pub.publish(NAME, ops, signer, now=NOW + 100 * v)
            head = pub.feed(NAME)
            version_rows.append({"version": v, "time": NOW + 100 * v, "ops": _ops_json(ops), "size": res.size,
                                 "count": res.count, "digest_sha256": hashlib.sha256(head.digest).hexdigest(),
                                 "checkpoint": head.checkpoint.decode()})
        tiles = {(lvl, idx, w): bytes(data) for lvl, idx, w, data in pub.conn.execute(
            "SELECT level, idx, width, data FROM tiles WHERE feed=? ORDER BY level, idx, width", (head.id,))}
    finally:
        pub.close()

    size = version_rows[-1]["size"]
    entries: list[bytes] = []
    for idx in range((size + 255) // 256):
        w = min(256, size - 256 * idx)
        entries += parse_bundle(tiles[(ENTRIES, idx, w)], w)
    widest = {}
    for (lvl, idx, w) in tiles:
        if lvl >= 0 and w >= widest.get((lvl, idx), 0):
            widest[(lvl, idx)] = w
    th = TileHashes(size, {k: parse_hash_tile(tiles[(k[0], k[1], w)], w) for k, w in widest.items()})
    sizes = [r["size"] for r in version_rows]
    roots = {s: parse_checkpoint_body(r["checkpoint"].encode().split(b"\n\n")[0] + b"\n").root
             for s, r in zip(sizes, version_rows)}

    vectors = {
        "about": "Golden vectors for docs/PROTOCOL.md; regenerate with tests/vectors/make_vectors.py.",
        "key": {"seed": h(SEED), "name": ORIGIN, "vkey": signer.vkey, "private_key": signer.private_key_text(),
                "key_id": f"{signer.verifier.key_id:08x}"},
        "note": {"text": NOTE_TEXT.decode(), "signed": sign_note(NOTE_TEXT, [signer]).decode()},
        "entries": entry_vectors(),
        "lthash": lthash_vectors(),
        "merkle": {
            "leaf_hashes_first_4": [h(leaf_hash(e)) for e in entries[:4]],
            "roots": {str(s): h(r) for s, r in roots.items()},
            "inclusion": [{"index": i, "size": size, "leaf_hash": h(leaf_hash(entries[i])),
                           "proof": [h(p) for p in inclusion_proof(i, size, th.mth)]}
                          for i in (0, 13, 255, 256, size - 1)],
            "consistency": [{"old": old, "new": size, "proof": [h(p) for p in consistency_proof(old, size, th.mth)]}
                            for old in sizes[1:]],
        },
        "feed": {
            "origin": ORIGIN,
            "name": NAME,
            "versions": version_rows,
            "tile_sha256": {tile_path(*k): hashlib.sha256(v).hexdigest() for k, v in sorted(tiles.items())},
            "tiles_b64": {p: base64.b64encode(tiles[k]).decode() for k in sorted(tiles)
                          if (p := tile_path(*k)) in FULL_TILES},
            "entries_first_16": [h(e) for e in entries[:16]],
            "entries_last_4": [h(e) for e in entries[-4:]],
        },
    }
    missing = set(FULL_TILES) - set(vectors["feed"]["tiles_b64"])
    if missing:
        raise RuntimeError(f"FULL_TILES names tiles the feed does not have: {sorted(missing)}")
    checkpoints = "".join(f"# version {r['version']}, size {r['size']}\n{r['checkpoint']}\n" for r in version_rows)
    return {
        "vectors.json": (json.dumps(vectors, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode(),
        "checkpoints.txt": checkpoints.encode(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp))
    if args.check:
        bad = [name for name, data in files.items() if not (HERE / name).is_file() or (HERE / name).read_bytes() != data]
        for name in bad:
            print(f"{name}: differs from a fresh build", file=sys.stderr)
        return 1 if bad else 0
    for name, data in files.items():
        (HERE / name).write_bytes(data)
        print(f"wrote {HERE / name} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
