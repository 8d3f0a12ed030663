"""Progress bars of the CLI: tqdm on stderr, on a terminal or when asked.

``--progress/--no-progress`` (``progress_option``) on ``sync``, ``publish`` and
``export``; without either, a bar is drawn only when stderr is a terminal, so
logs and pipes never get carriage returns. Bars are never on stdout, and a
command closes its bar (``leave=False`` clears the line) *before* it prints its
summary, so the summary never lands on the bar's line; while a bar is drawn,
log lines go through ``tqdm.write`` (``logging_redirect_tqdm``), which clears
the bar, prints the line and draws the bar again below it.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator

import click
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


def progress_option(f):
    return click.option("--progress/--no-progress", "progress", default=None,
                        help="Show a progress bar on stderr (default: only when stderr is a terminal).")(f)


class Bar(tqdm):
    """tqdm on stderr that routes log lines around itself and always draws its last state."""

    def __init__(self, desc: str, enabled: bool, total: int | None, unit: str, scale: bool):
        super().__init__(desc=desc, total=total, unit=unit, unit_scale=scale, disable=not enabled, leave=False,
                         file=sys.stderr, dynamic_ncols=True)
        self._redirect = logging_redirect_tqdm(tqdm_class=tqdm) if enabled else None
        if self._redirect is not None:
            self._redirect.__enter__()

    def update(self, n=1):
        super().update(n)
        if not self.disable and self.total and self.n >= self.total:
            self.refresh()  # tqdm draws at most every 0.1 s: show 100% before the bar goes

    def close(self):
        try:
            super().close()
        finally:
            redirect, self._redirect = getattr(self, "_redirect", None), None
            if redirect is not None:
                redirect.__exit__(None, None, None)


def bar(desc: str, wanted: bool | None, total: int | None = None, unit: str = "", scale: bool = True) -> Bar:
    """A bar, disabled unless ``wanted`` (None: stderr is a terminal)."""
    return Bar(desc, sys.stderr.isatty() if wanted is None else wanted, total, unit, scale)


class SyncBar:
    """A feed's sync: total and percentage from the accepted checkpoint's size.

    ``sync_feed`` calls ``target(applied, size)`` once the new checkpoint is
    accepted (so the total is the entries the sync will apply), then the
    instance itself with each applied version."""

    def __init__(self, name: str, wanted: bool | None):
        self.name, self.wanted, self.bar = name, wanted, None

    def target(self, applied: int, size: int) -> None:
        # Drawn only once there is something to apply: "up to date" shows no bar.
        self.close()
        self.bar = bar(f"sync {self.name}", self.wanted, total=max(size - applied, 0), unit=" entries",
                       scale=False)

    def __call__(self, v) -> None:
        if self.bar is not None:
            self.bar.update(v.end - v.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def read_with_progress(lines: Iterable[bytes], b: tqdm) -> Iterator[bytes]:
    """Lines of a batch file, advancing ``b`` by their bytes (its total: the file's size)."""
    for line in lines:
        b.update(len(line))
        yield line


def file_size(f) -> int | None:
    """The size of an open regular file, or None (stdin, a pipe)."""
    try:
        st = os.fstat(f.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
