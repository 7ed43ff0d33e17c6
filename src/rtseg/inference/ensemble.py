"""Several checkpoints as one predictor: the mean of the members' probabilities, then per-organ post-processing.

An ensemble is described by one small JSON file (``ensemble.json``, written by ``rtseg cv`` into its CV
folder): member checkpoints (paths relative to the file), the post-processing chosen per organ and a
format version. ``rtseg predict`` and ``rtseg serve`` load it through ``load_predictor``, which also takes
one checkpoint or several. Members must predict the same class names. When they share preprocessing and
window size (the folds of one CV do), the softmax probabilities are averaged on the network grid and
brought back once; otherwise each member's probabilities come back to the input grid through its own
way back (``GridInfo.restore_probabilities``) and are averaged there. The mean is what nnU-Net ensembles.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from rtseg.errors import DataError
from rtseg.inference.bundle import InferenceBundle
from rtseg.inference.postprocess import postprocess_organs
from rtseg.inference.predictor import NetworkOptions, Prediction, PredictStats, Predictor, load_model
from rtseg.io.file_kind import EXPECTED, describe_folder, run_hint
from rtseg.io.jsonfile import read_json, write_json

ENSEMBLE_NAME = "ensemble.json"
ENSEMBLE_FORMAT = "rtseg-ensemble"
ENSEMBLE_VERSION = 1
CheckpointArg = Union[str, Path, Sequence[Union[str, Path]]]


@dataclass(frozen=True)
class OrganPostprocessing:
    """What ``rtseg cv`` chose for one organ: on only where it raised the cross-validation Dice."""

    largest_component: bool = False
    fill_holes: bool = False


@dataclass(frozen=True)
class EnsembleSpec:
    """Member checkpoints (absolute paths) and the post-processing per organ name."""

    members: tuple[Path, ...]
    postprocessing: dict[str, OrganPostprocessing] = field(default_factory=dict)
    source: str = ""


def write_ensemble(path: Path, members: Sequence[Path], postprocessing: dict[str, OrganPostprocessing],
                   extras: Optional[dict[str, Any]] = None) -> Path:
    """The ensemble file, atomically; member paths relative to its folder so the folder can move."""
    folder = path.parent.resolve()
    data = {
        "format": ENSEMBLE_FORMAT,
        "version": ENSEMBLE_VERSION,
        "members": [str(Path(m).resolve().relative_to(folder)) if Path(m).resolve().is_relative_to(folder)
                    else str(Path(m).resolve()) for m in members],
        "postprocessing": {organ: {"largest_component": p.largest_component, "fill_holes": p.fill_holes}
                           for organ, p in postprocessing.items()},
        **(extras or {}),
    }
    write_json(data, path)
    return path


def read_ensemble(path: Path) -> EnsembleSpec:
    data = read_json(path, "ensemble file")
    if not isinstance(data, dict) or data.get("format") != ENSEMBLE_FORMAT:
        raise DataError(f"{path}: not an rtseg ensemble file (expected \"format\": \"{ENSEMBLE_FORMAT}\", as rtseg cv writes)")
    if int(data.get("version", 0)) > ENSEMBLE_VERSION:
        raise DataError(f"{path}: ensemble format {data['version']} is newer than this rtseg reads ({ENSEMBLE_VERSION})")
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise DataError(f"{path}: 'members' must list at least one checkpoint")
    try:
        post = {str(o): OrganPostprocessing(bool(p.get("largest_component", False)), bool(p.get("fill_holes", False)))
                for o, p in (data.get("postprocessing") or {}).items()}
    except AttributeError:
        raise DataError(f"{path}: 'postprocessing' must map organ names to {{largest_component, fill_holes}}") from None
    return EnsembleSpec(tuple((path.parent / str(m)).resolve() for m in members), post, str(path))


def resolve_ensemble(checkpoint: CheckpointArg) -> EnsembleSpec:
    """One checkpoint, several, an ensemble file or a CV folder holding ``ensemble.json``."""
    paths = [Path(checkpoint)] if isinstance(checkpoint, (str, Path)) else [Path(c) for c in checkpoint]
    if not paths:
        raise DataError("--checkpoint: give one or more checkpoints, an ensemble file or a CV folder")
    if len(paths) == 1 and paths[0].is_dir():
        if not (paths[0] / ENSEMBLE_NAME).is_file():
            raise DataError(f"{paths[0]}: found {describe_folder(paths[0])}; {EXPECTED}, or the folder 'rtseg cv' wrote "
                            f"(with {ENSEMBLE_NAME}){run_hint(paths[0])}")
        return read_ensemble(paths[0] / ENSEMBLE_NAME)
    if len(paths) == 1 and paths[0].suffix == ".json":
        return read_ensemble(paths[0])
    for p in paths:
        if p.is_dir() or p.suffix == ".json":
            raise DataError(f"{p}: an ensemble file or folder cannot be combined with other checkpoints; give it alone")
    return EnsembleSpec(tuple(paths), {}, str(paths[0]) if len(paths) == 1 else f"{len(paths)} checkpoints")


def is_ensemble(checkpoint: CheckpointArg) -> bool:
    """Whether ``checkpoint`` names more than one network or per-organ post-processing (not one plain checkpoint)."""
    ensemble = resolve_ensemble(checkpoint)
    return len(ensemble.members) > 1 or bool(ensemble.postprocessing)


def _shared_grid(members: Sequence[Predictor]) -> bool:
    """Same preprocessing, window and stride: the same network grid and body box, so averaging can happen there."""
    first = members[0]
    return all(m.bundle.preprocessing.to_dict() == first.bundle.preprocessing.to_dict()
               and m.bundle.patch_size == first.bundle.patch_size and m.stride == first.stride for m in members)


class EnsemblePredictor:
    """The members' mean probabilities and their argmax, then the per-organ post-processing; ``Predictor``'s API."""

    def __init__(self, members: Sequence[Predictor], postprocessing: dict[str, OrganPostprocessing], source: str) -> None:
        names = members[0].bundle.class_names
        for m in members[1:]:
            if m.bundle.class_names != names:
                raise DataError(f"{m.loaded_model.source}: classes {list(m.bundle.class_names)} differ from "
                                f"{members[0].loaded_model.source}'s {list(names)}; ensemble members must predict the same classes")
        unknown = sorted(set(postprocessing) - set(names[1:]))
        if unknown:
            raise DataError(f"{source}: post-processing for unknown organ(s) {unknown}; the members predict {list(names[1:])}")
        self.members = list(members)
        self.source = source
        self.shared_grid = _shared_grid(self.members)
        self.largest = [names.index(o) for o, p in postprocessing.items() if p.largest_component]
        self.fill = [names.index(o) for o, p in postprocessing.items() if p.fill_holes]

    @property
    def bundle(self) -> InferenceBundle:
        """The first member's contract (class names and colours are every member's)."""
        return self.members[0].bundle

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def stats(self) -> PredictStats:
        return self.members[-1].stats

    def predict(self, volume: Any) -> Any:
        return volume.with_array(self.predict_labels(volume))

    @torch.inference_mode()
    def predict_labels(self, volume: Any) -> np.ndarray:
        """uint8 labels on ``volume``'s grid: argmax of the mean probabilities, post-processed per organ."""
        return self.predict_with_probabilities(volume)[0]

    @torch.inference_mode()
    def predict_with_probabilities(self, volume: Any, dtype: np.dtype | type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(post-processed labels, the members' mean probabilities (C, *volume.shape), before post-processing)."""
        if self.shared_grid:
            labels, probabilities = self._mean_on_network_grid(volume, dtype)
        else:
            probabilities = self._mean_on_input_grid(volume).astype(dtype, copy=False)
            labels = probabilities.argmax(0).astype(np.uint8)
        return postprocess_organs(labels, self.largest, self.fill), probabilities

    def predict_full(self, volume: Any, dtype: np.dtype | type = np.float32, pass_labels: bool = True) -> Prediction:
        """``Predictor.predict_full`` for the ensemble: post-processed labels and mean probabilities (no per-pass
        TTA labels: the members' disagreement is not one mirrored run's)."""
        labels, probabilities = self.predict_with_probabilities(volume, dtype)
        return Prediction(labels, probabilities, None, labels_are_argmax=not (self.largest or self.fill))

    def _mean_on_network_grid(self, volume: Any, dtype: np.dtype | type) -> tuple[np.ndarray, np.ndarray]:
        acc: Optional[torch.Tensor] = None
        for member in self.members:
            logits, info, box = member.network_logits(volume)
            if logits is None:  # only air: the same for every member (same grid, same threshold)
                return member.predict_with_probabilities(volume, dtype)
            prob = torch.softmax(logits.float(), dim=0)
            acc = prob if acc is None else acc.add_(prob)
        assert acc is not None
        log_mean = torch.log(acc / len(self.members) + 1e-8)  # as TTA does: argmax and resampling treat it like logits
        return info.restore_labels(log_mean, box), info.restore_probabilities(log_mean, box, dtype)

    def _mean_on_input_grid(self, volume: Any) -> np.ndarray:
        acc: Optional[np.ndarray] = None
        for member in self.members:
            prob = member.predict_with_probabilities(volume)[1]
            acc = prob if acc is None else np.add(acc, prob, out=acc)
        assert acc is not None
        return acc / len(self.members)


def load_predictor(checkpoint: CheckpointArg, device: torch.device | str = "cpu",
                   options: NetworkOptions = NetworkOptions(), progress: bool = False) -> Predictor | EnsemblePredictor:
    """A ``Predictor`` for one plain checkpoint; an ``EnsemblePredictor`` for several, an ensemble file or a CV folder.

    Every member runs as ``options`` say."""
    ensemble = resolve_ensemble(checkpoint)
    members = [Predictor.with_options(load_model(m, device), device, options, progress) for m in ensemble.members]
    if len(members) == 1 and not ensemble.postprocessing:
        return members[0]
    return EnsemblePredictor(members, ensemble.postprocessing, ensemble.source)
