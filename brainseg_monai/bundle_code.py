"""The bundle this application runs, and the bundle's own code.

The bundle is the model: its configs and the code they name live in ``bundle/`` (Model Zoo
layout, the code in ``bundle/scripts``). This application imports that code as the bundle's
configs do, as the ``scripts`` package from the bundle's root, so there is one copy of it.
Imports nothing heavy: ``brainseg --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["default_bundle_dir", "use_bundle_scripts"]


def default_bundle_dir() -> str:
    """The bundle shipped with this checkout (``<repo>/bundle``), or ``$BRAINSEG_BUNDLE``."""
    env = os.environ.get("BRAINSEG_BUNDLE")
    if env:
        return env
    return str(Path(__file__).resolve().parent.parent / "bundle")


def use_bundle_scripts(bundle_dir: str | os.PathLike | None = None) -> ModuleType:
    """Make the bundle's ``scripts`` package importable (its root first on ``sys.path``) and import it.

    The bundle's configs do the same through their ``bundle_scripts`` id. Once imported,
    ``scripts`` stays the one loaded first in this process (Python caches modules by name).

    Raises:
        ModuleNotFoundError: the bundle has no ``scripts`` package.
    """
    root = os.path.abspath(os.fspath(bundle_dir or default_bundle_dir()))
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("scripts")
