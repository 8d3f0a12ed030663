"""HMA / threatexchange dataset exports (CSV), read as claims, streaming. Pure.

The format is what ``threatexchange dataset -P --csv`` writes (and what an
HMA bank export holds): a header and one row per signal::

    signal_type,signal_str,collab,category,tags
    pdq,f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,Sample Collab,POSITIVE_CLASS,csam tid

Signal types: ``pdq`` -> pdq, ``video_md5`` -> md5, ``video_sha256`` ->
sha256 (the names ``md5`` and ``sha256`` are read too); others (``url``,
``raw_text``, ...) are counted as skipped. The case is the collaboration's
name with spaces as ``-`` (or ``--case``), the labels its tags (space
separated). A row of category ``NEGATIVE_CLASS`` says the record is *not*
in the list (gone); ``POSITIVE_CLASS`` (or none) is active; an
``INVESTIGATION_SEED`` is an indirect indicator that needs verifying, not a
positive, so it is skipped (counted) and never published as one. A row is a claim on its
own record (hash and case), so the same hash in several collaborations is
one record per case, and of a record listed twice the later row wins.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from federation.core.batch import decoded_lines
from federation.core.errors import InputError
from federation.core.imports import Claim, ReadStats, Record, case_id, hash_value, labels_of

SIGNALS = {"pdq": "pdq", "video_md5": "md5", "md5": "md5", "video_sha256": "sha256", "sha256": "sha256"}
COLUMNS = ("signal_type", "signal_str", "collab", "category", "tags")
# threatexchange's SignalOpinionCategory names
CATEGORIES = {"POSITIVE_CLASS", "NEGATIVE_CLASS", "INVESTIGATION_SEED"}
MAX_FIELD_CHARS = 64 * 1024
MAX_CHECKED = 4096       # distinct collab / tags strings remembered as checked


def _lines(stream) -> Iterator[bytes]:
    for raw in stream:
        if len(raw) > MAX_FIELD_CHARS:
            raise InputError(f"a line over {MAX_FIELD_CHARS} bytes")
        yield raw


def read_hma(stream, name: str, labels: Iterable[str] = (), stats: ReadStats | None = None,
             case: str | None = None) -> Iterator[Claim]:
    """Claims of an HMA / threatexchange CSV read from the binary ``stream``;
    ``case``, if given, is every record's case (else the collab's name)."""
    stats = stats if stats is not None else ReadStats()
    labels = tuple(labels)
    if case is not None:
        case_id(case, f"{name}: --case")
    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.DictReader(decoded_lines(_lines(stream)))
    # A dataset repeats a few collabs and tag sets on every row: each distinct
    # string is checked once (a profile of 100k rows: a fifth of the reading).
    checked: dict[tuple[str, str], object] = {}

    def remember(key: tuple[str, str], value) -> None:
        if len(checked) >= MAX_CHECKED:
            checked.clear()
        checked[key] = value
    try:
        if reader.fieldnames is None or not {"signal_type", "signal_str"} <= set(reader.fieldnames):
            raise InputError(f"{name}: line 1: the header must name at least signal_type,signal_str "
                             f"(threatexchange dataset -P --csv writes {','.join(COLUMNS)})")
        n = 0
        for row in reader:
            n += 1
            where = f"{name}: line {reader.line_num}"
            if any(row.get(None) or ()):
                raise InputError(f"{where}: more fields than the header has columns")
            signal = (row.get("signal_type") or "").strip()
            if signal not in SIGNALS:
                stats.skip(f"signal type {signal[:40]}")
                continue
            hash_type = SIGNALS[signal]
            value = hash_value(hash_type, row.get("signal_str"), f"{where}, field signal_str")
            collab = row.get("collab") or ""
            c = case if case is not None else checked.get(("collab", collab))
            if c is None:
                c = case_id(collab.strip().replace(" ", "-"), f"{where}, field collab (or give --case)")
                remember(("collab", collab), c)
            category = (row.get("category") or "POSITIVE_CLASS").strip()
            if category not in CATEGORIES:
                raise InputError(f"{where}, field category: {category[:40]!r} is not one of {sorted(CATEGORIES)}")
            if category == "INVESTIGATION_SEED":
                stats.skip("category INVESTIGATION_SEED")
                continue
            tags = row.get("tags") or ""
            mine = checked.get(("tags", tags))
            if mine is None:
                mine = labels_of([*labels, *tags.split()], f"{where}, field tags")
                remember(("tags", tags), mine)
            record = Record(hash_type, value, c, mine)
            claim = Claim(f"{hash_type}:{value.hex()}:{c}", 0, n)
            (claim.gone if category == "NEGATIVE_CLASS" else claim.records).append(record)
            stats.elements = n
            yield claim
    except csv.Error as e:
        raise InputError(f"{name}: line {reader.line_num}: invalid CSV: {e}") from None
    except InputError as e:
        if str(e).startswith(name):
            raise
        raise InputError(f"{name}: line {reader.line_num + 1}: {e}") from None
    if stats.elements == 0 and not stats.skipped:
        raise InputError(f"{name}: no rows")
