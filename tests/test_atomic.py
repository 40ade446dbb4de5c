"""An output folder is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from plaque.atomic import atomic_folder


def test_success_replaces_the_old_folder_without_leftovers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()  # nothing visible until the block ends
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_keeps_the_old_folder_and_removes_the_partial_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_folder(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert (out / "old.txt").read_text() == "old" and [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_without_an_old_folder_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyError), atomic_folder(tmp_path / "new" / "out"):
        raise KeyError("x")
    assert [p.name for p in (tmp_path / "new").iterdir()] == []
