"""Which Python packages the module needs in Slicer's Python, and what is missing or too old.

Qt-free and import-free: versions come from package metadata (``importlib.metadata``), so
checking never imports torch or MONAI. :mod:`.installer` installs what is missing.

The list is what the background worker (``worker.py``) imports when it runs the bundle's
inference: the bundle's ``scripts/`` (predictor, transforms, components, tumor_free...) and
MONAI. Each package is one the bundle's ``configs/metadata.json`` lists (``monai_version``,
``numpy_version``, ``required_packages_version``), with a floor that the versions pinned in the
repository's ``constraints.txt`` meet and that Slicer 5.8's Python 3.9 can install. The
metadata's training-only packages are left out (``tensorboard``, ``tqdm``, ``fire``), and so is
``itk``: Slicer reads the images and hands the worker arrays. ``tests/test_slicer_install.py``
runs the worker in a fresh virtual environment holding only these packages (installed by
:mod:`.installer`) and what Slicer ships, so a package missing here fails there.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from dataclasses import dataclass

__all__ = ["REQUIREMENTS", "TORCH", "Requirement", "Status", "check", "needs_restart", "version_tuple"]


@dataclass(frozen=True)
class Requirement:
    """A distribution (pip name), the module it provides, and the lowest usable version."""

    distribution: str
    module: str
    minimum: str

    @property
    def spec(self) -> str:
        """The pip requirement string, e.g. ``monai>=1.4``."""
        return f"{self.distribution}>={self.minimum}"


@dataclass(frozen=True)
class Status:
    requirement: Requirement
    installed: str | None  #: installed version, None if absent

    @property
    def ok(self) -> bool:
        return self.installed is not None and version_tuple(self.installed) >= version_tuple(self.requirement.minimum)

    @property
    def imported(self) -> bool:
        """The module is already loaded in this process: a new version needs a restart."""
        return self.requirement.module in sys.modules

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.requirement.spec} (not installed)"
        if not self.ok:
            return f"{self.requirement.spec} (installed: {self.installed}, too old)"
        return f"{self.requirement.distribution} {self.installed}"


#: Installed through the PyTorch Utils module (it picks the CUDA/CPU build for this computer).
TORCH = Requirement("torch", "torch", "2.4")
#: Installed with pip: what the bundle's inference imports (its configs/metadata.json lists the versions it was
#: made with). The bundle carries its own code, so brainseg-monai itself is not needed in Slicer. Slicer ships
#: numpy, scipy and pillow: they are checked, and only installed by a Slicer built without them.
REQUIREMENTS = (
    Requirement("numpy", "numpy", "1.24"),
    Requirement("monai", "monai", "1.4"),
    Requirement("pytorch-ignite", "ignite", "0.4.11"),  # scripts/handlers.py (the weights loader)
    Requirement("pycocotools", "pycocotools", "2.0.7"),
    Requirement("pillow", "PIL", "10"),
    Requirement("nibabel", "nibabel", "5"),
    Requirement("scipy", "scipy", "1.10"),  # scripts/components.py, tumor_free.py (ndimage)
    # scripts/components.py: TumorProbabilityToMaskd's connected components (skimage.measure); 0.24 is the
    # last release for Python 3.9 (Slicer 5.8), so the floor stays below it
    Requirement("scikit-image", "skimage", "0.21"),
    Requirement("tqdm", "tqdm", "4.60"),  # scripts/handlers.py: the progress bar of a run on a terminal
)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cu126"`` -> ``(2, 13, 0)``; pre-release tails are ignored (``"1.5rc1"`` -> ``(1, 5)``)."""
    parts = []
    for piece in re.split(r"[.+-]", version.strip()):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.group() != piece:
            break
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check(requirements: tuple[Requirement, ...] | None = None) -> list[Status]:
    """Status of ``requirements`` (default: torch, then the pip requirements)."""
    reqs = requirements if requirements is not None else (TORCH, *REQUIREMENTS)
    return [Status(r, _installed(r.distribution)) for r in reqs]


def needs_restart(before: list[Status]) -> list[str]:
    """Distributions that were loaded in this process at an older version than now installed."""
    names = []
    for status in before:
        now = _installed(status.requirement.distribution)
        if status.imported and status.installed is not None and now is not None and now != status.installed:
            names.append(status.requirement.distribution)
    return names
