"""``rtseg export``: a checkpoint's network as ONNX or TorchScript, with its inference metadata.

The exported graph maps a preprocessed network-grid image (N, C, D, H, W),
float32, to logits (N, n_classes, D, H, W); everything around it (canonical
orientation, target spacing, intensity normalization, sliding window,
argmax back on the input grid) is described by the metadata, which travels
embedded in the file (ONNX ``metadata_props["rtseg"]``; TorchScript extra file
``rtseg.json``) and as a side-car ``<out>.json``.

ONNX uses dynamic batch and spatial axes (torch.export with sizes declared
as multiples of the network's total stride, so the padding branch of the
model's forward is not needed); spatial sizes must then be multiples of
``input.spatial_multiple``. Should a model not export with dynamic axes, it
is exported for exactly one window (the patch size) and the metadata says
``dynamic_spatial: false``. TorchScript is traced (the models are not
scriptable); the trace is valid for every batch size and every spatial size
that is a multiple of the stride.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn as nn

from rtseg import __version__
from rtseg.errors import ConfigError, RtsegError
from rtseg.inference.bundle import InferenceBundle
from rtseg.inference.ensemble import is_ensemble, resolve_ensemble
from rtseg.inference.predictor import load_model
from rtseg.io.atomic import atomic_path
from rtseg.models.spec import model_stride

log = logging.getLogger("rtseg")

EXPORT_FORMATS = ("onnx", "torchscript")
METADATA_KEY = "rtseg"
TORCHSCRIPT_EXTRA = "rtseg.json"
PARITY_ATOL = 1e-3


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress prints and deprecation warnings are not news to the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def export_metadata(bundle: InferenceBundle, fmt: str, dynamic: bool, stride: int, checkpoint: str | Path) -> dict[str, Any]:
    in_ch = int(bundle.model_spec.get("kwargs", {}).get("in_channels", 1))
    spatial: list[Any] = ["D", "H", "W"] if dynamic else list(bundle.patch_size)
    return {
        "rtseg_version": __version__,
        "format": fmt,
        "checkpoint": Path(checkpoint).name,
        "input": {
            "name": "image",
            "dtype": "float32",
            "shape": ["N" if dynamic else 1, in_ch, *spatial],
            "dynamic_spatial": dynamic,
            "spatial_multiple": stride,
            "meaning": "preprocessed image on the network grid: RAS-canonical axes, preprocessing.target_spacing, "
            "preprocessing.normalization applied",
        },
        "output": {"name": "logits", "dtype": "float32", "shape": ["N" if dynamic else 1, bundle.n_classes, *spatial]},
        "sliding_window": {"roi": list(bundle.patch_size), "overlap": 0.5, "mode": "gaussian", "sigma_scale": 0.125},
        **bundle.to_dict(),
    }


def _example(bundle: InferenceBundle, stride: int, dynamic: bool) -> torch.Tensor:
    in_ch = int(bundle.model_spec.get("kwargs", {}).get("in_channels", 1))
    size = (2 * stride,) * 3 if dynamic else tuple(bundle.patch_size)
    return torch.randn(1, in_ch, *size, generator=torch.Generator().manual_seed(0))


def _export_onnx(model: nn.Module, x: torch.Tensor, tmp: Path, stride: int, dynamic: bool) -> None:
    kwargs: dict[str, Any] = {}
    if dynamic:
        from torch.export import Dim

        n = Dim("N", min=1, max=1024)
        dims = [Dim(f"{a}_over_{stride}", min=1, max=4096) for a in "DHW"]
        kwargs["dynamic_shapes"] = ({0: n, 2: stride * dims[0], 3: stride * dims[1], 4: stride * dims[2]},)
    with _quiet():
        torch.onnx.export(model, (x,), str(tmp), input_names=["image"], output_names=["logits"], dynamo=True,
                          external_data=False, verbose=False, **kwargs)


def _embed_onnx(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.producer_name = "rtseg"
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise RtsegError(f"{path}: no rtseg metadata in this ONNX file")


def read_torchscript_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    extra = {TORCHSCRIPT_EXTRA: ""}
    with _quiet():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[TORCHSCRIPT_EXTRA]:
        raise RtsegError(f"{path}: no rtseg metadata in this TorchScript file")
    return json.loads(extra[TORCHSCRIPT_EXTRA])


def _parity(model: nn.Module, path: Path, fmt: str, x: torch.Tensor) -> float:
    """Max |exported - PyTorch| on one random input (logged; tests hold it to PARITY_ATOL)."""
    with torch.inference_mode():
        ref = model(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = sess.run(None, {"image": x.numpy()})[0]
    else:
        with _quiet():
            ts = torch.jit.load(str(path), map_location="cpu")
        with torch.inference_mode():
            out = ts(x).numpy()
    return float(np.abs(out - ref).max())


def export_model(checkpoint: str | os.PathLike[str], out_path: str | os.PathLike[str],
                 format: Literal["onnx", "torchscript"] = "onnx", check: bool = True) -> Path:
    """Write the network to ``out_path`` and its metadata to ``<out_path>.json``; returns ``out_path``."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"export format {format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    target = Path(out_path)
    if target.is_dir():
        raise ConfigError(f"{target}: --out must be a file name, found a folder")
    if is_ensemble(checkpoint):
        members = ", ".join(str(m) for m in resolve_ensemble(checkpoint).members)
        raise ConfigError(f"{checkpoint}: an ensemble; export writes one network per file: export each member "
                          f"({members}) and average their softmax outputs (per-organ post-processing is in the ensemble file)")
    loaded = load_model(checkpoint, "cpu")
    model, bundle = loaded.model.eval(), loaded.bundle
    stride = model_stride(model)
    name = bundle.model_spec.get("name", "model")
    dynamic = True
    with atomic_path(target) as tmp:
        if format == "onnx":
            try:
                _export_onnx(model, _example(bundle, stride, True), tmp, stride, dynamic=True)
            except Exception as exc:  # fall back to one fixed window
                log.warning("%s: ONNX export with dynamic spatial axes failed (%s); exporting for patch size %s only",
                            name, type(exc).__name__, list(bundle.patch_size))
                dynamic = False
                try:
                    _export_onnx(model, _example(bundle, stride, False), tmp, stride, dynamic=False)
                except Exception as exc2:
                    first = str(exc2).strip().splitlines()[0][:200] if str(exc2).strip() else type(exc2).__name__
                    raise RtsegError(f"{checkpoint}: model {name} cannot be exported to ONNX ({first})") from None
            meta = export_metadata(bundle, format, dynamic, stride, checkpoint)
            _embed_onnx(tmp, meta)
        else:
            meta = export_metadata(bundle, format, True, stride, checkpoint)
            try:
                with _quiet(), torch.no_grad():
                    traced = torch.jit.trace(model, _example(bundle, stride, True), check_trace=False)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise RtsegError(f"{checkpoint}: model {name} cannot be traced to TorchScript ({first})") from None
            with _quiet():
                torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
        if check:
            x = _example(bundle, stride, dynamic)
            if dynamic:  # a size other than the one exported with, to exercise the dynamic axes
                x = torch.randn(2, x.shape[1], 3 * stride, 2 * stride, stride, generator=torch.Generator().manual_seed(1))
            diff = _parity(model, tmp, format, x)
            level = logging.INFO if diff <= PARITY_ATOL else logging.WARNING
            log.log(level, "%s export check: max |exported - PyTorch| = %.2e on input %s", format, diff, list(x.shape))
    side = target.with_name(target.name + ".json")
    with atomic_path(side) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return target
