"""Write an output folder all at once: readers see the old folder or the complete new one, never a half-written one."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out`` to write into.

    When the block ends normally the sibling replaces ``out`` (an existing ``out`` is moved aside
    first and deleted only once the new folder is in place). When the block raises, the sibling is
    removed, ``out`` is left as it was, and the error propagates.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.partial-{tag}"
    old = out.parent / f".{out.name}.old-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old.exists():
                old.rename(out)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
