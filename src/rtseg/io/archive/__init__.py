"""A clinic's DICOM export -> a training-ready NIfTI dataset (scan, one case, outputs, the pool)."""
