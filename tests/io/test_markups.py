"""3D Slicer markups curves: written as Slicer reads them, read back to the same centerlines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plaque.errors import InputError
from plaque.io.markups import SCHEMA, read_curves, write_curves

LINES = {
    "LAD": np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 4.0], [2.0, 3.25, 5.125]]),
    "RCA 2": np.array([[-10.0, 0.0, 0.0], [-11.0, 0.5, 0.25]]),
}


def test_round_trip_through_a_folder_of_curves(tmp_path: Path) -> None:
    paths = write_curves(tmp_path / "lines", LINES)
    assert [p.name for p in paths] == ["LAD.mrk.json", "RCA_2.mrk.json"]
    back = read_curves(tmp_path / "lines")
    assert sorted(back) == sorted(LINES)
    for name, points in LINES.items():
        np.testing.assert_allclose(back[name], points, atol=1e-4)
    assert read_curves(paths[1]).keys() == {"RCA 2"}


def test_written_file_follows_the_slicer_schema(tmp_path: Path) -> None:
    (path,) = write_curves(tmp_path, {"LAD": LINES["LAD"]})
    data = json.loads(path.read_text())
    assert data["@schema"] == SCHEMA
    (markup,) = data["markups"]
    assert markup["type"] == "Curve" and markup["coordinateSystem"] == "LPS" and markup["name"] == "LAD"
    assert [p["position"] for p in markup["controlPoints"]] == LINES["LAD"].tolist()


def test_ras_curves_and_several_per_file(tmp_path: Path) -> None:
    point = [{"position": [1.0, 2.0, 3.0]}, {"position": [4.0, 5.0, 6.0]}]
    doc = {
        "@schema": SCHEMA,
        "markups": [
            {"type": "Curve", "coordinateSystem": "RAS", "controlPoints": point},
            {"type": "Fiducial", "controlPoints": point[:1]},
            {"type": "Curve", "name": "LCX", "controlPoints": point},
        ],
    }
    (tmp_path / "lines.mrk.json").write_text(json.dumps(doc))
    curves = read_curves(tmp_path / "lines.mrk.json")
    np.testing.assert_array_equal(curves["lines-1"], [[-1.0, -2.0, 3.0], [-4.0, -5.0, 6.0]])
    np.testing.assert_array_equal(curves["LCX"], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", r"invalid JSON at line 1"),
        ('{"LAD": [[0, 0, 0]]}', r"not a Slicer markups file"),
        ('{"markups": [{"type": "Fiducial"}]}', r"holds no Curve markup"),
        ('{"markups": [{"type": "Curve", "controlPoints": [{"position": [0, 0, 0]}]}]}', r"1 control point\(s\)"),
        ('{"markups": [{"type": "Curve", "controlPoints": [{"position": [0, 0]}, {}]}]}', r"needs a position"),
        ('{"markups": [{"type": "Curve", "coordinateUnits": "um", "controlPoints": []}]}', r"expected mm"),
    ],
)
def test_bad_markups_are_one_line_naming_the_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "c.mrk.json"
    path.write_text(content)
    with pytest.raises(InputError, match=rf"c\.mrk\.json: .*{problem}"):
        read_curves(path)


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"x\.mrk\.json: centerline file not found"):
        read_curves(tmp_path / "x.mrk.json")
    with pytest.raises(InputError, match=r"folder holds no \.mrk\.json files"):
        read_curves(tmp_path)


def test_one_vessel_in_two_files_is_an_error(tmp_path: Path) -> None:
    write_curves(tmp_path / "a", {"LAD": LINES["LAD"]})
    write_curves(tmp_path / "b", {"LAD": LINES["LAD"]})
    (tmp_path / "b" / "LAD.mrk.json").rename(tmp_path / "a" / "other.mrk.json")
    with pytest.raises(InputError, match=r"other\.mrk\.json: vessel 'LAD' appears twice"):
        read_curves(tmp_path / "a")
