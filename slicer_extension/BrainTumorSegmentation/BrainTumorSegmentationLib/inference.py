"""Volume inference on plain numpy arrays: no MRML, no Qt, no ``slicer`` import.

This layer runs wherever the model runs: inside Slicer, in a background ``PythonSlicer``
process (:mod:`BrainTumorSegmentationLib.worker`), or in a plain Python process. It cuts a
volume array into 2D slices along one IJK axis, hands them to a predictor a batch at a
time (checking for cancellation between batches) and puts each slice's mask back in its
place.

Arrays are in ``slicer.util.arrayFromVolume`` order: ``(k, j, i)`` for scalar volumes and
``(k, j, i, c)`` for vector (RGB/RGBA) volumes. Each 2D slice is given to the predictor in
numpy ``(row, column)`` order exactly as it lies in the array, so slice ``k`` of a volume
gets the same pixels as ``BundlePredictor.predict_array(array[k])``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "AXIS_NAMES",
    "Predictor",
    "SegmentationCancelled",
    "bundle_info",
    "find_bundle_dir",
    "is_cancelled",
    "load_predictor",
    "predict_volume",
    "resolve_axis",
]

#: IJK axis index -> name. ``axis=2`` (K) slices a volume the way it was acquired.
AXIS_NAMES = {0: "I", 1: "J", 2: "K"}

CancelSpec = Callable[[], bool] | threading.Event | None
ProgressCallback = Callable[[float], Any] | None


class SegmentationCancelled(RuntimeError):
    """Raised when the ``cancel`` callable/event fires; nothing was written to the scene."""


class Predictor(Protocol):
    """What :func:`predict_volume` needs from a predictor (``BundlePredictor`` provides it).

    ``predict_arrays`` takes 2D images as ``(H, W)`` or ``(H, W, C)`` arrays (C = 3 or 4: RGB(A),
    turned to grey by the predictor's own transforms) and returns, per image, an ``(H, W)`` 0/1
    mask, or ``(mask, probability)`` with ``with_probability=True``.
    """

    def predict_arrays(
        self, images: Sequence[np.ndarray], with_probability: bool = False, batch_size: int = 8
    ) -> list[Any]: ...


def is_cancelled(cancel: CancelSpec) -> bool:
    """True if ``cancel`` (a ``threading.Event``-like object or a callable returning bool) says stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    if callable(cancel):
        return bool(cancel())
    raise TypeError(f"cancel must be a callable or a threading.Event, got {type(cancel).__name__}")


def _check_cancel(cancel: CancelSpec) -> None:
    if is_cancelled(cancel):
        raise SegmentationCancelled("segmentation cancelled; nothing was changed")


def resolve_axis(shape_kji: Sequence[int], axis: int | str | None = None) -> int:
    """The IJK axis to slice along: 0 (I), 1 (J) or 2 (K).

    ``None`` picks the axis of size 1 for a single-slice image (a 2D image is one slice,
    whichever axis is flat) and K otherwise. Names ``"I"``, ``"J"``, ``"K"`` are accepted.

    Raises:
        ValueError: ``axis`` is not one of those.
    """
    if axis is None:
        k, j, i = (int(s) for s in shape_kji[:3])
        for ijk_axis, size in ((2, k), (1, j), (0, i)):
            if size == 1:
                return ijk_axis
        return 2
    if isinstance(axis, str):
        names = {v: k for k, v in AXIS_NAMES.items()}
        if axis.upper() not in names:
            raise ValueError(f"axis must be 0, 1, 2 or 'I', 'J', 'K', got {axis!r}")
        return names[axis.upper()]
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or int(axis) not in AXIS_NAMES:
        raise ValueError(f"axis must be 0 (I), 1 (J) or 2 (K, slices), got {axis!r}")
    return int(axis)


def predict_volume(
    array: np.ndarray,
    predictor: Predictor,
    axis: int | str | None = None,
    batch_size: int = 8,
    with_probability: bool = False,
    progress: ProgressCallback = None,
    cancel: CancelSpec = None,
    slice_reports: list | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Segment a volume array slice by slice.

    Args:
        array: ``(k, j, i)`` scalar or ``(k, j, i, c)`` vector voxels (c = 1, 3 or 4).
        predictor: a ``BundlePredictor`` or any object with its ``predict_arrays``.
        axis: IJK axis to slice along (see :func:`resolve_axis`).
        batch_size: slices per predictor call; ``cancel`` is checked between calls.
        with_probability: also return the tumor probability.
        progress: called with the fraction done (0.0 first, 1.0 last).
        cancel: callable or ``threading.Event``; when it fires :class:`SegmentationCancelled` is raised.
        slice_reports: a list to fill with one ``{"index", "tumor_found", "tumor_score",
            "input_unusual"}`` per slice; the predictor must take ``details=True`` (a
            ``BundlePredictor`` does).

    Returns:
        ``(mask, probability)``: ``(k, j, i)`` uint8 0/1 and float32 (``None`` without
        ``with_probability``).

    Raises:
        ValueError: bad array shape, axis or batch size, or the predictor's answer does not fit.
        SegmentationCancelled: ``cancel`` fired.
    """
    arr = np.asarray(array)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"expected a (k, j, i) or (k, j, i, 3|4) volume array, got shape {arr.shape}")
    if min(arr.shape[:3]) < 1:
        raise ValueError(f"the volume is empty (shape {arr.shape})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ijk_axis = resolve_axis(arr.shape, axis)
    np_axis = 2 - ijk_axis  # numpy order is (k, j, i)
    n = arr.shape[np_axis]
    mask = np.zeros(arr.shape[:3], dtype=np.uint8)
    prob = np.zeros(arr.shape[:3], dtype=np.float32) if with_probability else None
    _report(progress, 0.0)
    for start in range(0, n, int(batch_size)):
        _check_cancel(cancel)
        indices = range(start, min(n, start + int(batch_size)))
        images = [np.take(arr, index, axis=np_axis) for index in indices]
        if slice_reports is None:
            results = predictor.predict_arrays(images, with_probability=with_probability, batch_size=int(batch_size))
        else:
            results = predictor.predict_arrays(images, batch_size=int(batch_size), details=True)
        if len(results) != len(images):
            raise ValueError(f"the predictor returned {len(results)} results for {len(images)} slices")
        for index, image, result in zip(indices, images, results):
            if slice_reports is not None:
                slice_reports.append(
                    {
                        "index": index,
                        "tumor_found": bool(result.tumor_found),
                        "tumor_score": float(result.tumor_score),
                        "input_unusual": bool(result.input_unusual),
                    }
                )
                result = (result.mask, result.probability) if with_probability else result.mask
            slice_mask, slice_prob = result if with_probability else (result, None)
            where = _slice_index(np_axis, index)
            mask[where] = _fit(slice_mask, image.shape[:2], "mask", index) != 0
            if prob is not None:
                prob[where] = _fit(slice_prob, image.shape[:2], "probability", index)
        _report(progress, (indices[-1] + 1) / n)
    _check_cancel(cancel)
    return mask, prob


def _slice_index(np_axis: int, index: int) -> tuple:
    where: list[Any] = [slice(None)] * 3
    where[np_axis] = index
    return tuple(where)


def _fit(result: Any, shape: tuple[int, ...], what: str, index: int) -> np.ndarray:
    out = np.asarray(result)
    if out.shape != tuple(shape):
        raise ValueError(f"the predictor's {what} for slice {index} has shape {out.shape}, expected {tuple(shape)}")
    return out


def _report(progress: ProgressCallback, fraction: float) -> None:
    if progress is not None:
        progress(float(fraction))


def find_bundle_dir(bundle_dir: str | os.PathLike | None = None) -> str:
    """The bundle folder to use.

    In order: ``bundle_dir`` if given; ``$BRAINSEG_BUNDLE``; the ``bundle/`` folder of the
    brainseg-monai checkout this extension lives in (``<repo>/slicer_extension/...``);
    ``brainseg_monai.bundle_code.default_bundle_dir()``.
    """
    if bundle_dir:
        return os.path.abspath(os.fspath(bundle_dir))
    env = os.environ.get("BRAINSEG_BUNDLE")
    if env:
        return os.path.abspath(env)
    repo_bundle = Path(__file__).resolve().parents[3] / "bundle"
    if (repo_bundle / "configs" / "inference.json").is_file():
        return str(repo_bundle)
    try:
        from brainseg_monai.bundle_code import default_bundle_dir
    except ImportError:
        return str(repo_bundle)
    return default_bundle_dir()


def bundle_info(bundle_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Name, version and weights of a bundle, read from its files (no torch needed).

    Returns:
        ``{"path", "name", "version", "is_bundle", "weights", "has_weights", "label"}`` where
        ``label`` is a one-line description for a status bar.
    """
    path = find_bundle_dir(bundle_dir)
    config = os.path.join(path, "configs", "inference.json")
    meta_file = os.path.join(path, "configs", "metadata.json")
    weights = os.path.join(path, "models", "model.pt")
    meta: dict[str, Any] = {}
    if os.path.isfile(meta_file):
        try:
            with open(meta_file, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = {}
    info = {
        "path": path,
        "name": str(meta.get("name", os.path.basename(path.rstrip("/\\")) or path)),
        "version": str(meta.get("version", "")),
        "is_bundle": os.path.isfile(config),
        "weights": weights,
        "has_weights": os.path.isfile(weights),
    }
    if not info["is_bundle"]:
        info["label"] = f"{path}: not a MONAI bundle (no configs/inference.json)"
    elif not info["has_weights"]:
        info["label"] = f"{_title(info)}: no trained weights at models/model.pt"
    else:
        info["label"] = _title(info)
    return info


def bundle_module(name: str, bundle_dir: str | os.PathLike | None = None):
    """A module of the bundle's own code (``<bundle>/scripts/<name>.py``), e.g. ``"io"`` or ``"predictor"``.

    The bundle is self-contained: Slicer needs torch and the packages the bundle's metadata
    lists, not brainseg-monai. Its code is the one home of what the Lib shares with the bundle
    (the predictor, the atomic file writer).

    Raises:
        ImportError: the folder holds no bundle code, or a package it needs is missing.
    """
    import importlib

    bundle = find_bundle_dir(bundle_dir)
    if not os.path.isfile(os.path.join(bundle, "scripts", "__init__.py")):
        raise ImportError(f"{bundle}: no bundle code (scripts/); is this a brainseg-monai bundle?")
    if bundle not in sys.path:
        sys.path.insert(0, bundle)
    return importlib.import_module(f"scripts.{name}")


def _title(info: dict[str, Any]) -> str:
    return f"{info['name']} {info['version']}".strip()


def load_predictor(
    bundle_dir: str | os.PathLike | None = None,
    ckpt_path: str | os.PathLike | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    device: str | None = None,
    force_cpu: bool = False,
):
    """Build a ``scripts.predictor.BundlePredictor`` (imports torch and MONAI on first use).

    Args:
        bundle_dir: the bundle (default: :func:`find_bundle_dir`).
        ckpt_path: weights (default: the bundle's ``models/model.pt``).
        config_files: JSON files layered on the bundle's ``inference.json``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (default: the bundle's choice, CUDA when available).
        force_cpu: run on the CPU whatever ``device`` says.

    Raises:
        ImportError: brainseg-monai (or torch/MONAI) is not installed in this Python.
        FileNotFoundError: the bundle or its weights are missing.
        ValueError: the weights do not fit the bundle's network.
    """
    bundle = find_bundle_dir(bundle_dir)
    BundlePredictor = bundle_module("predictor", bundle).BundlePredictor
    return BundlePredictor(
        bundle,
        ckpt_path=ckpt_path,
        device="cpu" if force_cpu else device,
        config_files=[os.fspath(c) for c in config_files],
    )
