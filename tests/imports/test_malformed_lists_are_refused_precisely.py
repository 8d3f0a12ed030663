"""A malformed list is refused with its file, line or element, and field; nothing is published.

Each reader raises ``InputError`` (exit 2) naming where the file is wrong, and
hostile input (entities, DTDs, deep nesting, endless text, huge lines) is
refused before it is parsed whole. Through the CLI, a file that fails anywhere
-- its last element included -- publishes nothing.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from federation.core.errors import FederationError, InputError
from federation.core.imports import ncmec as ncmec_reader
from federation.core.imports.formats import read_claims
from federation.store.publisher import Publisher

DATA = Path(__file__).parent / "data"


def refuse(data: bytes, fmt: str, name: str = "x") -> str:
    with pytest.raises(FederationError) as e:
        list(read_claims(io.BytesIO(data), name, fmt))
    assert isinstance(e.value, InputError) and e.value.kind == "input", e.value
    return str(e.value)


def image(n: str, prints: str, member: str = "42", ts: str = "2026-11-01T10:00:00Z", extra: str = "") -> str:
    return (f"<image><member id=\"{member}\">M</member><timestamp>{ts}</timestamp><id>{n}</id>{extra}"
            f"<fingerprints>{prints}</fingerprints></image>")


def ncmec(*entries: str) -> bytes:
    return ("<?xml version=\"1.0\"?><queryResult xmlns=\"https://hashsharing.ncmec.org/hashsharing/v2\"><images>"
            + "".join(entries) + "</images></queryResult>").encode()


GOOD = image("ok", "<md5>" + "a" * 32 + "</md5>")


@pytest.mark.parametrize("entry, expected", [
    (image("bad", "<md5>xyz</md5>"), "export.xml: entry 2 <image> (id bad), field fingerprints/md5: md5 hash 'xyz'"),
    (image("bad", "<pdq>" + "0" * 63 + "</pdq>"), "entry 2 <image> (id bad), field fingerprints/pdq"),
    (image("bad", "<md5>" + "b" * 32 + "</md5>", ts="yesterday"),
     "entry 2 <image> (id bad), field timestamp: 'yesterday'"),
    (image("bad", "<md5>" + "b" * 32 + "</md5>", member="x"), "entry 2 <image> (id bad), field member/@id: 'x'"),
    (image("", "<md5>" + "b" * 32 + "</md5>"), "entry 2 <image>, field id: empty"),
    (image("bad/slash", "<md5>" + "b" * 32 + "</md5>"), "entry 2 <image> (id bad/slash), field id: case id"),
    (image("bad", "<md5>" + "b" * 32 + "</md5>", extra="<classification>A 1 é</classification>"),
     "entry 2 <image> (id bad), field classification: label"),
    ("<deletedImage><member id=\"42\"/><id>gone</id></deletedImage>",
     "entry 2 <deletedImage> (id gone): no <timestamp>"),
    (image("bad", "<md5>" + "b" * 32 + "</md5>", extra="<id>again</id>"), "entry 2 <image>: more than one <id>"),
])
def test_ncmec_errors_name_the_element_and_field(entry, expected):
    assert expected in refuse(ncmec(GOOD, entry), "ncmec", "export.xml")


@pytest.mark.parametrize("data, expected", [
    (ncmec(GOOD)[:-20], "export.xml: not well-formed XML: "),                       # truncated: line, column
    (b"<?xml version=\"1.0\"?><queryResult></queryResult>", "export.xml: no NCMEC entries"),
    (b"<!DOCTYPE q [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]><queryResult><images>"
     b"<image><id>&b;</id></image></images></queryResult>", "export.xml: refused"),     # entity expansion
    (b"<!DOCTYPE q SYSTEM \"file:///etc/passwd\"><queryResult/>", "export.xml: refused"),  # external DTD
    (b"<queryResult>" + b"<a>" * 50 + b"</a>" * 50 + b"</queryResult>", "nested deeper than"),
    (b"<queryResult><images><image><id>" + b"x" * (2 << 20) + b"</id></image></images></queryResult>",
     "without the end of an element"),
])
def test_ncmec_documents_that_are_not_hash_sharing_xml(data, expected):
    assert expected in refuse(data, "ncmec", "export.xml")


def stopncii(*records: str) -> bytes:
    return ("\n".join(records) + "\n").encode()


OK_REC = '{"signalType": "ImagePDQ", "hashValue": "' + "1" * 64 + '", "hashStatus": "Active"}'


@pytest.mark.parametrize("line, expected", [
    ('{"signalType": "ImagePDQ", "hashValue": "12", "hashStatus": "Active"}', "s.jsonl: line 2, field hashValue"),
    ('{"signalType": "ImagePDQ", "hashValue": "' + "1" * 64 + '", "hashStatus": "Gone"}',
     "s.jsonl: line 2, field hashStatus: status 'Gone'"),
    ('{"signalType": "ImagePDQ", "hashValue": "' + "1" * 64 + '", "hashStatus": "Active", '
     '"caseNumbers": {"SN 1": "Active"}}', "s.jsonl: line 2, field caseNumbers: case id 'SN 1'"),
    ('{"signalType": "ImagePDQ", "hashValue": "' + "1" * 64 + '", "hashStatus": "Active", '
     '"caseNumbers": {"SN-1": "Maybe"}}', "s.jsonl: line 2, field caseNumbers.SN-1: status 'Maybe'"),
    ('{"signalType": "ImagePDQ", "hashValue": "' + "1" * 64 + '", "hashStatus": "Active", "lastModtimestamp": -1}',
     "s.jsonl: line 2, field lastModtimestamp"),
    ('{"hashValue": "' + "1" * 64 + '"}', "s.jsonl: line 2, field signalType"),
    ('{"hashRecords": [' + OK_REC + ', {"signalType": "VideoMD5", "hashValue": "zz", "hashStatus": "Active"}]}',
     "s.jsonl: line 2 hashRecords[1], field hashValue"),
    ('[1, 2', "s.jsonl: line 2: invalid JSON"),
    ('"a string"', "s.jsonl: line 2: a hash record must be a JSON object"),
    ('{"signalType": "ImagePDQ", "lastModtimestamp": ' + "9" * 5000 + "}", "s.jsonl: line 2: invalid JSON"),
    ("[" * 10000 + "]" * 10000, "s.jsonl: line 2: invalid JSON"),
])
def test_stopncii_errors_name_the_line_and_field(line, expected):
    assert expected in refuse(stopncii(OK_REC, line), "stopncii", "s.jsonl")


def test_stopncii_line_too_long_is_refused_before_parsing():
    assert "s.jsonl: line 2 is over" in refuse(stopncii(OK_REC, '"' + "x" * (9 << 20) + '"'), "stopncii", "s.jsonl")


HEADER = "signal_type,signal_str,collab,category,tags\n"
OK_ROW = "pdq," + "5" * 64 + ",Sample Collab,POSITIVE_CLASS,csam\n"


@pytest.mark.parametrize("row, expected", [
    ("pdq,abc,Sample Collab,POSITIVE_CLASS,\n", "b.csv: line 3, field signal_str: pdq hash 'abc'"),
    ("pdq," + "5" * 64 + ",Sample Collab,MAYBE,\n", "b.csv: line 3, field category: 'MAYBE'"),
    ("pdq," + "5" * 64 + ",Sample Collab,POSITIVE_CLASS,Bad!Tag\n", "b.csv: line 3, field tags: label 'bad!tag'"),
    ("pdq," + "5" * 64 + ",,POSITIVE_CLASS,\n", "b.csv: line 3, field collab (or give --case)"),
    ("pdq," + "5" * 64 + ",c,POSITIVE_CLASS,,extra\n", "b.csv: line 3: more fields than the header"),
])
def test_hma_errors_name_the_line_and_field(row, expected):
    assert expected in refuse((HEADER + OK_ROW + row).encode(), "hma", "b.csv")


@pytest.mark.parametrize("data, expected", [
    (b"hash,kind\n1,2\n", "b.csv: line 1: the header must name"),
    (HEADER.encode() + b"pdq,\xff\xfe,c,POSITIVE_CLASS,\n", "b.csv: line 2"),          # not UTF-8
    (HEADER.encode() + b"pdq,\"" + b"5" * 70000 + b"\",c,POSITIVE_CLASS,\n", "b.csv: line 2"),
])
def test_hma_files_that_are_not_dataset_csv(data, expected):
    assert expected in refuse(data, "hma", "b.csv")


def test_case_option_is_for_hma_only():
    with pytest.raises(InputError, match="--case"):
        read_claims(io.BytesIO(ncmec(GOOD)), "x", "ncmec", case="c1")


def run(home, *args):
    env = dict(os.environ, FEDERATION_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "federation", *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("command", [["publish", "tid", "--full-list"], ["import", "--publish", "tid"]])
def test_a_file_that_fails_at_its_last_entry_publishes_nothing(tmp_path, command):
    home = tmp_path / "h"
    assert run(home, "feed", "create", "tid", "--origin", "example.org/tid").returncode == 0
    assert run(home, "publish", "tid", "--full-list", str(DATA / "ncmec_day1.xml")).returncode == 0
    bad = tmp_path / "export.xml"
    text = (DATA / "ncmec_day2.xml").read_text()
    bad.write_text(text.replace("<md5>dddddddddddddddddddddddddddddddd</md5>", "<md5>ddd</md5>"))
    p = run(home, *command, str(bad)) if command[0] == "publish" else run(home, "import", str(bad), *command[1:])
    assert p.returncode == 2, p.stdout + p.stderr
    assert "export.xml: entry 6 <video> (id vid-1), field fingerprints/md5: md5 hash 'ddd'" in p.stderr
    assert "published" not in p.stdout
    pub = Publisher(home / "publisher.db") if (home / "publisher.db").exists() else None
    try:
        assert pub is not None and pub.feed("tid").version == 1  # day 1 only: nothing of day 2
    finally:
        if pub:
            pub.close()
    assert not list(home.rglob(".list-diff-*")), "scratch left behind"


def test_unknown_extension_asks_for_the_format(tmp_path):
    f = tmp_path / "export.txt"
    f.write_text("x")
    p = run(tmp_path / "h", "import", str(f), "--out", str(tmp_path / "b.jsonl"))
    assert p.returncode == 2 and "--format" in p.stderr


def test_ncmec_reader_holds_one_entry_whatever_surrounds_the_entries():
    """Elements that are not entries -- under the root or inside a container -- are
    dropped as they end, like entries: memory does not grow with them."""
    import tracemalloc
    junk = b"<junk a=\"1\">x</junk>" * 60_000
    data = (b"<queryResult>" + junk + b"<images>" + junk + ncmec(GOOD)[len(b"<?xml version=\"1.0\"?><queryResult "
            b"xmlns=\"https://hashsharing.ncmec.org/hashsharing/v2\"><images>"):])
    tracemalloc.start()
    try:
        claims = list(read_claims(io.BytesIO(data), "x.xml", "ncmec"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(claims) == 1
    assert peak < 8 << 20, f"peak {peak >> 20} MiB for 120,000 dropped elements"


def test_ncmec_entry_with_endless_children_is_refused(monkeypatch):
    monkeypatch.setattr(ncmec_reader, "MAX_ENTRY_ELEMENTS", 1000)  # the bound, made small to test quickly
    data = ncmec(image("big", "<md5>" + "a" * 32 + "</md5>", extra="<feedback>" + "<m/>" * 1001 + "</feedback>"))
    assert "x.xml: over 1000 elements in entry 1" in refuse(data, "ncmec", "x.xml")


def test_ncmec_entry_spanning_too_many_bytes_is_refused(monkeypatch):
    """Each text node is under MAX_ELEMENT_BYTES and the elements are few, but together they would
    make one entry (held whole in memory) as large as their product: the entry's bytes are bounded."""
    monkeypatch.setattr(ncmec_reader, "MAX_ENTRY_BYTES", 256 << 10)  # the bound, made small to test quickly
    notes = "".join(f"<note>{'n' * (30 << 10)}</note>" for _ in range(20))  # 600 KiB in 20 elements
    data = ncmec(image("wide", "<md5>" + "a" * 32 + "</md5>", extra=f"<feedback>{notes}</feedback>"))
    assert f"x.xml: entry 1 spans over {256 << 10} bytes" in refuse(data, "ncmec", "x.xml")
    monkeypatch.setattr(ncmec_reader, "MAX_ENTRY_BYTES", 1 << 20)
    assert len(list(read_claims(io.BytesIO(data), "x.xml", "ncmec"))) == 1  # under the bound: read


def test_one_page_of_a_paged_ncmec_export_is_not_a_full_list(tmp_path):
    """NCMEC answers an export in pages; as a full list one page would withdraw every entry of the
    others. `publish --full-list` refuses a page whose <paging><next> names another; `import` (a
    delta) takes it."""
    home = tmp_path / "h"
    assert run(home, "feed", "create", "tid", "--origin", "example.org/tid").returncode == 0
    assert run(home, "publish", "tid", "--full-list", str(DATA / "ncmec_day1.xml")).returncode == 0
    page = tmp_path / "page1.xml"
    page.write_text((DATA / "ncmec_day2.xml").read_text().replace(
        "</queryResult>", "<paging><next>/v2/entries?start=2001&amp;size=1000</next></paging></queryResult>"))
    p = run(home, "publish", "tid", "--full-list", str(page))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "page1.xml: one page of a paged export (<paging><next> names the next page), not a full list" in p.stderr
    pub = Publisher(home / "publisher.db")
    try:
        assert pub.feed("tid").version == 1  # nothing of the page published
    finally:
        pub.close()
    assert run(home, "import", str(page), "--out", str(tmp_path / "delta.jsonl")).returncode == 0
