"""The fine-tuning config written beside an exported dataset: start from the current model, keep what makes it a drop-in.

``MODEL.INIT_MODEL`` is the current checkpoint; the network (name, width, dropout, MRF, deep supervision),
class names and colours, and the grid (``SPACING``, ``PATCH_SIZE``, ``NORMALIZE``, ``HU_WINDOW`` and, where the
checkpoint holds one, its plan with the dataset intensity statistics) are copied from it as explicit keys,
so the fine-tuned model contours on the same grid with the same normalization and ``rtseg serve promote``
can swap it in. A model that works on each input's own grid (no target spacing) is tuned on the data's
common spacing, which the new model then records. The learning rate is a tenth of a from-scratch run's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rtseg.data.plan import plan_in, save_plan
from rtseg.errors import DataError
from rtseg.inference.bundle import load_bundle
from rtseg.io.atomic import atomic_path

CONFIG_NAME = "rtseg_finetune.yml"
PLAN_NAME = "init_model_plan.json"


def _list(v: Any) -> str:
    return "[" + ", ".join(repr(float(x)) if isinstance(x, float) else str(x) for x in v) + "]"


def write_finetune_config(checkpoint: str | Path, dataset: str | Path, dataset_json: str | Path, class_names: list[str],
                          iterations: int = 2000) -> Path:
    """``DATASET/rtseg_finetune.yml``; the exported organs must be the checkpoint's, in its label order."""
    ckpt = Path(checkpoint).resolve()
    bundle, _, _ = load_bundle(ckpt)
    if list(bundle.class_names) != list(class_names):
        raise DataError(f"{ckpt}: the model's classes {list(bundle.class_names)} differ from the exported "
                        f"{list(class_names)}; export with the model's classes (--init-model sets them)")
    root = Path(dataset).resolve()
    spec, pre = bundle.model_spec, bundle.preprocessing
    kw = spec["kwargs"]
    norm = pre.normalization
    plan = plan_in(bundle.plan, str(ckpt))
    lines = [f"# Written by 'rtseg audit export-dataset --init-model': fine-tunes {ckpt.name} on the approved cases of",
             f"# {root}, keeping its network, classes, grid and normalization (a drop-in for 'rtseg serve promote').",
             "JOB: seg", "CUDA: true", "MODEL:", f"  NAME: {spec['name']}", f"  BASE_FILTERS: {kw['base_filters']}",
             f"  CHANNEL_IN: {kw['in_channels']}", f"  DROPOUT: {kw['dropout']}", f"  MRF: {str(bool(spec.get('mrf'))).lower()}",
             f"  DEEP_SUPERVISION: {str(bool(kw.get('deep_supervision'))).lower()}", f"  INIT_MODEL: {str(ckpt)!r}",
             "DATASET:", "  NAME: nifti", f"  PATH: {str(root)!r}", f"  SPLITS: {str(Path(dataset_json).resolve())!r}",
             f"  PARTIAL_LABELS: {str(Path(dataset_json).resolve())!r}", f"  N_CLASSES: {bundle.n_classes}",
             f"  CLASS_NAMES: [{', '.join(repr(c) for c in bundle.class_names)}]",
             f"  COLOR_MAP: [{', '.join(_list(c) for c in bundle.colors)}]", f"  NORMALIZE: {norm.mode}",
             f"  HU_WINDOW: {_list(norm.window)}", f"  PATCH_SIZE: {_list(bundle.patch_size)}", "  FG_SAMPLING: class"]
    if pre.target_spacing is not None:
        lines.append(f"  SPACING: {_list(pre.target_spacing)}")
    if plan is not None:
        lines.append(f"  PLAN: {str(save_plan(plan, root / PLAN_NAME))!r}")
    elif norm.mode == "zscore_dataset":
        raise DataError(f"{ckpt}: zscore_dataset normalization without a stored plan; its statistics cannot be kept")
    lines += ["TRAINING:", f"  ITER_MAX: {int(iterations)}", "  BATCH_SIZE: 2", f"  VAL_INTERVAL: {max(1, iterations // 4)}",
              f"  PRINT_INTERVAL: {max(1, iterations // 20)}", "  OPTIM:", "    name: adamw", "    lr: 0.0003",
              "    weight_decay: 0.0001", "  LR_SCHEDULER:", "    name: poly_lr", "    warmup_iters: 0",
              "  LOSS_FUNC:", "    name: dice_ce"]
    target = root / CONFIG_NAME
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target
