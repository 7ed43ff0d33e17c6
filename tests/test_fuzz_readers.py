"""Property: a mutated real file (bytes flipped, cut, spliced; header fields and DICOM tags deleted, given the
wrong VR or absurd values) ends in a correct read or one ``RtsegError`` line, never another exception, a hang
or a file left behind. A small derandomized budget here; ``benchmarks/fuzz.py`` runs the long one."""
from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement

import fuzz_targets as ft

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the values we broke on purpose

BUDGET = {"nifti": 60, "npy": 60, "dicom_slice": 30, "dicom_series": 15, "rtstruct": 8}
TIME_LIMIT_S = 20.0


@pytest.fixture(scope="module")
def corpus() -> ft.Corpus:
    if not ft.DATA.is_dir():
        pytest.skip(f"real data not found at {ft.DATA} (../shared/data is absent)")
    return ft.load_corpus(n_series_slices=3)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def fuzz(reader: str, corpus: ft.Corpus, scratch: Path) -> None:
    @settings(max_examples=BUDGET[reader], derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data: st.DataObject) -> None:
        files = data.draw(ft.cases(reader, corpus)).build()
        assume(files is not None)
        outcome, detail = ft.classify(reader, files, scratch / reader, TIME_LIMIT_S)
        assert outcome in ("read", "refused"), f"{outcome}: {detail}"

    one()


@pytest.mark.parametrize("reader", ["nifti", "npy", "dicom_slice", "dicom_series"])
def test_fuzzed_inputs_are_read_or_refused_in_one_line(reader: str, corpus: ft.Corpus, scratch: Path) -> None:
    fuzz(reader, corpus, scratch)


def test_fuzzed_rtstruct_is_read_or_refused_in_one_line(corpus: ft.Corpus, scratch: Path) -> None:
    fuzz("rtstruct", corpus, scratch)


def _contour_data_not_numbers(base: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(base))
    item = ds.ROIContourSequence[0].ContourSequence[0]
    tag = pydicom.datadict.tag_for_keyword("ContourData")
    item._dict[tag] = RawDataElement(tag, "DS", 8, b"1\\2\\x\\3", 0, False, True)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


# Found by benchmarks/fuzz.py (seed 16): once uncaught, now refused in one line.
KNOWN_RTSTRUCT_CRASHES = {
    "ROIContourSequence stored as LO (OSError: No tag to read)": lambda b: ft.apply_tag_edits(b, [("vr", "ROIContourSequence", 0, "LO")]),
    "ContourData '1\\2\\x\\3' (ValueError: could not convert string to float)": _contour_data_not_numbers,
}


@pytest.mark.parametrize("case", sorted(KNOWN_RTSTRUCT_CRASHES))
def test_known_rtstruct_crashes_are_refused_in_one_line(case: str, corpus: ft.Corpus, scratch: Path) -> None:
    files = {"rtss.dcm": KNOWN_RTSTRUCT_CRASHES[case](corpus.rtstruct)}
    outcome, detail = ft.classify("rtstruct", files, scratch / "known", TIME_LIMIT_S)
    assert outcome == "refused", detail


def test_the_oracle_sees_an_uncaught_exception_and_a_hang(scratch: Path) -> None:
    """The check itself can fail: a reader that raises a bare ValueError, or does not return, is a finding."""
    def bad(path: Path) -> None:
        raise ValueError("boom")

    def slow(path: Path) -> None:
        import time

        time.sleep(5)

    ft.READ["bad"], ft.READ["slow"] = bad, slow
    try:
        assert ft.classify("bad", {"x": b""}, scratch / "o1", 5)[0] == "uncaught"
        assert ft.classify("slow", {"x": b""}, scratch / "o2", 0.2) == ("hang", "no answer after 0.2 s")
    finally:
        del ft.READ["bad"], ft.READ["slow"]
