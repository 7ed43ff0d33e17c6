"""Typed, validated configuration in the original code base's YAML format (upper-case keys).

Every section forbids unknown keys so a typo fails before any work starts.
Keys the original code base did not have get defaults, so the original code base's files load unchanged.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rtseg.config.names import LOSSES, OPTIMIZERS, SCHEDULERS, check_name, model_names
from rtseg.labels import IGNORE_INDEX, default_class_names, default_colors

NormalizeName = Literal["none", "l2", "ct_window", "zscore", "zscore_dataset"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    NAME: str = "ResUnet_3D"
    BASE_FILTERS: int = Field(64, ge=1, le=512)
    CHANNEL_IN: int = Field(1, description="input channels; the datasets rtseg reads hold one CT channel, so 1")
    INIT_MODEL: Optional[str] = None
    ADV: bool = False
    DROPOUT: float = Field(0.2, ge=0.0, lt=1.0)
    MRF: bool = Field(False, description="append a trainable mean-field MRF layer after the logits")
    DEEP_SUPERVISION: bool = Field(
        False, description="also train on the decoder's lower scales (nnU-Net's weights 1, 1/2, 1/4, ... normalised); "
        "ResUnet_3D, Deeper_ResUnet_3D and ARPM_net; inference is unchanged"
    )

    _check_name = field_validator("NAME")(lambda v: check_name(v, model_names(), "model"))

    @field_validator("CHANNEL_IN")
    @classmethod
    def _one_channel(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"{v} channels requested but datasets here hold one CT channel; use 1")
        return v


class DatasetConfig(_Section):
    NAME: str = Field("prostateCT_vol", min_length=1, description="dataset layout, a name in the registry "
                      "rtseg.io.layouts.registry: prostateCT_vol (legacy_npy), nifti, msd, nnunet; checked when the cases are listed")
    PATH: str
    N_CLASSES: int = Field(..., ge=2, le=IGNORE_INDEX)
    TRAIN_SPLIT: str = "train"
    VAL_SPLIT: str = "val"
    TEST_SPLIT: str = "test"
    NORMALIZE: NormalizeName = "none"
    HU_WINDOW: tuple[float, float] = (-1000.0, 1000.0)
    COLOR_MAP: Optional[list[tuple[int, int, int]]] = None
    CLASS_NAMES: Optional[list[str]] = None
    PATCH_SIZE: Optional[tuple[int, int, int]] = None
    FG_OVERSAMPLE: float = Field(0.33, ge=0.0, le=1.0)
    FG_SAMPLING: Literal["case", "class"] = Field(
        "case", description="how an oversampled patch picks its organ: 'case' (a case, then one of its organs) or "
        "'class' (an organ uniformly, then a case contouring it: rare or partially contoured organs as often as the others)"
    )
    AUGMENT: bool = True
    AUGMENT_MIRROR: bool = Field(False, description="random anterior-posterior / inferior-superior mirroring (pairs with --tta)")
    SPACING: Optional[tuple[float, float, float]] = None
    SPLITS: Optional[str] = Field(
        None, description="JSON {split: [case ids]} selecting cases from a flat NIfTI folder PATH"
    )
    PLAN: Optional[str] = Field(
        None, description="'auto' plans from the training split at train start; or a plan.json from rtseg plan"
    )
    PARTIAL_LABELS: Optional[str] = Field(
        None, description="JSON mapping case id -> contoured class names/indices; other classes are unknown"
    )
    ABSENT_IS_UNKNOWN: bool = False
    FOLD: Optional[int] = Field(
        None, ge=0, description="cross-validation: train on the other folds of TRAIN_SPLIT, validate on this one "
        "(rtseg train --fold K); VAL_SPLIT then names the fold's held-out cases"
    )
    FOLDS: int = Field(5, ge=2, le=100, description="number of cross-validation folds (with FOLD)")

    @field_validator("NORMALIZE", mode="before")
    @classmethod
    def _seed_bool(cls, v: Any) -> Any:
        # The original code base's NORMALIZE is a boolean: True meant divide by the L2 norm.
        if isinstance(v, bool):
            return "l2" if v else "none"
        return v

    @field_validator("HU_WINDOW")
    @classmethod
    def _window_order(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] >= v[1]:
            raise ValueError(f"lower bound must be below upper bound, got {list(v)}")
        return v

    @field_validator("COLOR_MAP")
    @classmethod
    def _rgb(cls, v: Optional[list[tuple[int, int, int]]]) -> Optional[list[tuple[int, int, int]]]:
        if v is not None:
            for c in v:
                if any(not 0 <= x <= 255 for x in c):
                    raise ValueError(f"RGB values must be in 0..255, got {list(c)}")
        return v

    @field_validator("PATCH_SIZE")
    @classmethod
    def _patch(cls, v: Optional[tuple[int, int, int]]) -> Optional[tuple[int, int, int]]:
        if v is not None and any(s < 8 for s in v):
            raise ValueError(f"each patch dimension must be >= 8, got {list(v)}")
        return v

    @field_validator("SPACING")
    @classmethod
    def _spacing(cls, v: Optional[tuple[float, float, float]]) -> Optional[tuple[float, float, float]]:
        if v is not None and any(s <= 0 for s in v):
            raise ValueError(f"spacing must be positive, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _class_lists(self) -> "DatasetConfig":
        if self.FOLD is not None and self.FOLD >= self.FOLDS:
            raise ValueError(f"FOLD {self.FOLD} must be below FOLDS {self.FOLDS} (folds are 0..FOLDS-1)")
        if self.COLOR_MAP is not None and len(self.COLOR_MAP) != self.N_CLASSES - 1:
            raise ValueError(
                f"COLOR_MAP has {len(self.COLOR_MAP)} colours; expected N_CLASSES-1 = {self.N_CLASSES - 1} (one per organ)"
            )
        if self.CLASS_NAMES is not None:
            if len(self.CLASS_NAMES) != self.N_CLASSES:
                raise ValueError(
                    f"CLASS_NAMES has {len(self.CLASS_NAMES)} names; expected N_CLASSES = {self.N_CLASSES} (background first)"
                )
            if len(set(self.CLASS_NAMES)) != len(self.CLASS_NAMES):
                raise ValueError(f"CLASS_NAMES must be unique, got {self.CLASS_NAMES}")
        return self

    def class_names(self) -> list[str]:
        """Explicit names, else the original code base's pelvic names for 6 classes, else class_<i>."""
        return default_class_names(self.N_CLASSES, self.CLASS_NAMES)

    def colors(self) -> list[tuple[int, int, int]]:
        """RGB per organ (label 1..N-1)."""
        return default_colors(self.N_CLASSES, self.COLOR_MAP)


