"""The shared CT series (8 slices of it) in every transfer syntax a CT archive uses, and as Enhanced CT.

Made once per session: the shared series (JPEG 2000 lossless) decoded by pydicom and written uncompressed
(the reference), then recompressed by dcmtk (``dcmcjpeg +e1`` / ``+el``, ``dcmcjpls``, ``dcmcrle``,
``dcmconv +tb`` / ``+td``) and by pydicom with pylibjpeg-openjpeg where dcmtk cannot (JPEG 2000). Each variant
gets its own Series and SOP Instance UIDs (so a node sees separate series). The Enhanced CTs: highdicom's
Legacy Converted Enhanced CT of the same slices, and an Enhanced CT Image Storage instance built from it
with its frames shuffled and Pixel Measures / Pixel Value Transformation per frame (each frame stored with
its own RescaleIntercept, the stored values shifted to match), so that every functional group is read
per frame.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (JPEG2000, EnhancedCTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless,
                         generate_uid)

SERIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom-ct-series"
N_SLICES = 8


@dataclass(frozen=True)
class Variant:
    name: str
    syntax: str  # the transfer syntax UID its files must carry
    tool: tuple[str, ...] = ()  # dcmtk command (input and output file appended); empty: pydicom
    exact: bool = True  # lossless: voxel for voxel equal to the uncompressed series


LOSSLESS = (
    Variant("jpeg-lossless-sv1", "1.2.840.10008.1.2.4.70", ("dcmcjpeg", "+e1")),
    Variant("jpeg-lossless-p14", "1.2.840.10008.1.2.4.57", ("dcmcjpeg", "+el")),
    Variant("jpeg-ls", "1.2.840.10008.1.2.4.80", ("dcmcjpls",)),
    Variant("rle", "1.2.840.10008.1.2.5", ("dcmcrle",)),
    Variant("big-endian", "1.2.840.10008.1.2.2", ("dcmconv", "+tb")),
    Variant("deflate", "1.2.840.10008.1.2.1.99", ("dcmconv", "+td")),
    Variant("jpeg2000-lossless", str(JPEG2000Lossless)),
)
LOSSY = (
    Variant("jpeg-ls-near", "1.2.840.10008.1.2.4.81", ("dcmcjpls", "+en", "+md", "2", "+un"), exact=False),
    Variant("jpeg2000-lossy", str(JPEG2000), exact=False),
)
ENHANCED = ("legacy-converted-enhanced", "enhanced")


@dataclass
class SyntaxSet:
    root: Path
    uncompressed: Path

    def folder(self, name: str) -> Path:
        return self.root / name


def _decoded_copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.dcm"))[:N_SLICES]:
        ds = pydicom.dcmread(f)
        ds.decompress()
        ds.save_as(dst / f.name, enforce_file_format=True)


def _renamed(src: Path, dst: Path, edit: Callable[[Dataset], None] | None = None) -> None:
    """The slices with a new Series UID and new SOP Instance UIDs (an edit on each optional)."""
    dst.mkdir(parents=True)
    series = generate_uid()
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if edit:
            edit(ds)
        ds.save_as(dst / f.name, enforce_file_format=True)


def _make(v: Variant, raw: Path, out: Path) -> None:
    if v.tool:
        tmp = out.with_name(out.name + ".in")
        _renamed(raw, tmp)
        out.mkdir()
        for f in sorted(tmp.glob("*.dcm")):
            subprocess.run([*v.tool, str(f), str(out / f.name)], check=True, capture_output=True, timeout=60)
        shutil.rmtree(tmp)
        return
    kwargs = {"j2k_cr": [10]} if v.syntax == str(JPEG2000) else {}
    _renamed(raw, out, lambda ds: ds.compress(v.syntax, encoding_plugin="pylibjpeg", **kwargs))


def legacy_converted(raw: Path, out: Path) -> Path:
    import highdicom as hd

    sources = [pydicom.dcmread(f) for f in sorted(raw.glob("*.dcm"))]
    im = hd.legacy.LegacyConvertedEnhancedCTImage(sources, series_instance_uid=hd.UID(), series_number=90,
                                                  sop_instance_uid=hd.UID(), instance_number=1)
    out.mkdir()
    im.save_as(out / "enhanced.dcm")
    return out / "enhanced.dcm"


def true_enhanced(lce_file: Path, out: Path) -> Path:
    """Enhanced CT Image Storage: frames shuffled, every group per frame, each frame its own intercept."""
    ds = pydicom.dcmread(lce_file)
    stored = ds.pixel_array.astype(np.int32)
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures, value = shared.PixelMeasuresSequence, shared.PixelValueTransformationSequence
    orient = shared.PlaneOrientationSequence
    del shared.PixelMeasuresSequence, shared.PixelValueTransformationSequence, shared.PlaneOrientationSequence
    order = np.random.default_rng(3).permutation(len(ds.PerFrameFunctionalGroupsSequence))
    frames, items = [], []
    for new, old in enumerate(order):
        item = ds.PerFrameFunctionalGroupsSequence[int(old)]
        shift = 10 * new  # stored value + shift with intercept - shift: the same HU
        pv = Dataset()
        pv.RescaleSlope, pv.RescaleIntercept, pv.RescaleType = value[0].RescaleSlope, float(value[0].RescaleIntercept) - shift, "HU"
        item.PixelValueTransformationSequence = DicomSequence([pv])
        item.PixelMeasuresSequence = DicomSequence([measures[0]])
        item.PlaneOrientationSequence = DicomSequence([orient[0]])
        items.append(item)
        frames.append(stored[int(old)] + shift)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelData = np.stack(frames).astype(np.uint16).tobytes()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.mkdir()
    ds.save_as(out / "enhanced.dcm", enforce_file_format=True)
    return out / "enhanced.dcm"


def need_dcmtk() -> None:
    missing = [t for t in ("dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmconv") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (dcmtk makes the compressed series)")


@pytest.fixture(scope="session")
def syntax_set(tmp_path_factory: pytest.TempPathFactory) -> SyntaxSet:
    if not SERIES.is_dir():
        pytest.skip(f"{SERIES} not found (../shared/data is absent)")
    need_dcmtk()
    root = tmp_path_factory.mktemp("syntaxes")
    raw = root / "uncompressed"
    _decoded_copy(SERIES, raw)
    for v in LOSSLESS + LOSSY:
        _make(v, raw, root / v.name)
    lce = legacy_converted(raw, root / ENHANCED[0])
    true_enhanced(lce, root / ENHANCED[1])
    return SyntaxSet(root, raw)


def storescu_config(path: Path) -> tuple[str, str]:
    """A storescu configuration (``-xf FILE PROFILE``) proposing each CT storage class in every syntax above, one
    presentation context each: storescu's own options cannot propose JPEG Lossless Process 14 (.57)."""
    from rtseg.io.dicom.frames import CT_STORAGE_CLASSES

    syntaxes = sorted({v.syntax for v in LOSSLESS + LOSSY} | {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"})
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["", "[[PresentationContexts]]", "[CT]"]
    n = 0
    for cls in CT_STORAGE_CLASSES:
        for i in range(len(syntaxes)):
            n += 1
            lines.append(f"PresentationContext{n} = {cls}\\TS{i}")
    lines += ["", "[[Profiles]]", "[AllCT]", "PresentationContexts = CT", ""]
    path.write_text("\n".join(lines))
    return str(path), "AllCT"
