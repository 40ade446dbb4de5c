"""Centerlines as 3D Slicer markups curves (``.mrk.json``): Slicer opens them over the scan and its segmentation.

Schema: https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json.
Written: one ``Curve`` per file, named after its vessel, control points in LPS mm. Read: every ``Curve`` of a
file (LPS or RAS, mm), or of every ``.mrk.json`` file in a folder; a curve is named by its ``name``, else by
its file name.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from plaque.errors import InputError
from plaque.io.labels import read_json

MARKUPS_SUFFIX = ".mrk.json"
SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json"
CURVE = "Curve"
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def is_markups(path: Path) -> bool:
    """Whether ``path`` is named as a Slicer markups file."""
    return Path(path).name.endswith(MARKUPS_SUFFIX)


def _document(name: str, points: np.ndarray) -> dict[str, object]:
    """The markups document of one open curve ``name`` through ``points`` ``(P, 3)`` LPS mm."""
    control = [
        {
            "id": str(n + 1),
            "label": f"{name}-{n + 1}",
            "position": [round(float(v), 4) for v in p],
            "positionStatus": "defined",
        }
        for n, p in enumerate(np.asarray(points, dtype=np.float64))
    ]
    markup = {
        "type": CURVE,
        "name": name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": True,
        "labelFormat": "%N-%d",
        "controlPoints": control,
        "display": {"visibility": True, "pointLabelsVisibility": False, "glyphScale": 1.0},
    }
    return {"@schema": SCHEMA, "markups": [markup]}


def write_curves(folder: Path, centerlines: dict[str, np.ndarray]) -> list[Path]:
    """Write each vessel of ``centerlines`` (name -> ``(P, 3)`` LPS mm) as ``folder/<name>.mrk.json``.

    Names are made file-safe (characters other than letters, digits, ``-`` and ``_`` become ``_``); the curve
    keeps its own name inside the file. Returns the written paths, in the order of ``centerlines``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, points in centerlines.items():
        path = folder / f"{re.sub(r'[^A-Za-z0-9_-]', '_', name) or 'vessel'}{MARKUPS_SUFFIX}"
        if path in paths:
            raise InputError(path, f"two vessels ({name!r} and another) share this file name")
        path.write_text(json.dumps(_document(name, points), indent=1))
        paths.append(path)
    return paths


def read_curves(path: Path) -> dict[str, np.ndarray]:
    """Read the curves of a ``.mrk.json`` file, or of every ``.mrk.json`` file in a folder (by name).

    Returns:
        vessel name -> ``(P, 3)`` float64 LPS mm.

    Raises:
        InputError: a missing file, a folder without markups, invalid JSON, no curve, a curve with fewer than 2
            points, non-finite or malformed positions, units other than mm, or one vessel name twice.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if is_markups(p) and not p.name.startswith("."))
        if not files:
            raise InputError(path, f"folder holds no {MARKUPS_SUFFIX} files")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(path, "centerline file not found")
    curves: dict[str, np.ndarray] = {}
    for file in files:
        for name, points in _read_file(file).items():
            if name in curves:
                raise InputError(file, f"vessel {name!r} appears twice")
            curves[name] = points
    return curves


def _read_file(path: Path) -> dict[str, np.ndarray]:
    """The curves of one markups file (see `read_curves`)."""
    data = read_json(path)
    markups = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(markups, list):
        raise InputError(path, 'not a Slicer markups file: expected an object with a "markups" list')
    curves = [m for m in markups if isinstance(m, dict) and m.get("type") == CURVE]
    if not curves:
        raise InputError(path, f"holds no {CURVE} markup")
    stem = path.name[: -len(MARKUPS_SUFFIX)] if is_markups(path) else path.stem
    out: dict[str, np.ndarray] = {}
    for n, markup in enumerate(curves):
        name = str(markup.get("name") or (stem if len(curves) == 1 else f"{stem}-{n + 1}"))
        if name in out:
            raise InputError(path, f"vessel {name!r} appears twice")
        out[name] = _points(path, name, markup)
    return out


def _points(path: Path, name: str, markup: dict[str, object]) -> np.ndarray:
    """``(P, 3)`` LPS mm control points of one curve markup."""
    system = markup.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise InputError(path, f"curve {name!r}: coordinateSystem {system!r}, expected LPS or RAS")
    units = markup.get("coordinateUnits", "mm")
    if units != "mm" and not (isinstance(units, list) and units[:1] == ["mm"]):
        raise InputError(path, f"curve {name!r}: coordinateUnits {units!r}, expected mm")
    control = markup.get("controlPoints", [])
    if not isinstance(control, list) or not all(isinstance(p, dict) and _is_point(p.get("position")) for p in control):
        raise InputError(path, f"curve {name!r}: every control point needs a position [x, y, z] of numbers")
    if len(control) < 2:
        raise InputError(path, f"curve {name!r}: {len(control)} control point(s), need at least 2")
    points = np.array([p["position"] for p in control], dtype=np.float64)
    if not all(math.isfinite(v) for v in points.ravel()):
        raise InputError(path, f"curve {name!r}: non-finite coordinate (NaN or infinity)")
    return points * RAS_TO_LPS if system == "RAS" else points


def _is_point(p: object) -> bool:
    """A JSON ``[x, y, z]`` of numbers (booleans are not numbers here)."""
    return (
        isinstance(p, list) and len(p) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
    )
