"""The device a run asks for, checked against this machine before any work: a clear message, not torch's own.

Without the check an unavailable device fails deep inside torch, after the inputs were read and
the networks built: ``AssertionError: Torch not compiled with CUDA enabled``, ``RuntimeError:
PyTorch is not linked with support for mps devices``, or, for ``cpu:5``, an error that blames the
weights file. None of them names the device the user chose.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["DEFAULT_DEVICE_ADVICE", "SUPPORTED_TYPES", "check_device"]

#: The device types a run may ask for: torch parses more (meta, xla...), which fail inside torch or do nothing.
SUPPORTED_TYPES = ("cpu", "cuda", "mps", "xpu")
#: What to do instead (``monai.bundle run``'s option), ending every message unless a front end gives its own words.
DEFAULT_DEVICE_ADVICE = "run with --device cpu instead"


def check_device(
    device: Any,
    advice: str = DEFAULT_DEVICE_ADVICE,
    what: str = "device",
    cuda_install: str = "install a CUDA build of PyTorch",
) -> torch.device | None:
    """``device`` as a ``torch.device`` when this PyTorch can run on it on this machine; None stays None.

    The CPU comes back as ``cpu`` whatever its spelling (``cpu:0``).

    Args:
        device: a ``torch.device`` or its spelling (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...);
            None (the run's own choice) passes unchanged.
        advice: what the user can do instead, ending each message (a front end names its own option).
        what: how the message names the value, e.g. ``"--device"`` or ``"device"``.
        cuda_install: how to get a CUDA build of PyTorch, said when this one has none.

    Raises:
        ValueError: ``device`` is not a device, or this machine cannot run on it (the message says
            why: a PyTorch built without CUDA, no GPU found, an index past the GPUs there are).
    """
    if device is None:
        return None
    try:
        parsed = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{what} {str(device)!r}: not a device (cpu, cuda, cuda:<index>, mps)") from None
    name = f"{what} {str(device)!r}"
    if parsed.type not in SUPPORTED_TYPES:
        raise ValueError(f"{name}: not a device the networks run on here; use cpu, cuda, cuda:<index> or mps")
    if parsed.type == "cpu":
        if parsed.index not in (None, 0):
            raise ValueError(f"{name}: the CPU is one device, cpu (or cpu:0); {advice}")
        return torch.device("cpu")  # one spelling: torch.load cannot map weights onto "cpu:0"
    elif parsed.type == "cuda":
        _check_cuda(parsed, name, advice, cuda_install)
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            why = (
                "this PyTorch was built without MPS (Apple GPUs, macOS only)"
                if not torch.backends.mps.is_built()
                else "macOS 12.3 or newer on a Mac with an Apple GPU is needed"
            )
            raise ValueError(f"{name} (Apple MPS) is not available: {why}; {advice}")
    else:  # another backend (xpu...): its own availability check, where torch has one
        available = getattr(getattr(torch, parsed.type, None), "is_available", None)
        if callable(available) and not available():
            raise ValueError(f"{name} is not available on this machine; {advice}")
    return parsed


def _check_cuda(device: torch.device, name: str, advice: str, cuda_install: str) -> None:
    if torch.version.cuda is None and torch.version.hip is None:
        raise ValueError(
            f"{name} (CUDA GPU) is not available: this PyTorch ({torch.__version__}) was built without CUDA; "
            f"{advice}, or {cuda_install}"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise ValueError(
            f"{name} (CUDA GPU) is not available: PyTorch finds no CUDA GPU{hidden} "
            f"(no GPU, or its driver is missing or too old); {advice}"
        )
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"{name} is not available: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; {advice}"
        )
