"""Readers and writers for the raw data layout: CT scans (DICOM series or NIfTI/NRRD volumes), label volumes,
centerlines.

Raw layout (written by the phantom, expected from users)::

    RAW/<patient>/dicom/*.dcm        one CT series (or a DICOMDIR and the files it lists)
      or RAW/<patient>/image.nii.gz  the CT as a volume (also image.nii, image.nrrd)
    RAW/<patient>/label.nii.gz       label volume on the same grid (also label.nii, label.nrrd)
    RAW/<patient>/centerline.json    optional: {"<vessel>": [[x, y, z], ...], ...} in LPS mm
      or centerline.mrk.json         3D Slicer markups curves, or a folder centerlines/ of them
"""
