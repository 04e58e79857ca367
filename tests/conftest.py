"""Shared test fixtures: the repo's sample data, the bundle, and ../shared data when present."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from brainseg_monai.bundle_code import use_bundle_scripts

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"
use_bundle_scripts(BUNDLE)  # test modules import the bundle's code as `scripts`, as the application does
CONFIGS = REPO / "configs"
SAMPLE_ROOT = BUNDLE / "sample_data"
SAMPLE_SPLIT = SAMPLE_ROOT / "valid"
SAMPLE_OUTLINES = SAMPLE_ROOT / "valid_outlines"
SHARED_DATA = REPO.parent / "shared" / "data" / "brain_tumor_coco"
# The smoke run's network and input size: layered on train.json and on inference.json alike.
SMOKE_NETWORK = CONFIGS / "smoke_network.json"
SMOKE_OVERRIDES = json.loads(SMOKE_NETWORK.read_text())


def smoke_train_argv(dataset: Path, out: Path, *extra: str) -> list[str]:
    """``brainseg train`` arguments for one epoch of the smoke network on CPU (``extra`` appended)."""
    smoke = ["--config", str(SMOKE_NETWORK), "--config", str(CONFIGS / "smoke_cpu.json")]
    return [
        "train",
        "--dataset-dir",
        str(dataset),
        "--output-dir",
        str(out),
        *smoke,
        "--epochs",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


# Model Zoo-style unittest files: run by test_package.py in a venv without this package, not collected here.
collect_ignore = ["model_zoo_unit_tests"]


@pytest.fixture
def sample_split(tmp_path: Path) -> Path:
    """A writable copy of the sample COCO split (12 real valid images + annotations)."""
    dst = tmp_path / "valid"
    shutil.copytree(SAMPLE_SPLIT, dst)
    return dst


@pytest.fixture
def shared_data() -> Path:
    """The full dataset beside the checkout; tests using it are skipped where it is absent."""
    if not (SHARED_DATA / "valid" / "_annotations.coco.json").is_file():
        pytest.skip("../shared/data/brain_tumor_coco is not present on this machine")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _keep_locale():
    """Each test leaves the process's locale as it found it (GDCM, which writes the tests' DICOM series, does not)."""
    from scripts.io import keep_locale

    with keep_locale():
        yield


#: Processes running the suite at once: pytest-xdist's workers (pyproject's ``-n``), or 1 with ``-n 0``.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
#: Torch threads for each worker and for every process it starts: the cores shared out among the workers,
#: at most 2 (CI's cores), so that two workers on CI's 2 cores do not oversubscribe them.
TEST_THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
# Subprocesses (bundle runs, the CLI, fresh environments) inherit this; tests that start torchrun's two ranks
# or other parallel processes still set 1 themselves.
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)


@pytest.fixture(autouse=True, scope="session")
def _share_the_cores():
    """Torch in this process uses its share of the cores (see ``TEST_THREADS``)."""
    import torch

    torch.set_num_threads(TEST_THREADS)


def run_bundle(*args: str, cwd: Path = BUNDLE, timeout: int = 600):
    """``python -m monai.bundle run ...`` in a subprocess, as a user runs it; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def write_volume(path: Path, slices, spacing, origin, direction) -> None:
    """Write ``slices`` ((k, j, i) or (j, i)) as a medical image with this geometry (ITK picks the format by suffix)."""
    import itk
    import numpy as np

    image = itk.image_from_array(np.ascontiguousarray(slices, dtype=np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(itk.matrix_from_array(np.asarray(direction, dtype=float)))
    itk.imwrite(image, str(path))


def write_volume_dir(folder: Path) -> Path:
    """A folder laid out as ``../shared/data/lgg_volumes``: ``t1c/case.nii.gz``, three sample slices stacked, and
    ``masks/case.nii.gz``, a square on the middle slice."""
    import itk
    import numpy as np
    from PIL import Image

    greys = [np.asarray(Image.open(f).convert("L"), np.float32) for f in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:3]]
    (folder / "t1c").mkdir(parents=True)
    (folder / "masks").mkdir()
    itk.imwrite(itk.image_from_array(np.stack(greys)), str(folder / "t1c" / "case.nii.gz"))
    mask = np.zeros((3, *greys[0].shape), np.uint8)
    mask[1, 200:300, 200:300] = 1
    itk.imwrite(itk.image_from_array(mask), str(folder / "masks" / "case.nii.gz"))
    return folder


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory) -> Path:
    """A tiny model trained for 2 epochs on the sample split with configs/smoke_cpu.json (a real bundle run).

    Trained once per suite run: pytest-xdist's workers share one base folder, and the first to get here trains
    while the others wait on the lock. Tests read the model and never write beside it.
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    out = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "smoke_train"
    model = out / "models" / "model.pt"
    with FileLock(f"{out}.lock"):
        if not model.is_file():
            proc = run_bundle(
                "--config_file",
                f"['configs/train.json','{SMOKE_NETWORK}','{CONFIGS / 'smoke_cpu.json'}']",
                "--ckpt_dir",
                str(out / "models"),
                "--output_dir",
                str(out / "eval"),
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            assert model.is_file()
    return model
