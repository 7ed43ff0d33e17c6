"""Options shared by the commands that write DICOM contours (``predict``, ``convert``)."""
from __future__ import annotations

import argparse

from rtseg.io.rtstruct.contours import DEFAULT_HOLE_ENCODING, HOLE_ENCODINGS


def add_roi_name_options(p: argparse.ArgumentParser) -> None:
    """``--holes`` and ``--roi-names``: how RTSTRUCT contours encode holes and what the ROIs are called."""
    p.add_argument("--holes", choices=HOLE_ENCODINGS, default=DEFAULT_HOLE_ENCODING,
                   help="RTSTRUCT hole encoding: keyhole (each hole joined to its outline by a zero-width cut; read "
                   "the same by every planning system) or xor (holes as separate inner contours); default: "
                   f"{DEFAULT_HOLE_ENCODING}")
    p.add_argument("--roi-names", metavar="FILE",
                   help="JSON or YAML mapping class -> ROI name, e.g. {\"bladder\": \"Blase\"}; classes not listed "
                   "get their AAPM TG-263 name (Femur_Head_L, Parotid_R, ...)")
