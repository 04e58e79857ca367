"""``brainseg package``: a self-contained Model Zoo zip that runs with only what its metadata lists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainseg_monai.bundle_zip import sha256_file
from brainseg_monai.cli import main
from brainseg_monai.package import (
    DEFAULT_BUNDLE_NAME,
    MAX_FILE_BYTES,
    PackagingError,
    package_bundle,
    update_large_files_hash,
)
from conftest import BUNDLE, CONFIGS, SAMPLE_SPLIT, SMOKE_NETWORK

METADATA = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
ZIP_NAME = f"{DEFAULT_BUNDLE_NAME}_v{METADATA['version']}.zip"


def _bundle_copy(dst: Path, weights: Path | None) -> Path:
    """The shipped bundle's sources (no run outputs) in ``dst``, with ``weights`` as models/model.pt."""
    shutil.copytree(
        BUNDLE, dst, ignore=shutil.ignore_patterns("eval", "__pycache__", "checkpoint*.pt", "*.ts", "*.onnx")
    )
    (dst / "models").mkdir(exist_ok=True)
    target = dst / "models" / "model.pt"
    if target.exists():
        target.unlink()
    if weights is not None:
        shutil.copy(weights, target)
    return dst


def _large_files(text: str) -> list[dict]:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(text)["large_files"]


