"""The code the bundle's configs name: COCO datalists, COCO-specific transforms, box-supervision
losses, atomic checkpoint handlers, the input check and the tumor report.

The configs reach it through their ``bundle_scripts`` id, which puts the bundle's root on
``sys.path`` first, so the bundle runs from any working directory with only the packages its
``configs/metadata.json`` declares.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "coco",
    "components",
    "config_values",
    "csv_files",
    "devices",
    "distributed",
    "errors",
    "handlers",
    "inference_network",
    "inferers",
    "input_check",
    "io",
    "losses",
    "numpy_transforms",
    "slice_stack",
    "transforms",
    "tumor_crops",
    "tumor_free",
    "tumor_report",
]


def __getattr__(name: str) -> ModuleType:
    """Import a submodule on first use (``@bundle_scripts.coco``), so importing ``scripts`` costs nothing."""
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
