"""Review before use: what normal looks like per organ, per-case contour QA, calibration, and review pages.

Pure functions on numpy arrays with an affine (voxel -> RAS+ mm), class names, colours and a
JSON-ready statistics dict; training, ``rtseg predict`` and ``rtseg review`` call them.
"""
