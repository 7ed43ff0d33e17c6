"""Fuzzing the five readers: mutations of real files and the check every outcome must pass.

Shared by tests/test_fuzz_readers.py (a small, derandomized budget in CI) and
benchmarks/fuzz.py (the long run). A mutated input must end in a correct read
(a Volume/RtStruct that passes the integrity invariants) or an ``RtsegError``;
any other exception, a hang (``Hang``) or a file left behind by the reader is a
finding.
"""
from __future__ import annotations

import contextlib
import io
import math
import shutil
import signal
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import nibabel as nib
import numpy as np
import pydicom
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.nifti import read_nifti
from rtseg.io.rtstruct import read_rtstruct
from rtseg.io.legacy_npy import read_npy, to_legacy_npy_array
from rtseg.io.volume import Volume

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CT_SERIES = DATA / "dicom-ct-series"
RTSS = DATA / "rtstruct-example" / "rtss.dcm"
PELVIS = DATA / "pelvis-ct" / "pelvis_ct.nii.gz"
READERS = ("nifti", "npy", "dicom_slice", "dicom_series", "rtstruct")


class Hang(Exception):
    """A reader ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``Hang`` in the main thread after ``seconds`` (SIGALRM; Unix)."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- byte mutations ---------------------------------------------------------------------------

INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f",
               struct.pack("<f", math.nan), struct.pack("<f", math.inf), struct.pack("<d", math.nan),
               struct.pack("<d", -1e308), struct.pack("<h", -1), struct.pack("<h", 32767))


@st.composite
def byte_mutations(draw: st.DrawFn, size: int, hot: int) -> list[tuple[str, int, int, bytes]]:
    """1-4 edits (flip, overwrite, cut, splice, truncate); half of the positions fall in the first ``hot``
    bytes, where headers live, the rest anywhere in the file."""
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        hi = hot if draw(st.booleans()) else size
        pos = draw(st.integers(0, max(0, min(hi, size) - 1)))
        kind = draw(st.sampled_from(("flip", "set", "cut", "splice", "truncate")))
        length = draw(st.integers(1, 64))
        value = draw(st.sampled_from(INTERESTING)) if kind == "set" else bytes([draw(st.integers(1, 255))])
        ops.append((kind, pos, length, value))
    return ops


def apply_bytes(base: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    buf = bytearray(base)
    for kind, pos, length, value in ops:
        pos = min(pos, max(0, len(buf) - 1))
        if kind == "flip" and buf:
            buf[pos] ^= value[0]
        elif kind == "set":
            buf[pos:pos + len(value)] = value
        elif kind == "cut":
            del buf[pos:pos + length]
        elif kind == "splice":
            src = (pos * 7919) % max(1, len(buf))  # a chunk from elsewhere in the same file
            buf[pos:pos] = buf[src:src + length]
        elif kind == "truncate":
            del buf[pos:]
    return bytes(buf)


# --- header-field mutations -------------------------------------------------------------------

NIFTI_FIELDS = ("dim", "pixdim", "datatype", "bitpix", "vox_offset", "scl_slope", "scl_inter", "qform_code",
                "sform_code", "srow_x", "srow_y", "quatern_b", "quatern_d", "qoffset_x", "magic", "sizeof_hdr")
ABSURD_NUMBERS = (0, -1, 1, 2, 7, 255, 32767, -32768, math.nan, math.inf, -math.inf, 1e30, -1e-30)


@st.composite
def nifti_field_edits(draw: st.DrawFn) -> list[tuple[str, int, float]]:
    return [(draw(st.sampled_from(NIFTI_FIELDS)), draw(st.integers(0, 7)), draw(st.sampled_from(ABSURD_NUMBERS)))
            for _ in range(draw(st.integers(1, 3)))]


def apply_nifti_fields(base: bytes, edits: list[tuple[str, int, float]]) -> bytes:
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(base), check=False)
    raw = hdr.structarr
    for name, index, value in edits:
        field = raw[name]
        with np.errstate(all="ignore"):
            if field.dtype.kind == "S":
                raw[name] = b"" if value == 0 else b"n+9\x00"
            elif field.ndim == 0:
                raw[name] = np.array(value).astype(field.dtype) if np.isfinite(value) or field.dtype.kind == "f" else 0
            else:
                field[index % field.size] = np.array(value).astype(field.dtype) if np.isfinite(value) or field.dtype.kind == "f" else 0
    return raw.tobytes() + base[348:]


NPY_HEADERS = ("{'descr': '|O', 'fortran_order': False, 'shape': (4, 4, 4), }",
               "{'descr': '<c16', 'fortran_order': False, 'shape': (4, 4, 4), }",
               "{'descr': '<f4', 'fortran_order': False, 'shape': (99999, 99999, 99999), }",
               "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4, 4), }",
               "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 4), }",
               "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4, 4, 4), }",
               "{'descr': '<U3', 'fortran_order': False, 'shape': (4, 4, 4), }",
               "{'descr': '<f4', 'fortran_order': 'yes', 'shape': (4, 4, 4), }",
               "__import__('os').system('true')", "{'descr': '<f8', 'shape': (4, 4, 4)}", "{" * 200)


def npy_with_header(header: str, body: bytes) -> bytes:
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text) + pad + 1) + text + b" " * pad + b"\n" + body


CT_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
               "PhotometricInterpretation", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
               "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "Modality",
               "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "NumberOfFrames", "PixelData")
ABSURD_VALUES: tuple[Any, ...] = ("", "0", "-1", "nan", "inf", "-inf", "1e308", "abc", "\\".join(["1"] * 7), 0, 65535,
                                  "1.2.3", "RTSTRUCT", b"\x00\x01\x02")
WRONG_VRS = ("LO", "OB", "FD", "SQ", "US", "UN", "AT")  # keys of WRONG_VR_BYTES


@st.composite
def tag_edits(draw: st.DrawFn, keywords: tuple[str, ...]) -> list[tuple[str, str, int, Any]]:
    """1-3 edits: (action, keyword or '', index into all elements, value); '' + index picks any element,
    nested ones included (ROI sequences, contours)."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(("delete", "value", "vr")))
        keyword = draw(st.sampled_from(keywords + ("",)))
        value = draw(st.sampled_from(ABSURD_VALUES)) if action == "value" else draw(st.sampled_from(WRONG_VRS))
        out.append((action, keyword, draw(st.integers(0, 10**6)), value))
    return out


