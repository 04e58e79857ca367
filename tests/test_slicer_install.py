"""What the Slicer module installs into Slicer's Python, and whether the background worker runs with only that.

The module's installer (``BrainTumorSegmentationLib/installer.py``) installs PyTorch through PyTorch Utils and the
packages of ``dependencies.REQUIREMENTS`` with pip; the worker (``worker.py``) then runs the bundle's inference in
``PythonSlicer``. A package the worker imports but the list lacks fails every Apply on a fresh install (it did:
scikit-image, imported by the bundle's ``TumorProbabilityToMaskd``). These tests tie the list to the bundle's code,
its ``configs/metadata.json`` and ``constraints.txt``, and run the real installer and the real worker in a fresh
virtual environment that holds nothing else.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLE, REPO
from PIL import Image

MODULE_DIR = REPO / "slicer_extension" / "BrainTumorSegmentation"
LIB_DIR = MODULE_DIR / "BrainTumorSegmentationLib"
CONSTRAINTS = REPO / "constraints.txt"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from BrainTumorSegmentationLib import dependencies, installer  # noqa: E402

#: What Slicer 5.8's own Python holds that the worker could lean on. Slicer's SuperBuild installs into its Python
#: (SuperBuild/External_python-*.cmake): numpy, scipy (Slicer_USE_SCIPY, on in the release builds), the DICOM
#: requirements (pydicom, Pillow, six, retrying, dicomweb-client), requests (certifi, idna, charset-normalizer,
#: urllib3), packaging and pyparsing (PythonQt's requirements), pip, setuptools, wheel, GitPython and PyGithub
#: (extension manager), SimpleITK; VTK, CTK and MRML come as Slicer's own wrapped libraries. Of these the fresh
#: environment gets the ones below; the others (SimpleITK, VTK, pydicom, requests...) are left out: the worker must
#: not need them, and leaving them out can only make the test stricter.
SLICER_SHIPS = ("numpy", "scipy", "pillow", "packaging")
#: Imported by the bundle's code, but not where the worker goes: ``itk`` reads and writes medical image files
#: (``scripts/io.py``), while Slicer reads the images and hands the worker arrays.
NOT_ON_THE_WORKERS_PATH = {"itk": "file reading and writing; the worker gets arrays from Slicer"}
#: The metadata's packages for training and its command line, not for inference (tqdm is imported by the
#: inference code too: the progress bar, so the module installs it).
TRAINING_ONLY = {"tensorboard", "fire"}


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def _third_party_imports(paths: list[Path]) -> set[str]:
    """Top-level names of the absolute imports in ``paths`` (also those inside functions) that are not stdlib."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    own = ("__future__", "scripts", "BrainTumorSegmentationLib")  # the bundle's and the Lib's own packages
    return {n for n in names if n not in sys.stdlib_module_names and n not in own}


def test_every_package_the_bundle_code_imports_is_installed_or_shipped_by_slicer():
    """Static: each third-party module imported anywhere in the bundle's ``scripts/`` or in the worker's side of
    the Lib (lazy imports inside functions included) comes from torch, a requirement of the installer, or Slicer."""
    code = sorted((BUNDLE / "scripts").rglob("*.py")) + [LIB_DIR / "inference.py", LIB_DIR / "worker.py"]
    provided = {dependencies.TORCH.module, *(r.module for r in dependencies.REQUIREMENTS)}
    missing = _third_party_imports(code) - provided - set(NOT_ON_THE_WORKERS_PATH)
    assert not missing, f"imported by the bundle's code but neither installed by the module nor shipped: {missing}"
    assert "skimage" in _third_party_imports([BUNDLE / "scripts" / "components.py"])  # the one that was missing
    assert {"scikit-image", "scipy"} <= {r.distribution for r in dependencies.REQUIREMENTS}
    # each requirement's module is the one its distribution provides (the check reads the distribution's version)
    modules = importlib.metadata.packages_distributions()
    for requirement in (dependencies.TORCH, *dependencies.REQUIREMENTS):
        assert requirement.distribution in {_normalized(d) for d in modules[requirement.module]}, requirement


