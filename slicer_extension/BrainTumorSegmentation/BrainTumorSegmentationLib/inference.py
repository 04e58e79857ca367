"""Where the bundle is, and its slice-by-slice volume inference: no MRML, no Qt, no ``slicer`` import.

This layer runs wherever the model runs: inside Slicer, in a background ``PythonSlicer``
process (:mod:`BrainTumorSegmentationLib.worker`), or in a plain Python process. The slice
loop itself (:func:`predict_volume`, :func:`resolve_axis`, :class:`SegmentationCancelled`) is
the bundle's own ``scripts/volumes.py``, the loop ``brainseg segment`` and ``python -m
monai.bundle run`` use too; its names are loaded from the bundle on first access, so
importing this module needs neither the bundle nor numpy.

Arrays are in ``slicer.util.arrayFromVolume`` order: ``(k, j, i)`` for scalar volumes and
``(k, j, i, c)`` for vector (RGB/RGBA) volumes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [  # noqa: F822 - the slice loop names come from the bundle (__getattr__)
    "AXIS_NAMES",
    "SegmentationCancelled",
    "bundle_info",
    "bundle_module",
    "check_batch_size",
    "check_device",
    "find_bundle_dir",
    "is_cancelled",
    "load_predictor",
    "predict_volume",
    "reads_direction",
    "resolve_axis",
    "resolve_device",
    "slice_loop_geometry",
]

#: Names this module passes on from the bundle's ``scripts/volumes.py``.
VOLUME_NAMES = ("AXIS_NAMES", "SegmentationCancelled", "is_cancelled", "predict_volume", "resolve_axis")


def reads_direction(volumes: Any) -> bool:
    """Whether a bundle's slice loop (its ``scripts/volumes.py``) cuts a volume by its direction matrix, into its
    axial slices (bundles from 0.6.4); older ones cut along K."""
    import inspect

    return all("direction" in inspect.signature(f).parameters for f in (volumes.resolve_axis, volumes.predict_volume))


def slice_loop_geometry(volumes: Any, direction: Any = None, spacing: Any = None) -> dict[str, Any]:
    """The volume's geometry as keyword arguments of a bundle's slice loop (``volumes.predict_volume``), limited
    to those it takes: an older bundle is given nothing it does not know.

    ``direction`` is given only when :func:`reads_direction` (the bundle's ``resolve_axis`` takes it too, so the
    dict made without ``spacing`` fits ``resolve_axis`` as well); ``spacing`` when ``predict_volume`` takes it
    (bundles from 0.6.5 give a plane with rectangular pixels to the network with square ones; older ones
    segment it as it lies). None values are left out.

    Args:
        volumes: the bundle's ``scripts/volumes.py`` (:func:`bundle_module`).
        direction: the volume's 3x3 IJK-to-RAS direction matrix, one column per IJK axis.
        spacing: the volume's voxel spacing along I, J and K.

    Returns:
        ``{"direction": ..., "spacing": ...}``, each key only when given and taken.
    """
    import inspect

    taken = inspect.signature(volumes.predict_volume).parameters
    geometry: dict[str, Any] = {}
    if direction is not None and reads_direction(volumes):
        geometry["direction"] = direction
    if spacing is not None and "spacing" in taken:
        geometry["spacing"] = spacing
    return geometry


def __getattr__(name: str) -> Any:
    if name in VOLUME_NAMES:
        return getattr(bundle_module("volumes"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The bundle's folder beside the module in an installed extension (CMakeLists.txt installs it there).
INSTALLED_BUNDLE = "BrainTumorSegmentationBundle"


def find_bundle_dir(bundle_dir: str | os.PathLike | None = None) -> str:
    """The bundle folder to use.

    In order: ``bundle_dir`` if given; ``$BRAINSEG_BUNDLE``; the bundle an installed extension
    carries (``<qt-scripted-modules>/BrainTumorSegmentationBundle``, beside this package); the
    ``bundle/`` folder of the brainseg-monai checkout this extension lives in
    (``<repo>/slicer_extension/...``). Only the file system is looked at: nothing is imported, so
    opening the module keeps torch and MONAI out of Slicer's process.
    """
    if bundle_dir:
        return os.path.abspath(os.fspath(bundle_dir))
    env = os.environ.get("BRAINSEG_BUNDLE")
    if env:
        return os.path.abspath(env)
    here = Path(__file__).resolve()
    installed = here.parents[1] / INSTALLED_BUNDLE
    if (installed / "configs" / "inference.json").is_file():
        return str(installed)
    return str(here.parents[3] / "bundle")


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


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` when it is a positive whole number (slices per network call), for every way a run starts.

    Raises:
        ValueError: naming the value (2.7 was cut to 2 by one front end and refused by another).
    """
    # whole numbers only (int, numpy integers: what has __index__); 2.7 or "4" are refused, never cut
    if isinstance(batch_size, bool) or not hasattr(batch_size, "__index__") or batch_size.__index__() < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size.__index__()