def _raw(tag: Any, vr: str, value: Any) -> RawDataElement:
    """An element written byte for byte, so pydicom does not validate (or refuse) the absurd value."""
    payload = value if isinstance(value, bytes) else str(value).encode("latin1")
    payload += b" " * (len(payload) % 2)
    return RawDataElement(tag, vr, len(payload), payload, 0, False, True)


WRONG_VR_BYTES = {"LO": b"abc", "OB": b"\x01\x02\x03", "FD": struct.pack("<d", 1e308), "SQ": b"\xfe\xff\x00\xe0\x08\x00\x00\x00",
                  "US": b"\x07\x00", "UN": b"\xff" * 5, "AT": b"\x10\x00\x10\x00"}


def apply_tag_edits(base: bytes, edits: list[tuple[str, str, int, Any]]) -> bytes | None:
    """The mutated file, or None when pydicom refuses to write the combination (not an input rtseg sees)."""
    ds = pydicom.dcmread(io.BytesIO(base))
    for action, keyword, index, value in edits:
        if keyword:
            parent: Dataset | None = ds if keyword in ds else None
            tag = ds.data_element(keyword).tag if parent is not None else None  # type: ignore[union-attr]
        else:
            elems = [(p, e) for p in _datasets(ds) for e in p]
            parent, elem = elems[index % len(elems)]
            tag = elem.tag
        if parent is None or tag is None:
            continue
        if action == "delete":
            del parent[tag]
        elif action == "vr":
            parent._dict[tag] = _raw(tag, value, WRONG_VR_BYTES[value])
        else:
            vr = parent[tag].VR
            parent._dict[tag] = _raw(tag, vr if vr not in ("SQ", "OB", "OW") else "LO", value)
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=False)
    except Exception:
        return None
    return out.getvalue()


def _datasets(ds: Dataset) -> Iterator[Dataset]:
    yield ds
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _datasets(item)


# --- the readers and what a correct read is ---------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    """Base files, as bytes, for every reader."""

    nifti: bytes
    npy: bytes
    ct_slices: tuple[bytes, ...]
    rtstruct: bytes


def load_corpus(n_series_slices: int = 3) -> Corpus:
    """Real files from ../shared/data; the NIfTI and .npy are a crop of the real pelvis CT, header kept."""
    img = nib.load(str(PELVIS))
    crop = img.slicer[40:64, 40:60, 50:66]
    nii = nib.Nifti1Image(np.asarray(crop.dataobj), crop.affine, crop.header)
    buf = io.BytesIO()
    np.save(buf, to_legacy_npy_array(Volume(np.asarray(crop.dataobj).astype(np.float32), crop.affine)), allow_pickle=False)
    slices = tuple(p.read_bytes() for p in sorted(CT_SERIES.glob("*.dcm"))[:n_series_slices])
    return Corpus(nii.to_bytes(), buf.getvalue(), slices, RTSS.read_bytes())


def check_volume(vol: Volume) -> None:
    """What every Volume a reader returns must satisfy."""
    assert isinstance(vol, Volume) and vol.array.ndim == 3 and min(vol.shape) >= 1
    assert np.all(np.isfinite(vol.affine)) and min(vol.spacing) > 0
    if vol.array.dtype.kind == "f":
        assert np.all(np.isfinite(vol.array))