def test_the_requirements_are_the_bundles_metadata_with_floors_that_constraints_txt_meets():
    """Every package the module installs is one the bundle's metadata lists, at a floor that the version it lists
    and the versions ``constraints.txt`` pins (for each Python it pins for) meet; what the metadata lists beyond
    that is training-only or not on the worker's path."""
    from packaging.requirements import Requirement

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    listed = {
        "torch": meta["pytorch_version"],
        "monai": meta["monai_version"],
        "numpy": meta["numpy_version"],
        **meta["required_packages_version"],
    }
    pins: dict[tuple[str, str], str] = {}  # (distribution, python version) -> pinned version
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            for python in ("3.10", "3.11", "3.12"):
                if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
                    (spec,) = requirement.specifier
                    pins[(_normalized(requirement.name), python)] = spec.version
    needed = (dependencies.TORCH, *dependencies.REQUIREMENTS)
    for requirement in needed:
        floor = dependencies.version_tuple(requirement.minimum)
        assert dependencies.version_tuple(listed[requirement.distribution]) >= floor, requirement
        for python in ("3.10", "3.11", "3.12"):
            pinned = pins[(requirement.distribution, python)]
            assert dependencies.version_tuple(pinned) >= floor, (requirement, python, pinned)
    left_out = set(listed) - {r.distribution for r in needed}
    assert left_out == TRAINING_ONLY | set(NOT_ON_THE_WORKERS_PATH), left_out


# -- installing: PyTorch Utils failing ------------------------------------------------------


def test_a_pytorch_install_that_raises_is_reported_with_what_to_do_not_as_a_traceback(caplog):
    """Offline, PyTorch Utils' pip run raises ``subprocess.CalledProcessError``: the installer returns a message
    saying what failed and what to do (the module shows it in a dialog), and installs nothing else."""
    import logging

    def offline_install_torch() -> bool:
        raise subprocess.CalledProcessError(
            1,
            ["PythonSlicer", "-m", "pip", "install", "torch"],
            output="ERROR: Could not find a version that satisfies the requirement torch (from versions: none)",
        )

    absent_torch = dependencies.Requirement("brainseg-no-such-torch", "brainseg_no_such_torch", "2.4")
    absent = (dependencies.Requirement("brainseg-no-such-dist", "brainseg_no_such_dist", "1.0"),)
    install = installer.DependencyInstaller(
        lambda args: pytest.fail(f"pip must not run once PyTorch failed: {args}"),
        offline_install_torch,
        requirements=absent,
        torch=absent_torch,
    )
    with caplog.at_level(logging.ERROR, logger="BrainTumorSegmentationLib.installer"):
        outcome = install.run()
    assert not outcome.ready and outcome.installed == [] and outcome.restart == []
    message = outcome.message
    assert message.startswith("Installing PyTorch failed: Command '['PythonSlicer', '-m', 'pip'")
    assert "returned non-zero exit status 1" in message
    assert "Could not find a version that satisfies the requirement torch" in message  # pip's own words
    assert "network connection" in message and "PyTorch Utils module" in message and "restart Slicer" in message
    assert [r.getMessage() for r in caplog.records] == ["installing PyTorch failed"]  # traceback in the log only

    # any other failure of PyTorch Utils (no disk space...) is reported the same way; False says "not installed"
    def full_disk() -> bool:
        raise OSError(28, "No space left on device")

    outcome = installer.DependencyInstaller(lambda a: None, full_disk, requirements=(), torch=absent_torch).run()
    assert not outcome.ready and "Installing PyTorch failed: [Errno 28] No space left on device" in outcome.message
    outcome = installer.DependencyInstaller(lambda a: None, lambda: False, requirements=(), torch=absent_torch).run()
    assert not outcome.ready and outcome.message.startswith("PyTorch was not installed.")
    assert "PyTorch Utils module" in outcome.message


