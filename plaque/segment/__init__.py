"""Segmentation of new, unlabelled CT scans: cross-sections cut as in training, predicted by any trained
method, mapped back to the scan's voxels (`volume`), written as NIfTI, DICOM-SEG, volumes and overlays
(`run`). Command line: ``python -m plaque.segment`` (`__main__`)."""
