"""docs/DESIGN.md's "where a change goes": a toy network and a toy QA flag, each added in one place."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import rtseg.review.qa as qa
from rtseg.config import config_from_dict
from rtseg.errors import ConfigError
from rtseg.models import register_model
from rtseg.models.registry import _REGISTRY
from rtseg.training.trainer import build_network


def test_a_toy_network_is_one_decorated_class() -> None:
    @register_model("ToyNet_3D")
    class ToyNet(nn.Module):
        """One 1x1x1 convolution: enough to show the config and the trainer accept a registered name."""

        def __init__(self, in_channels: int = 1, n_classes: int = 2, base_filters: int = 4, dropout: float = 0.0) -> None:
            super().__init__()
            self.conv = nn.Conv3d(in_channels, n_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    try:
        cfg = config_from_dict({"MODEL": {"NAME": "ToyNet_3D", "BASE_FILTERS": 4},
                                "DATASET": {"NAME": "nifti", "PATH": "x", "N_CLASSES": 3}})
        model, spec = build_network(cfg)
        assert spec["name"] == "ToyNet_3D" and model(torch.zeros(1, 1, 4, 4, 4)).shape == (1, 3, 4, 4, 4)
    finally:
        _REGISTRY.pop("ToyNet_3D", None)
    with pytest.raises(ConfigError, match="ToyNet_3D"):
        config_from_dict({"MODEL": {"NAME": "ToyNet_3D"}, "DATASET": {"NAME": "nifti", "PATH": "x", "N_CLASSES": 3}})


def test_a_toy_qa_flag_is_one_decorated_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qa, "ORGAN_RULES", list(qa.ORGAN_RULES))
    monkeypatch.setattr(qa, "WEIGHTS", dict(qa.WEIGHTS))

    @qa.organ_rule("tiny", 2)
    def _tiny(row, ref, rules):  # noqa: ANN001 - the OrganRule signature
        return [qa._flag("tiny", f"{row['organ']} under 1 ml", row["organ"])] if 0 < row["volume_ml"] < 1 else []

    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[5:7, 5:7, 5:7] = 1  # 8 voxels of 1 mm^3: 0.008 ml
    labels[8:18, 8:18, 8:18] = 2  # 1 ml: not tiny
    result = qa.case_qa(labels, np.eye(4), ["background", "a", "b"])
    tiny = [f for f in result["flags"] if f["rule"] == "tiny"]
    assert [f["organ"] for f in tiny] == ["a"] and tiny[0]["weight"] == 2
    with pytest.raises(ValueError, match="already registered"):
        qa.organ_rule("volume", 1)(_tiny)


def test_a_toy_metric_is_one_registration(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import rtseg.evaluation.surface as surface
    from rtseg.evaluation.report import format_table, summarize, write_long_csv

    monkeypatch.setattr(surface, "REGISTERED", dict(surface.REGISTERED))
    import rtseg.evaluation.report as report

    monkeypatch.setattr(report, "REGISTERED", surface.REGISTERED)
    surface.register_metric(surface.Metric(
        "volume_ratio", "Vpred/Vgt", lambda p, g, sp: float(p.sum()) / float(g.sum()),
        lambda n_pred, n_gt: 0.0 if n_pred == 0 else float("inf")))
    gt = np.zeros((12, 12, 12), dtype=np.uint8)
    gt[2:8, 2:8, 2:8] = 1  # 216 voxels
    pred = np.zeros_like(gt)
    pred[2:8, 2:8, 2:5] = 1  # 108 voxels: ratio 0.5
    rows = surface.case_metrics(pred, gt, (1.0, 1.0, 1.0), ["background", "a", "b"], case_id="c1")
    assert rows[0]["volume_ratio"] == pytest.approx(0.5)
    assert rows[1]["volume_ratio"] == 0.0  # organ b: both empty -> the metric's own convention
    summary = summarize(rows, 2.0)
    assert "Vpred/Vgt" in format_table(summary)
    csv_text = write_long_csv(rows, tmp_path / "long.csv").read_text()
    assert "volume_ratio" in csv_text
    with pytest.raises(ValueError, match="already defined"):
        surface.register_metric(surface.Metric("dice", "x", lambda p, g, sp: 0.0, lambda a, b: 0.0))
