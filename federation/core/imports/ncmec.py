"""NCMEC hash-sharing XML (v2), read as claims, streaming and bounded. Pure.

The format, as NCMEC's hash-sharing API answers ``GET /v2/entries`` (and as
python-threatexchange's NCMEC client reads it): a ``queryResult`` holding
``images`` and ``videos``, whose children are entries::

    <image>
      <member id="42">Example Member</member>   the ESP that uploaded it
      <timestamp>2017-10-24T15:00:00Z</timestamp>
      <id>image1</id>                           unique per member
      <classification>A1</classification>       optional
      <fingerprints><md5>..</md5><sha1>..</sha1><pdna>..</pdna><pdq>..</pdq></fingerprints>
      <feedback>...</feedback>                  other members' votes: ignored
    </image>
    <deletedImage><member id="42"/><id>image4</id><timestamp>...</timestamp></deletedImage>

and ``video`` / ``deletedVideo`` alike. Namespaces are ignored. Entries are
*not* in time order (NCMEC's own documentation says so), so each entry is a
claim on its case ``ncmec-<member>-<id>``, stamped with its timestamp: the
newest statement about an entry wins, a deletion included.

Fingerprints map to hash types: ``md5``, ``sha1``, ``pdq``, ``pdna``
(PhotoDNA, 144 bytes as hex, base64 or comma-separated bytes). Others
(NetClean, Videntifier, TMK, SSVH...) have no hash type here and are
counted as skipped. The classification becomes a label (``a1``).

Bounds: ``defusedxml`` refuses DTDs, entity declarations and external
references (no billion laughs, no XXE); nesting is at most ``MAX_DEPTH``;
and the bytes read between two parser events are at most
``MAX_ELEMENT_BYTES``, so no text node or tag can grow without bound. The
reader holds one entry at a time (of at most ``MAX_ENTRY_ELEMENTS``
elements and ``MAX_ENTRY_BYTES`` bytes of the document, so its elements
cannot each grow to ``MAX_ELEMENT_BYTES``): every element at an entry's
depth or above -- entries, and anything else -- is dropped from the tree
when it ends.

Paging: NCMEC answers a large export in pages, each naming the next in
``<paging><next>``. A page is a fine delta (``federation import``), but as
a *full list* (``whole``: ``publish --full-list``) it would withdraw every
entry on the other pages, so a document whose ``<next>`` names a page is
refused then.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from federation.core.errors import InputError
from federation.core.imports import Claim, ReadStats, Record, case_id, hash_value, labels_of

ENTRY_TAGS = {"image", "video", "deletedImage", "deletedVideo"}
CONTAINERS = {"images", "videos"}
FINGERPRINTS = {"md5": "md5", "sha1": "sha1", "pdq": "pdq", "pdna": "photodna"}
MAX_DEPTH = 12                     # queryResult/images/image/feedback/negativeFeedback/reasons/members/member is 8
MAX_ELEMENT_BYTES = 1 << 20        # bytes read without a parser event: one text node or tag
MAX_ENTRY_ELEMENTS = 100_000       # elements held at once: one entry's (its feedback lists members)
MAX_ENTRY_BYTES = 16 << 20         # document bytes one entry spans (a real one: a few KiB; feedback lists grow it)
MAX_ID_CHARS = 40                  # "ncmec-<member>-<id>" must stay a case id (64 characters)


class _Bounded:
    """A binary stream that refuses to be read on for more than ``limit``
    bytes without ``reset`` (called at every parser event)."""

    def __init__(self, stream, name: str, limit: int):
        self.stream, self.name, self.limit = stream, name, limit
        self.since = self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(65536 if n is None or n < 0 else n)
        self.since += len(data)
        self.total += len(data)
        if self.since > self.limit:
            raise InputError(f"{self.name}: over {self.limit} bytes without the end of an element "
                             "(a text node or tag that long is not NCMEC hash-sharing XML)")
        return data

    def reset(self) -> None:
        self.since = 0


def _local(tag: str) -> str:
    return tag.rpartition("}")[2] if tag.startswith("{") else tag


def _child(elem: Element, tag: str, where: str, required: bool = True) -> Element | None:
    found = [c for c in elem if _local(c.tag) == tag]
    if len(found) > 1:
        raise InputError(f"{where}: more than one <{tag}>")
    if not found and required:
        raise InputError(f"{where}: no <{tag}>")
    return found[0] if found else None


def _text(elem: Element | None) -> str:
    return (elem.text or "").strip() if elem is not None else ""


def _timestamp(text: str, where: str) -> int:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")) if 0 < len(text) <= 40 else None
    except ValueError:
        when = None
    if when is None:
        raise InputError(f"{where}, field timestamp: {text[:40]!r} is not an ISO 8601 time (2017-10-24T15:00:00Z)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp())


def _claim(elem: Element, tag: str, n: int, name: str, labels: tuple[str, ...], stats: ReadStats) -> Claim:
    where = f"{name}: entry {n} <{tag}>"
    entry = _text(_child(elem, "id", where))
    if not entry:
        raise InputError(f"{where}, field id: empty")
    where = f"{name}: entry {n} <{tag}> (id {entry[:MAX_ID_CHARS]})"
    if len(entry) > MAX_ID_CHARS:
        raise InputError(f"{where}, field id: longer than {MAX_ID_CHARS} characters")
    member = _child(elem, "member", where).get("id", "").strip()
    if not (member.isascii() and member.isdigit() and len(member) <= 12):
        raise InputError(f"{where}, field member/@id: {member[:20]!r} is not a member number")
    case = case_id(f"ncmec-{member}-{entry}", f"{where}, field id")
    stamp = _timestamp(_text(_child(elem, "timestamp", where)), where)
    if tag.startswith("deleted"):
        return Claim(case, stamp, n, gone_case=case)
    classification = _text(_child(elem, "classification", where, required=False))
    mine = labels_of([*labels, classification.replace(" ", "-")], f"{where}, field classification")
    records = []
    prints = _child(elem, "fingerprints", where, required=False)
    for fp in (prints if prints is not None else ()):
        kind = _local(fp.tag).lower()
        text = _text(fp)
        if kind not in FINGERPRINTS:
            stats.skip(f"fingerprint {kind}")
            continue
        if not text:
            stats.skip(f"empty fingerprint {kind}")
            continue
        hash_type = FINGERPRINTS[kind]
        records.append(Record(hash_type, hash_value(hash_type, text, f"{where}, field fingerprints/{kind}"),
                              case, mine))
    if not records:
        stats.skip("entry without a fingerprint of a known type")
    return Claim(case, stamp, n, records)


def read_ncmec(stream, name: str, labels: Iterable[str] = (), stats: ReadStats | None = None,
               whole: bool = False) -> Iterator[Claim]:
    """Claims of an NCMEC XML document read from the binary ``stream``
    (named ``name`` in errors); ``labels`` are added to every record.
    ``whole``: the document must be a full list, not one page of a paged export."""
    stats = stats if stats is not None else ReadStats()
    labels = tuple(labels)
    reader = _Bounded(stream, name, MAX_ELEMENT_BYTES)
    stack: list[Element] = []
    n = held = entry_from = 0
    try:
        for event, elem in defusedxml.ElementTree.iterparse(reader, events=("start", "end"), forbid_dtd=True):
            reader.reset()
            if held and reader.total - entry_from > MAX_ENTRY_BYTES:
                raise InputError(f"{name}: entry {n + 1} spans over {MAX_ENTRY_BYTES} bytes "
                                 f"(at <{_local(elem.tag)}>)")
            if event == "start":
                stack.append(elem)
                if len(stack) > MAX_DEPTH:
                    raise InputError(f"{name}: elements nested deeper than {MAX_DEPTH} (at <{_local(elem.tag)}>)")
                if len(stack) >= 3:  # inside an entry (or another element at an entry's depth)
                    if not held:
                        entry_from = reader.total
                    held += 1
                    if held > MAX_ENTRY_ELEMENTS:
                        raise InputError(f"{name}: over {MAX_ENTRY_ELEMENTS} elements in entry {n + 1} "
                                         f"(at <{_local(elem.tag)}>)")
                continue
            stack.pop()
            tag = _local(elem.tag)
            claim = None
            # <next> ends (and is dropped, like anything at an entry's depth) before its <paging> does.
            if whole and tag == "next" and len(stack) == 2 and _local(stack[-1].tag) == "paging" and _text(elem):
                raise InputError(f"{name}: one page of a paged export (<paging><next> names the next page), not a "
                                 "full list: as a full list it would withdraw every entry of the other pages. Fetch "
                                 "every page into one document, or import the pages as deltas ('federation import')")
            if tag in ENTRY_TAGS and stack and _local(stack[-1].tag) in CONTAINERS:
                n += 1
                stats.elements = n
                claim = _claim(elem, tag, n, name, labels, stats)
            if 0 < len(stack) <= 2:
                # Hold one entry at a time: every element at an entry's depth or above
                # is dropped when it ends, entry or not (<paging>, unknown elements).
                stack[-1].remove(elem)
                held = 0
            if claim is not None:
                yield claim
    except ParseError as e:  # its message names the line and column
        raise InputError(f"{name}: not well-formed XML: {e}") from None
    except defusedxml.DefusedXmlException as e:
        raise InputError(f"{name}: refused: {e} (DTDs, entities and external references are not read)") from None
    if n == 0:
        raise InputError(f"{name}: no NCMEC entries (<image>, <video>, <deletedImage>, <deletedVideo> inside "
                         "<images> or <videos>)")
