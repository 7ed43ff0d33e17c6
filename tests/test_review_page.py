"""The review page: exact encodings, and in headless Chromium: loads offline, slider, toggles, colours, size."""
from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
from browser import open_page, require_browser
from review_cases import COLORS, NAMES, clean_case, training_stats
from scipy import ndimage

from rtseg.evaluation.surface import case_metrics
from rtseg.review.encode import HU_STEPS, block_mean, encode_ct, pack_deltas, quantise_hu, unpack_deltas
from rtseg.review.index import batch_index
from rtseg.review.page import review_page, write_page
from rtseg.review.qa import case_qa


def test_quantised_hu_error_is_at_most_half_a_step() -> None:
    hu = np.arange(-1024, 3072, dtype=np.int16).reshape(16, 16, 16)
    codes, lut = quantise_hu(hu)
    err = np.abs(lut[codes].astype(int) - hu.astype(int))
    lo = -1024
    for bound, step in HU_STEPS:
        seg = (hu >= lo) & (hu < bound)
        assert err[seg].max() <= step // 2
        lo = bound
    assert err[(hu >= -200) & (hu < 300)].max() == 1
    assert np.array_equal(unpack_deltas(*pack_deltas(codes)[:1], codes.shape, pack_deltas(codes)[1]), codes)
    labels = np.random.default_rng(1).integers(0, 6, (7, 5, 3)).astype(np.uint8)
    blob, n_planes = pack_deltas(labels)
    assert n_planes == 1 and np.array_equal(unpack_deltas(blob, labels.shape, 1), labels)


def test_block_mean_is_the_mean_of_each_block() -> None:
    a = np.random.default_rng(0).integers(-1000, 1000, (6, 4, 3)).astype(np.float32)
    b = block_mean(a, 2)
    assert b.shape == (3, 2, 3)
    assert b[1, 1, 2] == pytest.approx(a[2:4, 2:4, 2].mean())
    # factor 2.5: bin I holds the indices i with floor(i / 2.5) == I, as the page's JavaScript reads them
    c = block_mean(a, 2.5)
    assert c.shape == (3, 2, 3)
    for bx, xs in enumerate(([0, 1, 2], [3, 4], [5])):
        for by, ys in enumerate(([0, 1, 2], [3])):
            assert c[bx, by, 1] == pytest.approx(a[np.ix_(xs, ys, [1])].mean(), abs=1e-4)


@pytest.fixture(scope="module")
def case_page(tmp_path_factory: pytest.TempPathFactory):
    ct, lab = clean_case()
    pred = lab.array.copy()
    pred[ndimage.binary_dilation(lab.array == 3, iterations=1) & (lab.array == 0)] = 3  # a rectum 1 voxel too wide
    qa = case_qa(pred, ct.affine, NAMES, ct=ct.array, stats=training_stats(), case="p103")
    html = review_page(ct.array, pred, ct.affine, NAMES, COLORS, gt=lab.array, qa=qa, title="p103")
    path = write_page(html, tmp_path_factory.mktemp("review") / "p103.html")
    return path, ct, pred, lab.array


def _canvas_rgb(page, element_id: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator(f"#{element_id}").screenshot())).convert("RGB")).astype(int)