def run_reader(reader: str, files: dict[str, bytes], folder: Path) -> Any:
    """Write ``files`` into an empty ``folder``, read them with ``reader``, check the result and that the
    reader left nothing behind. Raises whatever the reader raised."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    before = sorted(p.name for p in folder.iterdir())
    try:
        result = READ[reader](folder / next(iter(files)) if reader in ("nifti", "npy", "rtstruct") else folder)
    finally:
        assert sorted(p.name for p in folder.iterdir()) == before, "the reader left files behind"
    if isinstance(result, Volume):
        check_volume(result)
    else:
        assert all(len(c.points) >= 1 and np.all(np.isfinite(c.points)) for r in result.rois for c in r.contours)
    return result


READ: dict[str, Callable[[Path], Any]] = {
    "nifti": read_nifti,
    "npy": read_npy,
    "dicom_slice": read_dicom_series,
    "dicom_series": read_dicom_series,
    "rtstruct": read_rtstruct,
}


RTSS_KEYWORDS = ("ROIContourSequence", "StructureSetROISequence", "RTROIObservationsSequence", "Modality", "SOPClassUID",
                 "ReferencedFrameOfReferenceSequence", "SOPInstanceUID")


Files = dict[str, bytes]


@dataclass(frozen=True)
class Mutation:
    """One mutated input: a short description (what hypothesis prints on a failure) and how to build its
    files, {name: bytes}; the first name is what a file reader is given, folder readers get the folder.
    ``build`` returns None for a mutation pydicom would not write (not an input rtseg can meet)."""

    desc: str
    build: Callable[[], Files | None] = field(repr=False)

    def __repr__(self) -> str:
        return self.desc


def _in_files(name: str, others: Files, data: bytes | None) -> Files | None:
    return None if data is None else {name: data, **{k: v for k, v in others.items() if k != name}}


def _byte_cases(name: str, base: bytes, hot: int, others: Files | None = None,
                finish: Callable[[bytes], bytes] = bytes) -> st.SearchStrategy[Mutation]:
    return byte_mutations(len(base), hot).map(lambda ops: Mutation(
        f"{name}: bytes {ops}", lambda: _in_files(name, others or {}, finish(apply_bytes(base, ops)))))


def _dicom_cases(name: str, base: bytes, keywords: tuple[str, ...], hot: int, others: Files | None = None) -> st.SearchStrategy[Mutation]:
    tags = tag_edits(keywords).map(lambda e: Mutation(
        f"{name}: tags {e}", lambda: _in_files(name, others or {}, apply_tag_edits(base, e))))
    return st.one_of(_byte_cases(name, base, hot, others), tags)


def cases(reader: str, corpus: Corpus) -> st.SearchStrategy[Mutation]:
    """Mutated inputs for ``reader``, each a mutation of one real file."""
    import gzip

    if reader == "nifti":
        gz = gzip.compress(corpus.nifti, mtime=0)
        return st.one_of(
            _byte_cases("x.nii", corpus.nifti, 352),
            _byte_cases("x.nii.gz", corpus.nifti, 352, finish=lambda b: gzip.compress(b, mtime=0)),
            _byte_cases("x.nii.gz", gz, 64),
            nifti_field_edits().map(lambda e: Mutation(f"x.nii: fields {e}", lambda: {"x.nii": apply_nifti_fields(corpus.nifti, e)})),
        )
    if reader == "npy":
        body = corpus.npy[128:]
        return st.one_of(
            _byte_cases("x.npy", corpus.npy, 128),
            st.sampled_from(NPY_HEADERS).map(lambda h: Mutation(f"x.npy: header {h[:60]}", lambda: {"x.npy": npy_with_header(h, body)})),
        )
    if reader == "dicom_slice":
        return _dicom_cases("CT_000.dcm", corpus.ct_slices[0], CT_KEYWORDS, 4096)
    if reader == "dicom_series":
        series = {f"CT_{k:03d}.dcm": b for k, b in enumerate(corpus.ct_slices)}
        return st.sampled_from(sorted(series)).flatmap(lambda name: _dicom_cases(name, series[name], CT_KEYWORDS, 4096, series))
    if reader == "rtstruct":
        return _dicom_cases("rtss.dcm", corpus.rtstruct, RTSS_KEYWORDS, 8192)
    raise ValueError(f"unknown reader {reader!r}")


def classify(reader: str, files: Files, folder: Path, seconds: float) -> tuple[str, str]:
    """('read' | 'refused' | 'uncaught' | 'hang', detail) for one input."""
    from rtseg.errors import RtsegError

    try:
        with time_limit(seconds):
            run_reader(reader, files, folder)
    except RtsegError as exc:
        text = str(exc)
        return ("refused", text) if "\n" not in text else ("uncaught", f"multi-line error: {text[:200]}")
    except Hang as exc:
        return "hang", str(exc)
    except Exception as exc:  # the findings
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "/rtseg/" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} ({ours[-1].name})"
        if ours[-1] is not frames[-1]:
            where += f" via {Path(frames[-1].filename).name}:{frames[-1].lineno}"
        return "uncaught", f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]} in {where}"
    return "read", ""