def _slicer_pip_install(args: list[str]) -> None:
    """What Slicer's ``slicer.util.pip_install`` does (``_executePythonModule``): pip in a child process whose
    output ``slicer.util.logProcessOutput`` prints line by line, then a ``CalledProcessError`` holding the spent
    stream. ``--no-index``: no network is needed to fail."""
    import slicer.util

    proc = subprocess.Popen(
        [sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
    )
    slicer.util.logProcessOutput(proc)


def test_a_failed_pip_install_in_slicer_is_reported_with_pip_s_own_words(capsys):
    """Slicer's pip runner keeps no output in its error: the installer keeps the end of what it printed, and the
    printing still reaches the console."""
    absent = (dependencies.Requirement("brainseg-no-such-dist", "brainseg_no_such_dist", "1.0"),)
    outcome = installer.DependencyInstaller(_slicer_pip_install, lambda: True, requirements=absent, torch=None).run()
    assert not outcome.ready
    assert outcome.message.startswith("Installing Python packages failed: Command '[")
    assert "No matching distribution found for brainseg-no-such-dist" in outcome.message  # pip's own words
    assert outcome.message.endswith(installer.NETWORK_ADVICE)
    assert "No matching distribution found for brainseg-no-such-dist" in capsys.readouterr().out  # the console

    # PyTorch Utils installs through the same runner: its failure keeps pip's words as well
    def install_torch() -> bool:
        _slicer_pip_install(["brainseg-no-such-torch>=2.4"])
        return True

    absent_torch = dependencies.Requirement("brainseg-no-such-torch", "brainseg_no_such_torch", "2.4")
    outcome = installer.DependencyInstaller(
        _slicer_pip_install, install_torch, requirements=(), torch=absent_torch
    ).run()
    assert outcome.message.startswith("Installing PyTorch failed: Command '[")
    assert "No matching distribution found for brainseg-no-such-torch" in outcome.message


def test_the_confirmation_says_how_much_is_downloaded():
    """PyTorch's gigabytes are announced only when PyTorch is to be installed."""
    absent = (dependencies.Requirement("brainseg-no-such-dist", "brainseg_no_such_dist", "1.0"),)
    asked: list[str] = []
    installer.DependencyInstaller(lambda a: None, lambda: True, lambda t: asked.append(t) and False, absent, None).run()
    absent_torch = dependencies.Requirement("brainseg-no-such-torch", "brainseg_no_such_torch", "2.4")
    installer.DependencyInstaller(
        lambda a: None, lambda: True, lambda t: asked.append(t) and False, (), absent_torch
    ).run()
    assert "a few minutes" in asked[0] and "GB" not in asked[0] and "brainseg-no-such-dist" in asked[0]
    assert "PyTorch alone is 1-3 GB" in asked[1]


def test_printed_tail_keeps_the_last_lines_and_writes_through():
    import io

    console = io.StringIO()
    tail = installer.PrintedTail(console, lines=2)
    tail.write("one\ntwo\n\nthree")
    tail.write(" and more\nfour\n")
    assert console.getvalue() == "one\ntwo\n\nthree and more\nfour\n"
    assert tail.text() == "three and more\nfour"
    tail.write("five, unfinished")
    assert tail.text() == "four\nfive, unfinished"


# -- the installer and the worker in a fresh environment -------------------------------------


def _clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without what would leak this repository's packages into another Python, and
    with bytecode caching on: the environment is installed with ``--no-compile``, so what it imports is compiled
    once, on first import, not again in every process."""
    leaks = ("PIP_CONSTRAINT", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in leaks}
    env.update(extra)
    return env


_INSTALL_AS_THE_MODULE_DOES = """
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from BrainTumorSegmentationLib import installer

def install_torch():  # PyTorch Utils' part: here the wheel that constraints.txt pins
    command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
    command.append("torch==2.13.0")
    return subprocess.run(command).returncode == 0

asked = []
pip = installer.subprocess_pip(extra_args=["-c", sys.argv[2], "--no-compile"])  # slicer.util.pip_install's part
outcome = installer.DependencyInstaller(pip, install_torch, lambda text: asked.append(text) or True).run()
print(json.dumps({"outcome": outcome.__dict__, "asked": asked}))
"""


@pytest.fixture(scope="session")
def slicer_like_python(tmp_path_factory) -> tuple[Path, dict]:
    """A new virtual environment (no system site packages) holding what Slicer ships (:data:`SLICER_SHIPS`), after
    the module's installer ran in it: ``(its python, what the installer reported)``. One per test session.

    Versions follow ``constraints.txt`` (torch is the local 2.13.0 wheel); the environment's Python is this one, not
    Slicer 5.8's 3.9. Every pip run here passes ``--no-compile``: byte-compiling all of torch at install would take
    about half the fixture's time, and what the worker imports is compiled when imported.
    """
    venv = tmp_path_factory.mktemp("slicer_like_python") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
    env = _clean_environment()
    shipped = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
        + ["-c", str(CONSTRAINTS), *SLICER_SHIPS],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert shipped.returncode == 0, shipped.stdout[-3000:] + shipped.stderr[-3000:]
    proc = subprocess.run(
        [str(python), "-c", _INSTALL_AS_THE_MODULE_DOES, str(MODULE_DIR), str(CONSTRAINTS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_worker_runs_with_only_what_the_installer_installs_and_slicer_ships(slicer_like_python, monkeypatch):
    """The installer (run in the fresh environment as the module runs it in Slicer's Python: pip for the
    requirements, ``install_torch`` for PyTorch) installs what Slicer lacks; then the worker, started as the module
    starts it (``background.WorkerRun``, with that environment's python as the module passes ``PythonSlicer``),
    segments real sample slices with the shipped model as it does in this repository's own environment. A package
    the worker imports but the installer does not install fails here, with the worker's error (as it did for
    scikit-image: ``RuntimeError: applying transform <scripts.transforms.TumorProbabilityToMaskd ...>``)."""
    from BrainTumorSegmentationLib.background import WorkerRun

    python, report = slicer_like_python
    outcome = report["outcome"]
    assert outcome["ready"] and outcome["message"] == "" and outcome["restart"] == [], outcome
    # nothing of this repository's environment is in there
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], env=_clean_environment(), capture_output=True, text=True
    )
    present = {_normalized(d["name"]) for d in json.loads(listing.stdout)}
    assert not present & {"brainseg-monai", "itk", "tensorboard", "slicer-core", "vtk", "simpleitk"}, present

    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the worker shares the test machine's two cores
    files = sorted((BUNDLE / "sample_data" / "valid").glob("*.jpg"))[:2]
    volume = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32) for f in files])
    logged: list[str] = []
    run = WorkerRun(volume, str(BUNDLE), python=str(python), device="cpu", batch_size=2, on_log=logged.append)
    assert run.wait(600), "the worker did not finish"
    assert run.error is None and run.result is not None, f"{run.error}\n" + "\n".join(logged[-40:])
    assert run.command[:2] == [str(python), str(LIB_DIR / "worker.py")]

    # the same worker on the same slices in this repository's environment (every package of constraints.txt)
    reference = WorkerRun(volume, str(BUNDLE), python=sys.executable, device="cpu", batch_size=2)
    assert reference.wait(600) and reference.error is None, reference.error
    mask, expected_mask = run.result.mask, reference.result.mask
    assert mask.shape == volume.shape and mask.any()
    assert list(mask.any(axis=(1, 2))) == list(expected_mask.any(axis=(1, 2)))  # the same slices with a tumor
    assert np.mean(mask == expected_mask) > 0.999  # thread counts differ: a border voxel may round the other way

    # what the installer asked for and installed: what Slicer lacks, scikit-image among it
    expected = [r.spec for r in dependencies.REQUIREMENTS if r.distribution not in SLICER_SHIPS]
    assert outcome["installed"] == expected
    (asked,) = report["asked"]
    assert "torch>=2.4 (not installed)" in asked and "scikit-image>=0.21 (not installed)" in asked
    assert "scipy" not in asked and "numpy" not in asked  # Slicer's own, found
