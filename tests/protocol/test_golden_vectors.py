"""Golden vectors: tests/vectors/ must be reproducible byte for byte, and must
verify on their own (so the files stay usable by other implementations).

After an intended format change, regenerate with
``python tests/vectors/make_vectors.py`` and review the diff.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json

import pytest

from federation.core import entries as E
from federation.core.checkpoint import open_checkpoint
from federation.core.lthash import DIGEST_BYTES, LtHash16, element_hash
from federation.core.merkle import leaf_hash, node_hash, root_of, verify_consistency, verify_inclusion
from federation.core.note import Signer, open_note, parse_vkey
from federation.core.tiles import parse_bundle, parse_hash_tile

from support.paths import REPO_ROOT, TESTS_DIR

VECTORS = TESTS_DIR / "vectors"


def load_make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads((VECTORS / "vectors.json").read_text())


def first_difference(a, b, path="$"):
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'regenerated' if k in a else 'stored'}"
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: regenerated {str(a)[:120]!r} != stored {str(b)[:120]!r}"


def test_vectors_regenerate_byte_for_byte(tmp_path):
    files = load_make_vectors().build(tmp_path)
    assert set(files) == {"vectors.json", "checkpoints.txt"}
    for name, data in files.items():
        on_disk = (VECTORS / name).read_bytes()
        if name.endswith(".json") and data != on_disk:
            diff = first_difference(json.loads(data), json.loads(on_disk))
            pytest.fail(f"{name} no longer reproduces: {diff or 'formatting differs'}")
        assert data == on_disk, f"{name} no longer reproduces byte for byte"


def test_vector_files_are_small():
    total = sum(p.stat().st_size for p in VECTORS.iterdir() if p.is_file())
    assert total < 200 * 1024, total


def test_key_vectors(stored):
    k = stored["key"]
    signer = Signer.from_seed(k["name"], bytes.fromhex(k["seed"]))
    assert signer.vkey == k["vkey"]
    assert signer.private_key_text() == k["private_key"]
    assert Signer.from_private_key_text(k["private_key"]).vkey == k["vkey"]
    assert parse_vkey(k["vkey"]).key_id == int(k["key_id"], 16)
    note = open_note(stored["note"]["signed"].encode(), [parse_vkey(k["vkey"])])
    assert note.text == stored["note"]["text"].encode()


def _unhex_fields(fields: dict) -> dict:
    out = dict(fields)
    for k in ("value", "digest"):
        if k in out:
            out[k] = bytes.fromhex(out[k])
    if "labels" in out:
        out["labels"] = tuple(out["labels"])
    return out


def test_entry_vectors(stored):
    kinds = {"add": E.Add, "withdraw": E.Withdraw, "seal": E.Seal}
    assert {v["op"] for v in stored["entries"].values()} == set(kinds)
    for name, v in stored["entries"].items():
        raw = bytes.fromhex(v["encoded"])
        entry = E.decode(raw)
        assert isinstance(entry, kinds[v["op"]]), name
        assert entry == kinds[v["op"]](**_unhex_fields(v["fields"])), name
        assert E.encode(entry) == raw, name
        assert leaf_hash(raw).hex() == v["leaf_hash"], name
    withdraws = [E.decode(bytes.fromhex(v["encoded"])) for v in stored["entries"].values() if v["op"] == "withdraw"]
    assert sorted((w.by_case, w.case is not None) for w in withdraws) == [(False, False), (False, True), (True, True)]
    # docs/PROTOCOL.md section 4 spells out the "add" vector byte by byte.
    doc_hex = ("87a17601a26f70a3616464a474797065a36d6435a468617368c410" + "00" * 16 + "a463617365a6636173652d31"
               "a66c6162656c7391a46373616da474696d65ce6553f100")
    assert stored["entries"]["add"]["encoded"] == doc_hex


def test_lthash_vectors(stored):
    v = stored["lthash"]
    a, b = bytes.fromhex(v["element_a"]), bytes.fromhex(v["element_b"])
    assert a == E.element("md5", bytes(16), "case-1", ("csam",))
    assert b == E.element("sha1", b"\x01" * 20, "case-2", ("a", "b"))
    d = {k: base64.b64decode(val) for k, val in v.items() if k.endswith("_b64")}
    assert d["empty_b64"] == bytes(DIGEST_BYTES)
    assert d["element_hash_a_b64"] == element_hash(a) == hashlib.shake_256(b"federation/lthash16/v1\x00" + a).digest(2048)
    assert d["a_b64"] == d["element_hash_a_b64"]  # a one-element set is its element hash
    assert d["a_plus_b_minus_b_b64"] == d["a_b64"]  # removal undoes addition
    assert LtHash16(d["a_b64"]).combine(LtHash16().add([b])).digest() == d["a_b_b64"]
    # Lane-wise little-endian u16 sums, straight from docs/PROTOCOL.md section 6.
    ha, hb = element_hash(a), element_hash(b)
    lanes = [(int.from_bytes(ha[i:i + 2], "little") + int.from_bytes(hb[i:i + 2], "little")) % 65536
             for i in range(0, DIGEST_BYTES, 2)]
    assert b"".join(x.to_bytes(2, "little") for x in lanes) == d["a_b_b64"]
    assert hashlib.sha256(d["a_b_b64"]).hexdigest() == v["a_b_sha256"]


def test_feed_vectors(stored):
    feed, k = stored["feed"], stored["key"]
    vkey = parse_vkey(k["vkey"])
    roots = {}
    for row in feed["versions"]:
        cp = open_checkpoint(row["checkpoint"].encode(), feed["origin"], [vkey]).checkpoint
        assert cp.size == row["size"]
        roots[cp.size] = cp.root
    assert {int(s): bytes.fromhex(r) for s, r in stored["merkle"]["roots"].items()} == roots
    size = feed["versions"][-1]["size"]

    tiles = {p: base64.b64decode(t) for p, t in feed["tiles_b64"].items()}
    for p, data in tiles.items():
        assert hashlib.sha256(data).hexdigest() == feed["tile_sha256"][p], p
    first = [bytes.fromhex(e) for e in feed["entries_first_16"]]
    last = [bytes.fromhex(e) for e in feed["entries_last_4"]]
    level0 = parse_hash_tile(tiles["tile/0/000"], 256)
    assert level0[:16] == [leaf_hash(e) for e in first]
    assert [bytes.fromhex(x) for x in stored["merkle"]["leaf_hashes_first_4"]] == level0[:4]
    assert parse_bundle(tiles["tile/entries/000.p/14"], 14) == first[:14]
    assert parse_hash_tile(tiles["tile/0/000.p/14"], 14) == level0[:14]
    tail_bundle = parse_bundle(tiles["tile/entries/001.p/35"], 35)
    tail_tile = parse_hash_tile(tiles["tile/0/001.p/35"], 35)
    assert tail_bundle[-4:] == last and tail_tile == [leaf_hash(e) for e in tail_bundle]
    (level1,) = parse_hash_tile(tiles["tile/1/000.p/1"], 1)
    assert level1 == root_of(level0)
    assert size == 256 + 35 and roots[size] == node_hash(level1, root_of(tail_tile))
    # Each version ends with its seal.
    seal = E.decode(last[-1])
    row = feed["versions"][-1]
    assert isinstance(seal, E.Seal) and (seal.version, seal.count, seal.time) == (row["version"], row["count"], row["time"])
    assert hashlib.sha256(seal.digest).hexdigest() == row["digest_sha256"]
    # The first version's first entry is its first operation, stamped.
    op = feed["versions"][1]["ops"][0]
    assert E.decode(first[0]) == E.Add(op["hash_type"], bytes.fromhex(op["value"]), op["case"], tuple(op["labels"]),
                                       feed["versions"][1]["time"])


def test_proof_vectors(stored):
    m = stored["merkle"]
    roots = {int(s): bytes.fromhex(r) for s, r in m["roots"].items()}
    for p in m["inclusion"]:
        proof = [bytes.fromhex(x) for x in p["proof"]]
        assert verify_inclusion(bytes.fromhex(p["leaf_hash"]), p["index"], p["size"], proof, roots[p["size"]])
    for p in m["consistency"]:
        proof = [bytes.fromhex(x) for x in p["proof"]]
        assert verify_consistency(p["old"], p["new"], roots[p["old"]], roots[p["new"]], proof)
    assert len(m["inclusion"]) >= 4 and len(m["consistency"]) >= 3


# ---- the appendix of docs/PROTOCOL.md --------------------------------------------------------

DOC = REPO_ROOT / "docs" / "PROTOCOL.md"


def test_the_documents_appendix_is_what_the_generator_writes(stored):
    mv = load_make_vectors()
    doc = DOC.read_text()
    assert doc.count(mv.BEGIN) == 1 and doc.count(mv.END) == 1
    want = mv.splice(doc, mv.appendix(stored))
    if want != doc:
        got_lines, want_lines = doc.splitlines(), want.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
                     min(len(got_lines), len(want_lines)))
        pytest.fail(f"docs/PROTOCOL.md appendix differs from tests/vectors/make_vectors.py at line {first + 1}: "
                    f"{got_lines[first:first + 1]!r} != {want_lines[first:first + 1]!r} "
                    "(run python tests/vectors/make_vectors.py)")


def test_the_example_in_section_4_is_the_add_vector(stored):
    doc = DOC.read_text()
    example = doc[doc.index("### Example"):]
    block = example[example.index("```") + 3:]
    block = block[:block.index("```")]
    assert bytes.fromhex("".join(block.split())).hex() == stored["entries"]["add"]["encoded"]


def test_timestamp_and_witness_lines_verify(stored):
    from federation.core.freshness import log_timestamp
    from federation.core.note import parse_note
    k, w, c = stored["key"], stored["witness"], stored["cosigned"]
    log_key = parse_vkey(k["vkey"])
    assert f"{log_key.timestamp_key().key_id:08x}" == k["timestamp_key_id"] != k["key_id"]
    for row in stored["feed"]["versions"]:
        stamp = log_timestamp(row["checkpoint"].encode(), [log_key], now=1 << 40, max_age=1 << 40)
        assert stamp.time == row.get("time", 1700000000) and stamp.ignored == ()
    witness = parse_vkey(w["vkey"])
    assert witness.sig_type == w["type"] == 0x04 and f"{witness.key_id:08x}" == w["key_id"]
    note = parse_note(c["note"].encode())
    (line,) = [s for s in note.signatures if s.name == w["name"]]
    assert line.line().decode() == c["line"]
    assert witness.cosignature_time(line.signature) == c["time"]
    assert witness.verify(note.text, line.signature)
    assert c["message"].encode() == b"cosignature/v1\ntime %d\n" % c["time"] + note.text
    # The signature is Ed25519 over exactly that message.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    Ed25519PublicKey.from_public_bytes(witness.public_key).verify(line.signature[8:], c["message"].encode())


def test_trust_file_vector(stored):
    from federation.core.trustfile import parse_trust
    t = parse_trust(stored["trust_file"].encode())
    assert (t.origin, t.version, t.max_staleness, t.quorum, t.threshold) == (stored["feed"]["origin"], 1, 86400, 1, 1)
    assert [v.vkey for v in t.log_keys] == [stored["key"]["vkey"]]
    assert [v.vkey for v in t.witness_keys] == [stored["witness"]["vkey"]]
    assert [v.vkey for v in t.trust_keys] == [stored["trust_key"]["vkey"]]


def test_snapshot_vector(stored):
    import io

    from federation.core.lthash import LtHash16
    from federation.core.snapshot_format import SnapshotReader, parse_index
    sn, feed = stored["snapshot"], stored["feed"]
    data = bytes.fromhex(sn["file"])
    assert hashlib.sha256(data).hexdigest() == sn["sha256"]
    assert data == bytes.fromhex(sn["header"]) + bytes.fromhex(sn["records"])
    reader = SnapshotReader(io.BytesIO(data))
    h = reader.header
    assert (h.origin, h.size, h.version, h.count) == (feed["origin"], 14, 1, 13) == \
        (feed["origin"], sn["size"], sn["version"], sn["count"])
    assert h.bundle == bytes.fromhex(feed["tiles_hex"]["tile/entries/000.p/14"])
    records = [r for batch in reader.records() for r in batch]
    digest = LtHash16().add(E.elements_of(records)).digest()
    assert hashlib.sha256(digest).hexdigest() == feed["versions"][1]["digest_sha256"]
    seal = E.decode(parse_bundle(h.bundle, 14)[-1])
    assert (seal.version, seal.count, seal.digest) == (1, 13, digest)
    (ref,), minimum = parse_index(sn["index"].encode())
    assert (ref.sha256, ref.bytes, ref.compressed, ref.size, minimum) == (sn["sha256"], len(data), False, 14, 0)


def test_hex_tiles_are_the_stored_tiles(stored):
    feed = stored["feed"]
    for path, data in feed["tiles_hex"].items():
        assert hashlib.sha256(bytes.fromhex(data)).hexdigest() == feed["tile_sha256"][path], path