class _NamedWithArguments(_Section):
    """A registered name plus free keyword arguments (checked against the implementation's signature later)."""

    model_config = ConfigDict(extra="allow")

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(_NamedWithArguments):
    """Optimizer name plus its keyword arguments."""

    name: str = "adam"
    _check_name = field_validator("name")(lambda v: check_name(v, OPTIMIZERS, "optimizer"))


class SchedulerConfig(_NamedWithArguments):
    """LR schedule name, its keyword arguments, and an optional warm-up."""

    name: str = "constant_lr"
    warmup_iters: int = Field(0, ge=0)
    warmup_mode: Literal["linear", "constant"] = "linear"
    warmup_factor: float = Field(0.2, gt=0.0, le=1.0)
    _check_name = field_validator("name")(lambda v: check_name(v, SCHEDULERS, "LR scheduler"))


class LossConfig(_Section):
    name: str = "cross_entropy3d"
    reduction: Literal["mean", "sum"] = "mean"
    ignore_index: int = IGNORE_INDEX
    dice_weight: float = Field(1.0, ge=0.0)
    ce_weight: float = Field(1.0, ge=0.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    prior_correction: bool = Field(
        True, description="class-weighted losses: subtract log(weight) from the logits at inference and validation "
        "(logit adjustment), undoing the over-segmentation the weights train in; false keeps the weighted model's bias"
    )

    _check_name = field_validator("name")(lambda v: check_name(v, LOSSES, "loss"))

    @property
    def class_weighted(self) -> bool:
        """Whether the loss weighs classes by their inverse frequency on the training set."""
        return LOSSES[self.name]


class TrainingConfig(_Section):
    ITER_MAX: int = Field(1000, ge=1)
    WORKERS: int = Field(0, ge=0, le=128)
    BATCH_SIZE: int = Field(2, ge=1, le=1024)
    VAL_INTERVAL: int = Field(500, ge=1)
    PRINT_INTERVAL: int = Field(100, ge=1)
    OPTIM: OptimConfig = Field(default_factory=OptimConfig)
    LR_SCHEDULER: SchedulerConfig = Field(default_factory=SchedulerConfig)
    LOSS_FUNC: LossConfig = Field(default_factory=LossConfig)
    SEED: int = 0
    AMP: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU unless RTSEG_FORCE_GPU_PATH=1)")
    CHANNELS_LAST: Union[bool, Literal["always"]] = Field(
        True, description="channels-last 3D memory format: true on the GPU path (CPU: as AMP), 'always' on the CPU too "
        "(an 8-filter U-Net's CPU training step runs ~1.5x faster in it, a 16-filter one does not), false never"
    )
    COMPILE: bool = False
    SYNC_BN: bool = False
    VAL_OVERLAP: float = Field(0.5, ge=0.0, lt=1.0)
    RUNS_DIR: str = "runs"
    MEMORY_BUDGET_GIB: float = Field(4.0, gt=0.0, description="training-step memory the plan's patch size must fit")
    MAX_MINUTES: Optional[float] = Field(None, gt=0.0, description="stop training after this wall-clock budget")
    TIME_SCHEDULE: bool = Field(
        False, description="with MAX_MINUTES: the LR schedule follows the elapsed fraction of the budget where that is "
        "ahead of ITER_MAX, so a run stopped by its budget ends annealed"
    )
    NONFINITE: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/inf loss or gradient: stop with an error naming the batch, or skip the step (counted)"
    )

    @model_validator(mode="after")
    def _budget(self) -> "TrainingConfig":
        if self.TIME_SCHEDULE and self.MAX_MINUTES is None:
            raise ValueError("TIME_SCHEDULE: true needs MAX_MINUTES (the budget the LR schedule follows); set both or neither")
        return self


