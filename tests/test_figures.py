"""GIF / PNG montage / training-curve figures and the ``rtseg visualize`` command."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtseg.cli.main import main
from rtseg.labels import PELVIS_COLOR_MAP
from rtseg.errors import ConfigError, DataError
from rtseg.figures import (
    HEADER_PX,
    montage_slices,
    plot_training_curves,
    save_gif,
    save_montage,
    save_volume_figure,
    view_slice,
)
from rtseg.config.colors import parse_colors
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume, affine_from_spacing

COLORS = list(PELVIS_COLOR_MAP)
SHAPE = (12, 10, 7)  # RAS+: x towards the patient's right, y towards anterior, z towards superior


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ct = rng.integers(-200, 300, SHAPE).astype(np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 6:9, 2:5] = 2  # an anterior block on the patient's left
    labels[2, 1, 3] = 4  # left femoral head: low x
    pred = np.zeros(SHAPE, np.uint8)
    pred[2:5, 6:9, 3:6] = 2
    return ct, labels, pred


def _frames(path: Path) -> list[np.ndarray]:
    im = Image.open(path)
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB")))
    return out


def test_view_orientation_radiological() -> None:
    a = np.zeros(SHAPE)
    a[SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1] = 1  # patient's right, most anterior, most superior
    axial, coronal, sagittal = view_slice(a, 2, SHAPE[2] - 1), view_slice(a, 1, SHAPE[1] - 1), view_slice(a, 0, SHAPE[0] - 1)
    assert axial.shape == (SHAPE[1], SHAPE[0]) and axial[0, 0] == 1  # anterior up, right on the viewer's left
    assert coronal.shape == (SHAPE[2], SHAPE[0]) and coronal[0, 0] == 1  # superior up, right on the left
    assert sagittal.shape == (SHAPE[2], SHAPE[1]) and sagittal[0, 0] == 1  # superior up, anterior on the left


def test_gif_frames_width_and_exact_colours(tmp_path: Path) -> None:
    ct, labels, pred = _case()
    path = save_gif(ct, labels, pred, tmp_path / "a.gif", COLORS, alpha=1.0, zoom=2, titles=False, window=(-200, 300))
    frames = _frames(path)
    assert len(frames) == SHAPE[2]
    h, w, _ = frames[0].shape
    assert (h, w) == (SHAPE[1] * 2, 3 * SHAPE[0] * 2)
    # voxel (3, 7, 2) -> image row (H-1-7), col (W-1-3), zoomed x2; GT panel starts at panel width
    r, c, pw = (SHAPE[1] - 1 - 7) * 2, (SHAPE[0] - 1 - 3) * 2, SHAPE[0] * 2
    assert tuple(frames[2][r, pw + c]) == COLORS[1]  # bladder colour, solid at alpha 1
    assert tuple(frames[2][r, 2 * pw + c]) not in (COLORS[1],)  # prediction has no bladder on slice 2
    assert tuple(frames[3][r, 2 * pw + c]) == COLORS[1]
    # left femoral head voxel (2, 1, 3) is on the right half of the panel (radiological view)
    assert tuple(frames[3][(SHAPE[1] - 1 - 1) * 2, pw + (SHAPE[0] - 1 - 2) * 2]) == COLORS[3]
    # the CT panel is grey
    assert np.all(frames[2][:, :pw, 0] == frames[2][:, :pw, 1])


def test_gif_blend_two_panels_stride_and_labelled_only(tmp_path: Path) -> None:
    ct, labels, _ = _case()
    ct[:] = 0
    window = (-100.0, 100.0)  # 0 HU -> mid grey
    path = save_gif(ct, labels, None, tmp_path / "b.gif", COLORS, alpha=0.5, zoom=1, window=window, stride=2)
    frames = _frames(path)
    assert len(frames) == len(range(0, SHAPE[2], 2))
    assert frames[0].shape == (HEADER_PX + SHAPE[1], 2 * SHAPE[0], 3)
    # independent expectation: the palette's grey levels are linspace(0, 255, 256 // 6)
    levels = np.rint(np.linspace(0, 255, 256 // (len(COLORS) + 1)))
    grey = levels[np.rint(0.5 * (len(levels) - 1)).astype(int)]
    expect = tuple(int(round(0.5 * grey + 0.5 * c)) for c in COLORS[1])
    got = frames[1][HEADER_PX + SHAPE[1] - 1 - 7, SHAPE[0] + SHAPE[0] - 1 - 3]  # frame 1 = slice 2
    assert tuple(int(v) for v in got) == expect
    path = save_gif(ct, labels, None, tmp_path / "c.gif", COLORS, labelled_only=True)
    assert len(_frames(path)) == 3  # slices 2, 3, 4 contain labels


def test_montage_size_and_rows(tmp_path: Path) -> None:
    ct, labels, pred = _case()
    path = save_montage(ct, labels, pred, tmp_path / "m.png", COLORS, n_slices=2, zoom=3, spacing=(4.0, 4.0, 5.0))
    im = np.asarray(Image.open(path))
    assert im.shape == (HEADER_PX + 2 * SHAPE[1] * 3, 3 * SHAPE[0] * 3, 3)
    # 4 slices (2..5) contain labels in GT or prediction; 2 evenly spaced -> first and last
    assert montage_slices(labels, pred, 2, 2) == [2, 5]
    assert montage_slices(labels, pred, 2, 3) in ([2, 3, 5], [2, 4, 5])
    assert montage_slices(np.zeros_like(labels), None, 2, 3) == [0, 3, 6]
    path = save_montage(ct, labels, None, tmp_path / "n.png", COLORS, n_slices=10, titles=False, zoom=1, alpha=1.0)
    im = np.asarray(Image.open(path))
    assert im.shape == (3 * SHAPE[1], 2 * SHAPE[0], 3)  # without a prediction only GT slices 2..4 count
    assert tuple(im[SHAPE[1] - 1 - 7, SHAPE[0] + SHAPE[0] - 1 - 3]) == COLORS[1]  # row 0 = slice 2
    # anisotropic in-plane pixels are stretched to square millimetres (sagittal: y 4 mm, z 5 mm)
    path = save_montage(ct, labels, None, tmp_path / "s.png", COLORS, n_slices=1, axis=0, zoom=4, titles=False, spacing=(4.0, 4.0, 5.0))
    assert np.asarray(Image.open(path)).shape[:2] == (SHAPE[2] * 5, 2 * SHAPE[1] * 4)


def test_bad_inputs() -> None:
    ct, labels, pred = _case()
    with pytest.raises(DataError, match="shape"):
        save_gif(ct, labels[:-1], None, "x.gif", COLORS)
    with pytest.raises(DataError, match="colours"):
        save_gif(ct, labels, None, "x.gif", COLORS[:2])
    with pytest.raises(ConfigError, match="window"):
        save_gif(ct, labels, None, "x.gif", COLORS, window=(100, -100))
    with pytest.raises(ConfigError):
        parse_colors("[[1, 2]]")
    assert parse_colors("[[1, 2, 3], [4, 5, 6]]") == [(1, 2, 3), (4, 5, 6)]
    assert not Path("x.gif").exists()


def test_training_curves(tmp_path: Path) -> None:
    hist = {"loss": [(i, 1.0 / (i + 1)) for i in range(20)], "val_mean_dice": [(i, i / 20) for i in range(0, 20, 5)]}
    path = plot_training_curves(hist, tmp_path / "c.png")
    im = Image.open(path)
    assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    with pytest.raises(DataError):
        plot_training_curves({"loss": []}, tmp_path / "d.png")
    assert not (tmp_path / "d.png").exists()


def test_learning_rate_has_its_own_axis(tmp_path: Path) -> None:
    """The history training writes (train_loss, val_mean_dice, lr): the learning rate (3e-3 decaying) gets its own
    panel whose y range spans its values; on the Dice axis (0..1) it was a flat line at 0."""
    from rtseg.figures.curves import training_curves_figure

    lr = [(i, 3e-3 * (1 - i / 100) ** 0.9) for i in range(0, 100, 10)]
    hist = {"train_loss": [(i, 1.0 / (i + 1)) for i in range(0, 100, 10)],
            "val_mean_dice": [(i, 0.2 + i / 200) for i in range(0, 100, 25)], "lr": lr}
    fig = training_curves_figure(hist)
    by_label = {ax.get_ylabel(): ax for ax in fig.axes}
    assert set(by_label) == {"loss", "validation metric", "learning rate"}
    lines = {ax.get_ylabel(): [ln.get_label() for ln in ax.get_lines()] for ax in fig.axes}
    assert lines == {"loss": ["train_loss"], "validation metric": ["val_mean_dice"], "learning rate": ["lr"]}
    assert by_label["validation metric"].get_ylim() == (0.0, 1.0)
    low, high = by_label["learning rate"].get_ylim()
    values = [v for _, v in lr]
    assert low <= min(values) and max(values) <= high and high - low < 0.01  # scaled to the rate, not to 0..1
    drawn = by_label["learning rate"].get_lines()[0].get_ydata()
    np.testing.assert_allclose(drawn, values)
    path = plot_training_curves(hist, tmp_path / "curves.png")
    assert Image.open(path).size == (1500, 360)


def test_volume_wrapper_reorients_to_ras(tmp_path: Path) -> None:
    ct, labels, _ = _case()
    aff = affine_from_spacing((2.0, 2.0, 3.0))
    ras = save_volume_figure(Volume(ct, aff), Volume(labels, aff), None, tmp_path / "r.png", COLORS, titles=False, zoom=1)
    # the same patient stored with axis 0 running towards the patient's left (an LAS affine) looks identical
    flip = aff.copy()
    flip[0, 0] = -2.0
    flip[0, 3] = 2.0 * (SHAPE[0] - 1)
    lps = save_volume_figure(Volume(ct[::-1].copy(), flip), Volume(labels[::-1].copy(), flip), None, tmp_path / "l.png", COLORS, titles=False, zoom=1)
    assert np.array_equal(np.asarray(Image.open(ras)), np.asarray(Image.open(lps)))


def _write_case(d: Path, shift: float = 0.0, shape: tuple[int, int, int] = SHAPE) -> tuple[Path, Path]:
    ct, labels, _ = _case()
    aff = affine_from_spacing((2.0, 2.0, 3.0), (shift, 0.0, 0.0))
    ct, labels = ct[: shape[0], : shape[1], : shape[2]], labels[: shape[0], : shape[1], : shape[2]]
    d.mkdir(parents=True, exist_ok=True)
    return (write_nifti(Volume(ct, aff), d / "ct.nii.gz"), write_nifti(Volume(labels, aff), d / "labels.nii.gz", dtype=np.uint8))


def test_cli_visualize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ct, lab = _write_case(tmp_path / "a")
    out = tmp_path / "v.gif"
    assert main(["visualize", "--ct", str(ct), "--labels", str(lab), "--pred", str(lab), "--out", str(out), "--stride", "3"]) == 0
    frames = _frames(out)
    assert len(frames) == 3 and frames[0].shape[1] == 3 * SHAPE[0] * 3
    capsys.readouterr()
    out_png = tmp_path / "v.png"
    assert main(["visualize", "--ct", str(ct), "--labels", str(lab), "--out", str(out_png), "--colors", "[[1,2,3],[4,5,6],[7,8,9],[10,11,12]]"]) == 0
    assert Image.open(out_png).size[0] == 2 * SHAPE[0] * 3
    capsys.readouterr()


@pytest.mark.parametrize("shift,shape", [(5.0, SHAPE), (0.0, (SHAPE[0], SHAPE[1], SHAPE[2] - 1))])
def test_cli_refuses_mismatched_grids(tmp_path: Path, capsys: pytest.CaptureFixture[str], shift: float, shape) -> None:
    ct, _ = _write_case(tmp_path / "a")
    _, other = _write_case(tmp_path / "b", shift=shift, shape=shape)
    out = tmp_path / "v.gif"
    rc = main(["visualize", "--ct", str(ct), "--labels", str(other), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(ct) in err and str(other) in err and "grid" in err and "Traceback" not in err
    assert not out.exists()
