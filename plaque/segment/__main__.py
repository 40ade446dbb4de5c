"""Segment new CT scans (no labels needed) with a trained method; masks come back on the scans' own grids.

    python -m plaque.segment --checkpoint CKPT --input DIR --out DIR [--centerline FILE] [--series UID]
                             [--device cpu|cuda|auto]

``CKPT`` is a trained method's self-contained ``best.pt`` (any method, nnU-Net included) or its folder.
``DIR`` is one scan (a DICOM series folder, a folder with a DICOMDIR, a NIfTI or NRRD file), one patient
folder, or a folder of patients ``DIR/<patient>/dicom/`` (or ``image.nii.gz``, ``image.nrrd``) with an optional
``centerline.json`` (or Slicer ``centerline.mrk.json``, ``centerlines/``) each: `plaque.segment.scans`.
Outputs: `plaque.segment.run`; the rule mapping cross-sections back to voxels and the fallback without a
centerline: `plaque.segment.volume`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from plaque.cli import add_device_option, command_line, resolve_device, run_cli
from plaque.inference import load_predictor
from plaque.segment.run import segment


def main(argv: list[str] | None = None) -> int:
    """Command line; prints ``error: <file>: <problem>`` and returns 2 on bad input, writing nothing."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        **command_line(
            "plaque.segment",
            "plaque-segment",
            "--checkpoint models/stage2/ours/best.pt --input scans/ --out segmented/",
            "--checkpoint models/stage2/ours/best.pt --input scan/dicom --centerline scan/centerline.json --out seg/",
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
    add_device_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def run() -> None:
        predictor = load_predictor(args.checkpoint, resolve_device(args.device))
        segment(predictor, args.input, args.out, args.centerline, args.series, args.checkpoint)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