def test_package_refuses_without_weights(tmp_path, capsys):
    bundle = _bundle_copy(tmp_path / "bundle", None)
    with pytest.raises(PackagingError, match="--allow-no-weights"):
        package_bundle(bundle, tmp_path)
    assert main(["package", "--bundle-dir", str(bundle), "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no trained weights" in err
    assert not list(tmp_path.glob("*.zip"))
    # explicitly allowed: a config-only bundle
    out = package_bundle(bundle, tmp_path, allow_no_weights=True)
    with zipfile.ZipFile(out) as zf:
        assert f"{DEFAULT_BUNDLE_NAME}/models/model.pt" not in zf.namelist()
        assert f"{DEFAULT_BUNDLE_NAME}/configs/inference.json" in zf.namelist()


def test_package_refuses_an_output_inside_the_bundle(smoke_model, tmp_path, capsys, monkeypatch):
    bundle = _bundle_copy(tmp_path / "bundle", smoke_model)
    weights = (bundle / "models" / "model.pt").read_bytes()
    before = sorted(p.relative_to(bundle) for p in bundle.rglob("*"))
    for output in (bundle / "models" / "model.pt", bundle / "models", bundle, bundle / "configs" / "b.zip"):
        assert main(["package", "--bundle-dir", str(bundle), "--output", str(output)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "inside the bundle being packaged" in err and str(output) in err
    monkeypatch.chdir(bundle / "docs")  # the default output is the current folder
    assert main(["package", "--bundle-dir", str(bundle)]) == 1
    assert "inside the bundle" in capsys.readouterr().err
    assert (bundle / "models" / "model.pt").read_bytes() == weights
    assert sorted(p.relative_to(bundle) for p in bundle.rglob("*")) == before


def test_package_layout(smoke_model, tmp_path, capsys):
    bundle = _bundle_copy(tmp_path / "bundle", smoke_model)
    (bundle / "models" / "checkpoint_latest.pt").write_bytes(b"training state: not packaged")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["package", "--bundle-dir", str(bundle), "--output", str(out_dir)]) == 0
    zip_path = Path(capsys.readouterr().out.strip())
    assert zip_path == out_dir / ZIP_NAME and zip_path.is_file()
    assert list(out_dir.iterdir()) == [zip_path]  # no temporary file left

    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
        assert {n.split("/")[0] for n in names} == {DEFAULT_BUNDLE_NAME}  # one top-level folder
        rel = {n.split("/", 1)[1] for n in names}
        for required in (
            "LICENSE",
            "large_files.yml",
            "configs/metadata.json",
            "configs/inference.json",
            "configs/train.json",
            "configs/evaluate.json",
            "configs/multi_gpu_train.json",
            "configs/multi_gpu_evaluate.json",
            "configs/logging.conf",
            "models/model.pt",
            "docs/README.md",
            "docs/data_license.txt",
            "sample_data/valid/_annotations.coco.json",
            "scripts/__init__.py",
            "scripts/transforms.py",
            "scripts/predictor.py",
        ):
            assert required in rel, required
        # the weights (default and the box-trained alternative), never training state
        # and the input check's files (1 kB of intensity statistics, the 145 kB sequence classifier)
        assert {r for r in rel if r.startswith("models/")} == {
            "models/model.pt",
            "models/model_outline.pt",
            "models/model_box.pt",
            "models/input_reference.json",
            "models/sequence_check.pt",
        }
        assert not any("__pycache__" in r or r.endswith(".pyc") for r in rel)
        assert not any(r.startswith("brainseg_monai/") for r in rel), "the application is not part of the bundle"
        code = {r for r in rel if r.startswith("scripts/")}
        scripts = BUNDLE / "scripts"
        assert code == {"scripts/" + p.relative_to(scripts).as_posix() for p in scripts.rglob("*.py")}
        assert all(i.file_size <= MAX_FILE_BYTES for i in infos)
        assert zf.read(f"{DEFAULT_BUNDLE_NAME}/models/model.pt") == smoke_model.read_bytes()
        # the packaged listing carries the hash of the packaged weights
        entries = _large_files(zf.read(f"{DEFAULT_BUNDLE_NAME}/large_files.yml").decode())
    assert entries[0]["path"] == "models/model.pt"
    assert entries[0]["hash_type"] == "sha256" and entries[0]["hash_val"] == sha256_file(smoke_model)


def test_update_large_files_hash(smoke_model, tmp_path):
    bundle = _bundle_copy(tmp_path / "bundle", smoke_model)
    before = (bundle / "large_files.yml").read_text()
    digest = update_large_files_hash(bundle)
    after = (bundle / "large_files.yml").read_text()
    assert digest == sha256_file(smoke_model)
    default, outline, box = _large_files(after)
    assert default["hash_val"] == digest and default["url"] == _large_files(before)[0]["url"]
    for entry, name in ((outline, "model_outline.pt"), (box, "model_box.pt")):
        assert entry["path"] == f"models/{name}" and entry["hash_val"] == sha256_file(bundle / "models" / name)
    # comments and layout survive; only hash lines change (the default's, as its weights were replaced)
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed and all("hash_val" in b for _, b in changed)


# -- the packaged bundle in a fresh virtual environment ------------------------------------


def _metadata_requirements(meta: dict) -> list[str]:
    """Exactly what metadata.json says a user installs: torch, monai, numpy and required_packages_version."""
    reqs = [f"torch=={meta['pytorch_version']}", f"monai=={meta['monai_version']}", f"numpy=={meta['numpy_version']}"]
    return reqs + [f"{name}=={version}" for name, version in meta["required_packages_version"].items()]


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment holding only the packages metadata.json lists (one per test session)."""
    venv = tmp_path_factory.mktemp("fresh_venv") / "venv"
    # --no-compile: byte-compiling torch's every module at install would take half the time; imports compile theirs
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONSTRAINT", "PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
        + _metadata_requirements(METADATA),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python


def _run(python: Path, args: list[str], cwd: Path, timeout: int = 300, **extra_env: str) -> subprocess.CompletedProcess:
    # bytecode caching on: fresh_venv is installed with --no-compile, so what it imports is compiled once, on first use
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    env.update(OMP_NUM_THREADS="1", **extra_env)
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_model_zoo_unit_tests_run_the_committed_bundle_without_the_package(fresh_venv, tmp_path):
    """Model Zoo's unit tests (train, train + evaluate, inference, check_properties; 2-process gloo training)
    on a copy of the committed bundle, from another folder, where only the metadata's packages exist."""
    bundle = tmp_path / "bundle"
    # without the networks' weights (large_files.yml's files); the input check's small files are committed with it
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("eval", "__pycache__", "model*.pt", "*.ts", "*.onnx"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tests = Path(__file__).resolve().parent / "model_zoo_unit_tests"
    proc = _run(
        fresh_venv, ["-m", "unittest", "discover", "-v", "-s", str(tests)], elsewhere, 900, BUNDLE_ROOT=str(bundle)
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ran 2 tests" in proc.stderr and "OK" in proc.stderr


@pytest.mark.slow
def test_packaged_bundle_runs_in_fresh_venv(smoke_model, fresh_venv, tmp_path):
    real_weights = (BUNDLE / "models" / "model.pt").is_file()
    if real_weights:
        source, network_override = BUNDLE, []
    else:  # training still running or not published: the smoke model stands in for the weights
        source, network_override = _bundle_copy(tmp_path / "bundle", smoke_model), [str(SMOKE_NETWORK)]
    zip_path = package_bundle(source, tmp_path)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(unpacked)
    root = unpacked / DEFAULT_BUNDLE_NAME
    assert sorted(p.name for p in unpacked.iterdir()) == [DEFAULT_BUNDLE_NAME]

    # the application is neither installed there nor carried by the bundle: the bundle's own code runs
    proc = _run(fresh_venv, ["-c", "import brainseg_monai"], root)
    assert proc.returncode != 0 and "No module named 'brainseg_monai'" in proc.stderr
    proc = _run(fresh_venv, ["-m", "pip", "list", "--format=json"], root)
    installed = {p["name"].lower() for p in json.loads(proc.stdout)}
    assert "brainseg-monai" not in installed and "itk" in installed  # itk: metadata.json, for medical formats

    # inference, as the README tells a Model Zoo user: from the bundle root, default paths
    configs = "[" + ",".join(repr(c) for c in ["configs/inference.json", *network_override]) + "]"
    proc = _run(fresh_venv, ["-m", "monai.bundle", "run", "--config_file", configs], root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    images = sorted((root / "sample_data" / "valid").glob("*.jpg"))
    assert len(images) == len(list(SAMPLE_SPLIT.glob("*.jpg")))
    from scripts.predictor import BundlePredictor
    from scripts.verdict import PNG_VALUES, TUMOR_LABEL

    here = BundlePredictor(root, config_files=network_override, device="cpu")  # the same bundle, in this process
    found = 0
    for image in images:
        mask = root / "eval" / (image.stem + ".png")
        assert mask.is_file(), mask
        with Image.open(image) as im, Image.open(mask) as m:
            values = np.asarray(m)
            assert m.size == im.size and set(np.unique(values)) <= {0, *PNG_VALUES.values()}
        # the fresh environment draws what this one draws, tumor and possible tumor alike (its torch
        # build may round differently)
        expected_labels = here.predict_file(image, details=True).labels
        for label, value in PNG_VALUES.items():
            expected, drawn = expected_labels == label, values == value
            union = (expected | drawn).sum()
            assert union == 0 or (expected & drawn).sum() / union > 0.95, (image.name, label)
        found += bool((values == PNG_VALUES[TUMOR_LABEL]).any())
    if real_weights:
        assert found >= len(images) // 2, "the shipped model finds the tumors of most sample slices"

    # from any other working directory, with --bundle_root (the configs put the bundle's code on the path);
    # the optional postprocessing steps (scikit-image, scipy) work there too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    absolute = "[" + ",".join(repr(str(root / c)) for c in ["configs/inference.json", *network_override]) + "]"
    proc = _run(
        fresh_venv,
        ["-m", "monai.bundle", "run", "--config_file", absolute, "--bundle_root", str(root)]
        + ["--output_dir", str(tmp_path / "post"), "--keep_largest_component", "true", "--fill_holes", "true"],
        elsewhere,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((tmp_path / "post").glob("*.png"))) == len(images)

    # training needs only the listed packages too (TensorBoard, progress bar, COCO reading)
    train = "[" + ",".join(repr(c) for c in ["configs/train.json", str(SMOKE_NETWORK), str(CONFIGS / "smoke_cpu.json")])
    proc = _run(
        fresh_venv,
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            train + "]",
            "--ckpt_dir",
            str(tmp_path / "train" / "models"),
            "--output_dir",
            str(tmp_path / "train" / "eval"),
            "--train#trainer#max_epochs",
            "1",
            "--progress_bar",
            "true",
        ],
        root,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "train" / "models" / "model.pt").is_file()
    assert list((tmp_path / "train" / "eval").glob("events.out.tfevents.*"))
