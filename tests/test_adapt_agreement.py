"""``rtseg adapt``'s agreement check: HD95 between the patient model's and the propagated organs against a shift
we know, the flag above the limit, and a flag text that names its organ wherever only texts are shown (the gate's
summary in the RTSTRUCT, the CLI line)."""
from __future__ import annotations

import numpy as np

from rtseg.adapt.methods import agreement
from rtseg.adapt.review import add_adapt_section
from rtseg.review.gate import notes_of

NAMES = ("background", "Bladder", "Rectum", "Prostate")
SPACING = (2.0, 2.0, 2.0)


def _boxes(rectum_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Bladder identical in both; Rectum (a 10^3-voxel box) moved by ``rectum_shift`` voxels along i in the second;
    Prostate only in the first."""
    a = np.zeros((40, 30, 30), np.uint8)
    a[5:15, 5:15, 5:15] = 1
    a[20:30, 5:15, 5:15] = 2
    a[5:10, 20:25, 20:25] = 3
    b = np.where(a == 3, 0, a).astype(np.uint8)
    b[b == 2] = 0
    b[20 + rectum_shift:30 + rectum_shift, 5:15, 5:15] = 2
    return a, b


def test_a_known_shift_is_measured_and_flagged_above_the_limit_with_the_organs_name() -> None:
    a, b = _boxes(rectum_shift=4)  # 4 voxels of 2 mm: the moved box's far faces are 8 mm from the other box
    rows = {r["organ"]: r for r in agreement(a, b, SPACING, NAMES, {1, 2, 3}, 6.0, ("finetuned", "propagated"))}
    assert rows["Bladder"]["hd95_mm"] == 0.0 and rows["Bladder"]["dice"] == 1.0 and not rows["Bladder"]["check"]
    rectum = rows["Rectum"]
    assert rectum["dice"] == 0.6  # 6 of 10 slabs shared
    assert rectum["hd95_mm"] == 8.0 and rectum["check"]  # the end faces 4 voxels apart set the 95th percentile
    assert rectum["text"] == "Rectum: methods disagree by 8 mm: check this organ"
    assert rows["Prostate"]["check"] and rows["Prostate"]["hd95_mm"] is None
    assert rows["Prostate"]["text"].startswith("Prostate: one method finds this organ, the other does not")
    assert rows["Rectum"]["methods"] == ["finetuned", "propagated"]


def test_below_the_limit_nothing_is_flagged() -> None:
    a, b = _boxes(rectum_shift=2)  # 4 mm
    rows = {r["organ"]: r for r in agreement(a, b, SPACING, NAMES, {1, 2}, 6.0, ("finetuned", "propagated"))}
    assert rows["Rectum"]["hd95_mm"] == 4.0 and not rows["Rectum"]["check"] and "text" not in rows["Rectum"]


def test_disagreement_flags_reach_the_qa_and_the_rtstructs_summary_by_organ() -> None:
    a, b = _boxes(rectum_shift=4)
    rows = agreement(a, b, SPACING, NAMES, {1, 2}, 6.0, ("finetuned", "propagated"))
    qa = {"flags": [], "organs": [{"organ": "Bladder"}, {"organ": "Rectum"}]}
    qa = add_adapt_section(qa, {"method": "fused", "agreement": rows, "problems": []})
    assert qa["n_flags"] == 1 and qa["flags"][0]["organ"] == "Rectum" and qa["flags"][0]["rule"] == "methods_disagree"
    assert qa["organs"][1]["flags"] == qa["flags"] and "flags" not in qa["organs"][0]
    notes = notes_of(qa["flags"], "review")
    assert "Rectum: methods disagree by 8 mm" in notes.summary
