"""Each list format is read as its public description says, awkward cases included.

The fixtures in ``data/`` are written from the public format descriptions
(NCMEC hash-sharing v2 as python-threatexchange's client reads it, StopNCII's
hash records, ``threatexchange dataset -P --csv``), with made-up values. A
file is resolved alone (``ListDiff.resolved``: what ``federation import --out``
writes), so these tests see what the file *says*, before any feed.
"""
from __future__ import annotations

import io
from pathlib import Path

from federation.core.entries import Add, Withdraw
from federation.core.imports import ReadStats
from federation.core.imports.formats import read_claims
from federation.store.fulllist import ListDiff

DATA = Path(__file__).parent / "data"


def resolve(tmp_path, path: Path, fmt: str, labels=(), case=None) -> tuple[set, set, ReadStats]:
    """(active records, withdrawals, stats) that the file says, resolved."""
    stats = ReadStats()
    with ListDiff(None, None, "delta", tmp_path / "scratch") as d, path.open("rb") as f:
        d.load(read_claims(f, path.name, fmt, labels, stats, case))
        adds, gone = set(), set()
        for op in d.resolved():
            if isinstance(op, Add):
                adds.add((op.hash_type, op.value.hex(), op.case, tuple(op.labels)))
            else:
                assert isinstance(op, Withdraw)
                gone.add((op.hash_type, op.value.hex() if op.value else None, op.case))
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir()), "scratch left behind"
    return adds, gone, stats


def test_ncmec_newest_statement_wins_and_hashes_repeat_across_cases(tmp_path):
    adds, gone, stats = resolve(tmp_path, DATA / "ncmec_day1.xml", "ncmec", labels=["csam"])
    assert adds == {
        ("md5", "a" * 32, "ncmec-42-img-a", ("a1", "csam")),
        ("sha1", "a1" * 20, "ncmec-42-img-a", ("a1", "csam")),
        ("pdq", "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22", "ncmec-42-img-a", ("a1", "csam")),
        ("md5", "a" * 32, "ncmec-43-img-a", ("a1", "csam")),       # the same md5 in a second case
        ("md5", "c" * 32, "ncmec-42-img-c", ("a2", "csam")),       # deleted 08:00, added again 09:00 (later)
        ("md5", "ab" * 16, "ncmec-42-img-e", ("b2", "csam")),
        ("sha1", "e5" * 20, "ncmec-42-img-e", ("b2", "csam")),
        ("md5", "d" * 32, "ncmec-42-vid-1", ("csam",)),            # a video without a classification
    }
    # img-b: deleted at 12:00, *before* (in the file) its addition stamped 11:00 -- the deletion is newer.
    assert gone == {(None, None, "ncmec-42-img-b")}
    assert stats.skipped == {"fingerprint tmk-pdqf": 1, "fingerprint videntifier": 1}


def test_stopncii_withdrawn_status_and_newer_record_replace_older(tmp_path):
    adds, gone, stats = resolve(tmp_path, DATA / "stopncii.jsonl", "stopncii")
    h1, h2, h3 = "1" * 64, "2" * 64, "3" * 64
    assert adds == {
        ("pdq", h1, "SN-1", ()),             # the newer record of h1 keeps SN-1 ...
        ("pdq", h3, "SN-1", ()), ("pdq", h3, "SN-3", ()),   # one hash, two cases ("Received" is active)
        ("md5", "4" * 32, "stopncii", ()),   # a record without case numbers: one case
    }
    # ... and says SN-2 is Withdrawn; h2's hashStatus Withdrawn withdraws its case.
    assert gone == {("pdq", h1, "SN-2"), ("pdq", h2, "SN-4")}
    assert stats.skipped == {"signal type VideoTMK": 1}


def test_hma_csv_negative_rows_are_gone_seeds_and_other_signals_skipped(tmp_path):
    adds, gone, stats = resolve(tmp_path, DATA / "hma.csv", "hma")
    h5 = "5" * 64
    assert adds == {("pdq", h5, "Sample-Collab", ("csam", "tid")), ("pdq", h5, "Other-Collab", ()),
                    ("md5", "6" * 32, "Sample-Collab", ("tid",))}
    assert gone == {("md5", "7" * 32, "Sample-Collab")}
    assert stats.skipped == {"category INVESTIGATION_SEED": 1, "signal type url": 1}


def test_hma_case_option_names_every_record_case(tmp_path):
    adds, _gone, _ = resolve(tmp_path, DATA / "hma.csv", "hma", case="bank-7")
    assert {a[2] for a in adds} == {"bank-7"}
    assert len(adds) == 2  # the two collabs' rows of one pdq are one record in one case


def test_stopncii_reads_a_single_json_document_too(tmp_path):
    doc = tmp_path / "page.json"
    doc.write_text('{"hashRecords": [\n  {"signalType": "ImagePDQ", "hashValue": "' + "9" * 64 + '",\n'
                   '   "hashStatus": "Active", "caseNumbers": {"SN-9": "Active"}}\n], "count": 1}\n')
    adds, gone, _ = resolve(tmp_path, doc, "stopncii")
    assert adds == {("pdq", "9" * 64, "SN-9", ())} and gone == set()


def test_photodna_in_any_of_ncmecs_spellings(tmp_path):
    raw = bytes(range(144))
    for text in (raw.hex(), ",".join(str(b) for b in raw)):
        xml = ('<queryResult><images><image><member id="1">m</member><timestamp>2026-01-01T00:00:00Z</timestamp>'
               f'<id>p</id><fingerprints><pdna>{text}</pdna></fingerprints></image></images></queryResult>')
        claims = list(read_claims(io.BytesIO(xml.encode()), "p.xml", "ncmec"))
        assert claims[0].records[0].hash_type == "photodna" and claims[0].records[0].value == raw


def test_a_newer_entry_without_known_fingerprints_replaces_an_older_one(tmp_path):
    """The newer statement about img-x lists no hash of a known type: img-x lists nothing."""
    def entry(ts: str, prints: str) -> str:
        return (f"<image><member id=\"7\">m</member><timestamp>{ts}</timestamp><id>img-x</id>"
                f"<fingerprints>{prints}</fingerprints></image>")
    f = tmp_path / "x.xml"
    f.write_text("<queryResult><images>" + entry("2026-01-01T11:00:00Z", "<netclean>00</netclean>")
                 + entry("2026-01-01T10:00:00Z", "<md5>" + "a" * 32 + "</md5>") + "</images></queryResult>")
    adds, gone, stats = resolve(tmp_path, f, "ncmec")
    assert adds == set() and gone == set()
    assert stats.skipped == {"fingerprint netclean": 1, "entry without a fingerprint of a known type": 1}
