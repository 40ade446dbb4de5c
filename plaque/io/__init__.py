"""Readers and writers for the raw data layout: DICOM CT series, NIfTI label volumes, centerlines.

Raw layout (written by the phantom, expected from users)::

    RAW/<patient>/dicom/*.dcm        one CT series
    RAW/<patient>/label.nii.gz       label volume on the same grid
    RAW/<patient>/centerline.json    optional: {"<vessel>": [[x, y, z], ...], ...} in LPS mm
"""