def _set_range(page, element_id: str, value: float) -> None:
    page.eval_on_selector(f"#{element_id}", "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value)


def _at_display(img: np.ndarray, disp_labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Screenshot pixels at the centres of the display pixels selected by ``mask``."""
    rows, cols = disp_labels.shape
    r, c = np.nonzero(mask)
    y = ((r + 0.5) * img.shape[0] / rows).astype(int)
    x = ((c + 0.5) * img.shape[1] / cols).astype(int)
    return img[y, x]


def test_page_loads_offline_and_shows_each_organ_in_its_colour(case_page) -> None:
    require_browser()
    path, ct, pred, gt = case_page
    with open_page(path) as (page, errors):
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        _set_range(page, "opacity", 1.0)
        k = int(page.eval_on_selector("#slider-axial", "e => Number(e.value)"))
        img = _canvas_rgb(page, "view-pred-axial")
        disp = pred[:, :, k].T[::-1, ::-1]  # radiological display of RAS+ data (phantoms are RAS+)
        seen = 0
        for c in range(1, len(NAMES)):
            inner = ndimage.binary_erosion(disp == c)
            if inner.sum() < 3:
                continue
            seen += 1
            px = _at_display(img, disp, inner)
            assert np.abs(px - np.array(COLORS[c - 1])).max() <= 2, NAMES[c]
        assert seen >= 3
        background = _at_display(img, disp, ndimage.binary_erosion(disp == 0, iterations=2))
        assert np.all(background[:, 0] == background[:, 1]) and np.all(background[:, 1] == background[:, 2])
        # toggling the bladder off: its pixels turn grey
        page.click("#toggle-2")
        off = _at_display(_canvas_rgb(page, "view-pred-axial"), disp, ndimage.binary_erosion(disp == 2))
        assert len(off) and np.all(off[:, 0] == off[:, 1]) and np.all(off[:, 1] == off[:, 2])
        page.screenshot(path=str(path.with_suffix(".png")), full_page=True)
        assert errors == []


def test_slider_window_presets_and_ground_truth(case_page) -> None:
    require_browser()
    path, ct, pred, gt = case_page
    with open_page(path) as (page, errors):
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        before = _canvas_rgb(page, "view-pred-axial")
        _set_range(page, "slider-axial", 3)
        assert page.inner_text("#pos-axial") == f"4 / {ct.shape[2]}"
        after = _canvas_rgb(page, "view-pred-axial")
        assert before.shape == after.shape and np.abs(before - after).mean() > 5
        page.click("#preset-bone")
        assert page.inner_text("#wl") == "L 400 W 1800"
        assert np.abs(_canvas_rgb(page, "view-pred-axial") - after).mean() > 5
        assert page.locator("#view-gt-axial").count() == 1
        # the metrics table shows rtseg.evaluation's Dice; the QA table lists flagged organs first
        rows = case_metrics(pred, gt, ct.spacing, NAMES)
        cells = page.locator("#metrics tr").all_inner_texts()[1:]
        for row, text in zip(rows, cells):
            assert text.split("\t")[0] == row["organ"] and text.split("\t")[1] == f"{row['dice']:.3f}"
        assert errors == []


def test_batch_index_links_cases_most_flagged_first(tmp_path) -> None:
    qas = [{"case": "a", "n_flags": 1, "flag_weight": 1, "flags": [{"text": "rectum in 2 pieces"}]},
           {"case": "b", "n_flags": 1, "flag_weight": 3, "flags": [{"text": "prostate missing"}]},
           {"case": "c", "n_flags": 0, "flag_weight": 0, "flags": []}]
    path = write_page(batch_index(qas, {"a": "a.html", "b": "b.html"}), tmp_path / "index.html")
    text = path.read_text()
    assert text.index('href="b.html"') < text.index('href="a.html"') < text.index(">c<")
    require_browser()
    with open_page(path) as (page, errors):
        assert page.locator("#cases a").all_inner_texts() == ["b", "a"]
        assert errors == []


def _large_ct() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A generated 512x512x160 CT (0.9 x 0.9 x 1.0 mm) with per-voxel noise as a scanner's (SD 12 HU)."""
    from rtseg.synthetic import generate_patient

    ct, lab = generate_patient(7, shape=(256, 256, 80), spacing=(1.8, 1.8, 2.0))
    big = ndimage.zoom(ct.array.astype(np.float32), 2, order=1)
    big += np.random.default_rng(0).normal(0, 12, big.shape).astype(np.float32)
    labels = ndimage.zoom(lab.array, 2, order=0)
    affine = ct.affine.copy()
    affine[:3, :3] /= 2
    return np.clip(np.rint(big), -1024, 3071).astype(np.int16), labels, affine


@pytest.mark.slow
def test_page_of_a_512x512x160_ct_stays_under_5_mb_and_renders(tmp_path) -> None:
    ct, labels, affine = _large_ct()
    assert ct.shape == (512, 512, 160)
    qa = case_qa(labels, affine, NAMES, ct=ct)
    text = review_page(ct, labels, affine, NAMES, COLORS, qa=qa, title="large")
    size = write_page(text, tmp_path / "large.html").stat().st_size
    path = tmp_path / "large.html"
    print(f"review page of a 512x512x160 CT: {size / 1e6:.2f} MB")
    assert size < 5_000_000
    assert re.search(r'"factor":(2\.5|3\.0)', text)  # the display grid the budget allows for this noise level
    require_browser()
    with open_page(path) as (page, errors):
        t0 = time.monotonic()
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        print(f"decoded and drawn in {time.monotonic() - t0:.1f} s")
        assert page.eval_on_selector("#view-pred-axial", "e => [e.width, e.height]") == [512, 512]
        assert errors == []


def test_clicking_a_view_moves_the_other_views_there(case_page) -> None:
    require_browser()
    path, ct, pred, gt = case_page
    with open_page(path) as (page, errors):
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        box = page.locator("#view-pred-axial").bounding_box()
        # display column c shows x index NX-1-c, display row r shows y index NY-1-r (radiological view)
        nx, ny = ct.shape[0], ct.shape[1]
        c, r = 10, 20
        page.mouse.click(box["x"] + (c + 0.5) * box["width"] / nx, box["y"] + (r + 0.5) * box["height"] / ny)
        assert page.inner_text("#pos-sagittal") == f"{nx - 1 - c + 1} / {nx}"
        assert page.inner_text("#pos-coronal") == f"{ny - 1 - r + 1} / {ny}"
        # a click on an organ's name in the QA table shows the organ's centre in all views
        page.click("#goto-2")
        centre = np.round(ndimage.center_of_mass(pred == 2)).astype(int)
        for view, axis in (("sagittal", 0), ("coronal", 1), ("axial", 2)):
            assert page.inner_text(f"#pos-{view}") == f"{centre[axis] + 1} / {ct.shape[axis]}"
        assert errors == []


def test_browser_decodes_the_ct_exactly_on_a_coarser_display_grid(tmp_path) -> None:
    """Grey levels drawn by the page equal the HU the encoder stored, windowed, at a non-integer factor."""
    require_browser()
    ct, lab = clean_case()
    budget = encode_ct(ct.array, 10**9)["bytes"] // 2
    rec = encode_ct(ct.array, budget)
    f = rec["factor"]
    assert f != int(f)  # a fractional factor exercises the bin arithmetic on both sides
    codes = unpack_deltas(__import__("base64").b64decode(rec["data"]), tuple(rec["shape"]), rec["planes"])
    hu = np.asarray(rec["lut"])[codes]
    path = write_page(review_page(ct.array, lab.array, ct.affine, NAMES, COLORS, ct_budget_bytes=budget), tmp_path / "c.html")
    with open_page(path) as (page, errors):
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        _set_range(page, "opacity", 0.0)
        k = int(page.eval_on_selector("#slider-axial", "e => Number(e.value)"))
        got = np.asarray(page.eval_on_selector(
            "#view-pred-axial", "e => Array.from(e.getContext('2d').getImageData(0, 0, e.width, e.height).data)"))
        got = got.reshape(ct.shape[1], ct.shape[0], 4)[..., 0]
        nx, ny = ct.shape[:2]
        i = np.floor(np.arange(nx) / f).astype(int)
        j = np.floor(np.arange(ny) / f).astype(int)
        full = hu[i][:, j, k]  # display-grid HU sampled back onto the full grid
        want = np.clip(np.floor((full - (40 - 200)) / 400 * 255 + 0.5), 0, 255).T[::-1, ::-1]
        assert np.abs(got - want).max() <= 1
        assert errors == []


def test_page_is_the_same_whatever_the_array_orientation() -> None:
    """Data stored superior-to-inferior with x and y swapped (as DICOM/OpenKBP arrive) give the identical page."""
    ct, lab = clean_case()
    perm = (1, 0, 2)
    aff = ct.affine[:, [1, 0, 2, 3]].copy()
    aff[:3, 3] += aff[:3, 2] * (ct.shape[2] - 1)
    aff[:3, 2] *= -1
    ct2 = np.ascontiguousarray(np.transpose(ct.array, perm)[:, :, ::-1])
    lab2 = np.ascontiguousarray(np.transpose(lab.array, perm)[:, :, ::-1])
    assert not np.array_equal(ct2.shape, ct.shape) or not np.array_equal(ct2, ct.array)
    a = review_page(ct.array, lab.array, ct.affine, NAMES, COLORS, title="t")
    b = review_page(ct2, lab2, aff, NAMES, COLORS, title="t")
    assert a == b


def _rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    aff = np.eye(4)
    aff[:3, :3] = [[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]
    return aff


def test_orientation_markers_follow_the_affine() -> None:
    """RAS+, LPS (DICOM's) and permuted storage all display the same way, so their markers agree; a scan rotated
    30 degrees about the patient's long axis shows two letters where its axes are oblique."""
    from rtseg.review.page import direction_letters, orientation_markers

    standard = {"axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
                "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
                "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"}}
    shape = (20, 16, 12)
    lps = np.diag([-0.8, -0.8, 2.5, 1.0])
    permuted = np.array([[0, 0, -3.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])  # i: superior, k: left
    for affine in (np.diag([1.0, 1.0, 1.0, 1.0]), lps, permuted):
        assert orientation_markers(affine, shape) == standard
    # x axis of the array towards the patient's right and 30 degrees anterior: cos 30 = 0.87 R, sin 30 = 0.5 A
    oblique = orientation_markers(_rotation_z(30), shape)
    assert oblique["axial"] == {"left": "RA", "right": "LP", "top": "AL", "bottom": "PR"}
    assert oblique["coronal"]["top"] == "S" and oblique["sagittal"]["left"] == "AL"
    assert orientation_markers(_rotation_z(10), shape)["axial"]["left"] == "R"  # sin 10 = 0.17: below the threshold
    assert direction_letters((0.0, 0.0, -2.0)) == "I" and direction_letters((-0.6, 0.0, 0.8)) == "SL"


def test_markers_sit_at_the_anatomy_they_name(case_page) -> None:
    """In the browser: the right femoral head is drawn on the side marked R, the bladder (anterior) towards A and
    the rectum (posterior) towards P; markers sit outside the image and catch no click."""
    require_browser()
    path, ct, pred, gt = case_page
    with open_page(path) as (page, errors):
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        _set_range(page, "opacity", 1.0)
        box = page.locator("#view-pred-axial").bounding_box()
        marks = {e: page.locator(f"#orient-pred-axial-{e}") for e in ("left", "right", "top", "bottom")}
        assert {e: m.inner_text() for e, m in marks.items()} == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
        centre = {e: (b["x"] + b["width"] / 2, b["y"] + b["height"] / 2) for e, b in
                  ((e, m.bounding_box()) for e, m in marks.items())}
        # each marker just outside the image (it covers no pixel), at the middle of its edge
        mid_x, mid_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        assert centre["left"][0] < box["x"] and centre["right"][0] > box["x"] + box["width"]
        assert centre["top"][1] < box["y"] and centre["bottom"][1] > box["y"] + box["height"]
        assert all(abs(centre[e][1] - mid_y) < 3 for e in ("left", "right"))
        assert all(abs(centre[e][0] - mid_x) < 3 for e in ("top", "bottom"))
        img = _canvas_rgb(page, "view-pred-axial")

        def screen_centroid(organ: int) -> tuple[float, float]:
            hit = np.all(np.abs(img - np.array(COLORS[organ - 1])) <= 2, axis=-1)
            rows, cols = np.nonzero(hit)
            assert len(rows) > 10, NAMES[organ]
            return box["x"] + cols.mean() * box["width"] / img.shape[1], box["y"] + rows.mean() * box["height"] / img.shape[0]

        right_head = screen_centroid(NAMES.index("femoral_head_right"))
        assert abs(right_head[0] - centre["left"][0]) < abs(right_head[0] - centre["right"][0])
        bladder, rectum = screen_centroid(NAMES.index("bladder")), screen_centroid(NAMES.index("rectum"))
        assert bladder[1] < rectum[1]  # anterior organ nearer the A marker at the top
        assert page.eval_on_selector("#orient-pred-axial-left", "e => getComputedStyle(e).pointerEvents") == "none"
        assert errors == []


def test_page_explains_weight_and_an_empty_tta_column() -> None:
    ct, lab = clean_case()
    qa = case_qa(lab.array, ct.affine, NAMES, ct=ct.array, stats=training_stats(), case="p103")
    page = review_page(ct.array, lab.array, ct.affine, NAMES, COLORS, qa=qa, title="p103")
    rows = re.findall(r'<tr class="[^"]*" data-label="\d+">(.*?)</tr>', page)
    assert len(rows) == len(NAMES) - 1
    for row in rows:  # no TTA, no probabilities: each empty cell says why
        assert row.count('<td class="why">TTA off</td>') == 1 and row.count('<td class="why">no probabilities</td>') == 2
    assert "What the columns mean" in page and "<dt>weight</dt>" in page and "missing 3" in page
    assert "<dt>TTA disagreement</dt>" in page
    # with TTA passes the column holds numbers and no "TTA off"
    qa_tta = case_qa(lab.array, ct.affine, NAMES, ct=ct.array, stats=training_stats(), tta_labels=[lab.array, lab.array],
                     case="p103")
    page_tta = review_page(ct.array, lab.array, ct.affine, NAMES, COLORS, qa=qa_tta, title="p103")
    assert '<td class="why">TTA off</td>' not in page_tta and "<td>0.000</td>" in page_tta
