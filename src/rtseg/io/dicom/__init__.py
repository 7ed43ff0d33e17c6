"""DICOM images: CT series in (geometry, values), derived objects out (CT series, SEG)."""
