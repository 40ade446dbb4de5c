"""Data: the phantom cohort, DICOM/NIfTI ingestion, cross-section slicing and splits."""
