"""Write a file under a temporary name beside it, and rename it into place once complete.

A job killed mid-write then leaves the previous file or none, never a half-written one that
Snakemake (or a reader) would take for finished; the next run overwrites the leftover. The
temporary keeps the suffix (writers such as matplotlib choose the format by it) and is hidden.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced_when_done(path: str | Path) -> Iterator[Path]:
    """Yield the temporary path to write; on success it becomes ``path``, on an error it is
    removed. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