def resolve_device(device: str | None = None, force_cpu: bool = False) -> str | None:
    """The torch device a run asks for, in one spelling: None for the bundle's own choice, else e.g. ``"cuda:1"``.

    Nothing is imported (a front end calls this in its own process, where torch must not be loaded):
    :func:`check_device` says whether this machine has the device.

    Args:
        device: ``None``, ``""`` or ``"auto"`` (the bundle's choice: CUDA when available, else the CPU),
            ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``, ``"mps"`` (Apple GPUs), or another torch device type.
        force_cpu: run on the CPU whatever ``device`` says (kept for scripts written before ``device``).

    Raises:
        ValueError: ``device`` is not spelled like a device.
    """
    if force_cpu:
        return "cpu"
    text = "" if device is None else str(device).strip().lower()
    if text in ("", "auto"):
        return None
    if not re.fullmatch(r"[a-z_]+(:[0-9]+)?", text):
        raise ValueError(f"{device!r} is not a device: use auto, cpu, cuda, cuda:<index> or mps")
    return "cpu" if text == "cpu:0" else text  # one CPU: a background run then hides the GPUs as for "cpu"


def check_device(device: str | None, bundle_dir: str | os.PathLike | None = None) -> None:
    """Raise a ``ValueError`` naming ``device`` when this PyTorch cannot run on it (imports torch).

    Without this check an unavailable device fails deep inside torch (``AssertionError: Torch not
    compiled with CUDA enabled``, ``RuntimeError: PyTorch is not linked with support for mps devices``),
    which says nothing about the device the user chose. ``None`` (the bundle's choice) always passes.
    Whether this machine has the device is the bundle's own check (``scripts/devices.py``, bundles
    from 0.6.7, the check ``brainseg`` and ``monai.bundle run`` make too); an older bundle's device is
    only checked for its spelling here.

    Args:
        device: as :func:`resolve_device` takes it.
        bundle_dir: the bundle that will run (default: :func:`find_bundle_dir`).
    """
    device = resolve_device(device)
    if device is None:
        return
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:<index> or mps") from None
    try:
        devices = bundle_module("devices", bundle_dir)
    except ImportError:  # an older bundle, or none: loading it names what is wrong
        return
    devices.check_device(
        device,
        "choose Auto or CPU instead",
        cuda_install="install a CUDA build of PyTorch (the PyTorch extension's PyTorch Utils)",
    )


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
        device: ``"auto"`` or None (the bundle's choice, CUDA when available), ``"cpu"``, ``"cuda"``,
            ``"cuda:1"``, ``"mps"``... (see :func:`resolve_device`).
        force_cpu: run on the CPU whatever ``device`` says.

    Raises:
        ImportError: the bundle folder holds no bundle code (``scripts/``; the message names it), or torch,
            MONAI or another package the bundle needs is not installed in this Python.
        FileNotFoundError: the weights are missing.
        ValueError: the weights do not fit the bundle's network, or ``device`` is unknown or not
            available on this machine (the message names it; see :func:`check_device`).
    """
    device = resolve_device(device, force_cpu)
    bundle = find_bundle_dir(bundle_dir)
    check_device(device, bundle)  # before the networks load: a clear message, not a failure inside torch
    BundlePredictor = bundle_module("predictor", bundle).BundlePredictor
    return BundlePredictor(
        bundle, ckpt_path=ckpt_path, device=device, config_files=[os.fspath(c) for c in config_files]
    )
