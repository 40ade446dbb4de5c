"""Segment new CT scans (no labels needed) with a trained method; masks come back on the scans' own grids.

    python -m plaque.segment --checkpoint CKPT --input DIR --out DIR [--centerline FILE] [--series UID]
                             [--vessel-model FILE | --axial-tiles] [--device cpu|cuda|auto]

``CKPT`` is a trained method's self-contained ``best.pt`` (any method, nnU-Net included) or its folder.
``DIR`` is one scan (a DICOM series folder, a folder with a DICOMDIR, a NIfTI or NRRD file), one patient
folder, or a folder of patients ``DIR/<patient>/dicom/`` (or ``image.nii.gz``, ``image.nrrd``) with an optional
``centerline.json`` (or Slicer ``centerline.mrk.json``, ``centerlines/``) each: `plaque.segment.scans`.
A scan without a centerline is cut along centerlines derived from the vessel model's mask
(`plaque.segment.vessels`; ``--vessel-model``, default ``models/vessel/best.pt``), or, with ``--axial-tiles``,
into axial tiles. Outputs: `plaque.segment.run`; the rule mapping cross-sections back to voxels and the
axial tiles: `plaque.segment.volume`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from plaque.cli import add_device_option, command_line, resolve_device, run_cli
from plaque.inference import load_predictor
from plaque.segment.run import segment
from plaque.segment.scans import scan_folders
from plaque.segment.vessels import DEFAULT_VESSEL_MODEL, load_vessel_finder


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <file>: <problem>`` and returns 2 on bad input, writing nothing."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        **command_line(
            "plaque.segment",
            "plaque-segment",
            "--checkpoint models/stage2/ours/best.pt --input scans/ --out segmented/",
            "--checkpoint models/stage2/ours/best.pt --input scan/dicom --centerline scan/centerline.json --out seg/",
            "--checkpoint models/stage2/ours/best.pt --input scans/ --axial-tiles --out seg/",
        ),
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained model: best.pt or its folder")
    parser.add_argument(
        "--input", type=Path, required=True, help="a scan (DICOM folder, NIfTI or NRRD file) or a folder of patients"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    parser.add_argument(
        "--centerline",
        type=Path,
        default=None,
        help="centerline.json, Slicer .mrk.json or a folder of .mrk.json of the one scan in --input "
        "(default: each patient's own, if any)",
    )
    parser.add_argument("--series", default=None, help="SeriesInstanceUID to read where a folder holds several")
    parser.add_argument(
        "--vessel-model",
        type=Path,
        default=DEFAULT_VESSEL_MODEL,
        help=f"vessel model that finds the centerlines of scans without one (default: {DEFAULT_VESSEL_MODEL})",
    )
    parser.add_argument(
        "--axial-tiles",
        action="store_true",
        help="cut scans without a centerline into axial tiles instead (the model never saw such views)",
    )
    add_device_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def run() -> None:
        device = resolve_device(args.device)
        predictor = load_predictor(args.checkpoint, device)
        without = any(line is None for _, line in scan_folders(args.input, args.centerline))
        finder = load_vessel_finder(args.vessel_model, device) if without and not args.axial_tiles else None
        segment(predictor, args.input, args.out, args.centerline, args.series, args.checkpoint, finder)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