class AdversarialConfig(_Section):
    """ARPM-net adversarial training (used when MODEL.ADV is true)."""

    LAMBDA: float = Field(0.01, ge=0.0)
    OBJECTIVE: Literal["lsgan", "hinge"] = "lsgan"
    LABEL_SMOOTHING: float = Field(0.1, ge=0.0, lt=0.5)
    D_LR: float = Field(1e-4, gt=0.0)
    D_OPTIM: str = Field("adam", description="any TRAINING.OPTIM name; adam uses betas (0.5, 0.999), sgd momentum 0.9")
    D_STEPS: int = Field(1, ge=1, le=10)
    D_BASE_FILTERS: int = Field(16, ge=1, le=256)
    WARMUP_ITERS: int = Field(0, ge=0)

    _check_name = field_validator("D_OPTIM")(lambda v: check_name(v, OPTIMIZERS, "optimizer"))


class Config(_Section):
    JOB: Literal["seg"] = "seg"
    CUDA: bool = True
    PARALLEL: bool = False
    MODEL: ModelConfig = Field(default_factory=ModelConfig)
    DATASET: DatasetConfig
    TRAINING: TrainingConfig = Field(default_factory=TrainingConfig)
    ADVERSARIAL: AdversarialConfig = Field(default_factory=AdversarialConfig)

    @property
    def cuda_request(self) -> Optional[bool]:
        """CUDA as the user set it (in the YAML or with --set), None when they said nothing (the GPU if present)."""
        return self.CUDA if "CUDA" in self.model_fields_set else None

    @model_validator(mode="after")
    def _adversary_needs_full_labels(self) -> "Config":
        """ADV needs full labels, and the config says whether they are partial (before any data is read)."""
        d = self.DATASET
        if self.MODEL.ADV and (d.PARTIAL_LABELS or d.ABSENT_IS_UNKNOWN):
            key = "DATASET.PARTIAL_LABELS" if d.PARTIAL_LABELS else "DATASET.ABSENT_IS_UNKNOWN"
            raise ValueError(f"MODEL.ADV with partial labels ({key}): the discriminator would learn that uncontoured "
                             "organs look like background in the 'real' inputs; train without ADV or with fully labelled cases")
        return self
