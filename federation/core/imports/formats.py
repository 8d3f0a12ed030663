"""One entry point over the readers: a format name to its claims. Pure."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from federation.core.errors import InputError
from federation.core.imports import FORMATS, Claim, ReadStats
from federation.core.imports.hma import read_hma
from federation.core.imports.ncmec import read_ncmec
from federation.core.imports.stopncii import read_stopncii


def read_claims(stream, name: str, fmt: str, labels: Iterable[str] = (), stats: ReadStats | None = None,
                case: str | None = None, whole: bool = False) -> Iterator[Claim]:
    """Claims of the binary ``stream`` in format ``fmt`` (``FORMATS``); ``case``
    (HMA only) overrides the collaboration's name as every record's case.
    ``whole``: the stream is to be a full list (an NCMEC page is refused)."""
    if case is not None and fmt != "hma":
        raise InputError("--case names the case of an HMA / threatexchange CSV's records; NCMEC and StopNCII "
                         "records carry their own")
    if fmt == "ncmec":
        return read_ncmec(stream, name, labels, stats, whole)
    if fmt == "stopncii":
        return read_stopncii(stream, name, labels, stats)
    if fmt == "hma":
        return read_hma(stream, name, labels, stats, case)
    raise InputError(f"unknown list format {fmt!r}; use one of {', '.join(FORMATS)}")
