"""Which Python packages the module needs in Slicer's Python, and what is missing or too old.

Qt-free and import-free: versions come from package metadata (``importlib.metadata``), so
checking never imports torch or MONAI. The Slicer module shows the result in a confirmation
dialog and installs with PyTorch Utils (torch) and ``slicer.util.pip_install`` (the rest).
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PACKAGE",
    "REQUIREMENTS",
    "TORCH",
    "Requirement",
    "Status",
    "check",
    "find_package_source",
    "needs_restart",
    "vendored_package_version",
    "version_tuple",
]


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
#: Installed with pip (the runtime needs of brainseg-monai's inference; versions as in its pyproject).
REQUIREMENTS = (
    Requirement("numpy", "numpy", "1.24"),
    Requirement("monai", "monai", "1.4"),
    Requirement("pytorch-ignite", "ignite", "0.4.11"),
    Requirement("pycocotools", "pycocotools", "2.0.7"),
    Requirement("pillow", "PIL", "10"),
    Requirement("nibabel", "nibabel", "5"),
    Requirement("itk", "itk", "5.3"),
)
#: The project itself, installed last with ``--no-deps`` (its other dependencies are for training).
PACKAGE = Requirement("brainseg-monai", "brainseg_monai", "0.1.0")


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


def check(requirements: tuple[Requirement, ...] | None = None, bundle_dir: str | None = None) -> list[Status]:
    """Status of ``requirements`` (default: torch, the pip requirements, then brainseg-monai).

    brainseg-monai also counts as present when ``bundle_dir`` is a packaged bundle carrying
    its own copy (``<bundle>/brainseg_monai/``), which the predictor then imports.
    """
    reqs = requirements if requirements is not None else (TORCH, *REQUIREMENTS, PACKAGE)
    statuses = []
    for r in reqs:
        version = _installed(r.distribution)
        if version is None and r == PACKAGE and bundle_dir:
            version = vendored_package_version(bundle_dir)
        statuses.append(Status(r, version))
    return statuses


def vendored_package_version(bundle_dir: str) -> str | None:
    """``__version__`` of a brainseg_monai copy vendored at the bundle's root (None if there is none)."""
    init = Path(bundle_dir) / "brainseg_monai" / "__init__.py"
    if not init.is_file():
        return None
    match = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", init.read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else "0"


def needs_restart(before: list[Status]) -> list[str]:
    """Distributions that were loaded in this process at an older version than now installed."""
    names = []
    for status in before:
        now = _installed(status.requirement.distribution)
        if status.imported and status.installed is not None and now is not None and now != status.installed:
            names.append(status.requirement.distribution)
    return names


def find_package_source(extra_paths: tuple[str, ...] = ()) -> str | None:
    """Where to pip-install brainseg-monai from.

    In order: ``$BRAINSEG_MONAI_SOURCE`` (a wheel or a source folder); the brainseg-monai
    checkout this extension is part of (``<repo>/pyproject.toml``); the newest
    ``brainseg_monai-*.whl`` in ``extra_paths`` or in the module's ``Resources/wheels``.
    """
    env = os.environ.get("BRAINSEG_MONAI_SOURCE")
    if env and os.path.exists(env):
        return os.path.abspath(env)
    here = Path(__file__).resolve()
    repo = here.parents[3]
    pyproject = repo / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"brainseg-monai"', pyproject.read_text(), re.M):
        return str(repo)
    folders = [*extra_paths, str(here.parents[1] / "Resources" / "wheels")]
    wheels = sorted(
        (w for folder in folders for w in glob.glob(os.path.join(folder, "brainseg_monai-*.whl"))),
        key=lambda w: version_tuple(os.path.basename(w).split("-")[1]),
    )
    return wheels[-1] if wheels else None
