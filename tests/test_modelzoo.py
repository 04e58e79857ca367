"""The MONAI Model Zoo's checks on the bundle, run as its CI runs them (``python -m monai.bundle ...``).

Model Zoo CI: verify_metadata against the schema, verify_net_in_out, ckpt_export (TorchScript),
a per-bundle unit test (train, train+evaluate, inference through ``ConfigWorkflow`` on random
JPEGs with ``check_properties``), black/isort/flake8 at line length 120, no file over 25 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

from brainseg_monai.bundle_zip import sha256_file
from brainseg_monai.package import MAX_FILE_BYTES
from conftest import BUNDLE, CONFIGS, REPO, SMOKE_NETWORK

CONFIG_DIR = BUNDLE / "configs"
META_FILE = CONFIG_DIR / "metadata.json"
METADATA = json.loads(META_FILE.read_text())
# Offline copy of the schema named in metadata.json's "schema" (see ../shared/REFERENCE.md).
SHARED_SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
SMOKE_INFER = f"['configs/inference.json','{SMOKE_NETWORK}']"
DEFAULT_INFER = "configs/inference.json"


def monai_bundle(*args: str, cwd: Path = BUNDLE, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` in a subprocess from the bundle root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _eager_network(config_file, ckpt: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(config_file)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    return net.eval()


def _fake_input() -> torch.Tensor:
    shape = METADATA["network_data_format"]["inputs"]["image"]["spatial_shape"]
    return torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(0))


# -- metadata and files --------------------------------------------------------------------


def test_verify_metadata(tmp_path):
    if SHARED_SCHEMA.is_file():
        schema = SHARED_SCHEMA
    else:
        # DOWNLOAD BRANCH: no offline copy, so MONAI downloads the schema named in metadata.json.
        # Offline machines cannot; that is reported as a skip, never as a pass.
        schema = tmp_path / "schema.json"
    proc = monai_bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema))
    if proc.returncode != 0 and not schema.is_file():
        pytest.skip(f"metadata schema could not be downloaded (offline?): {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_metadata_follows_model_zoo_rules():
    assert METADATA["version"] in METADATA["changelog"]  # Model Zoo's verify_version_changes
    assert "brainseg-monai" not in METADATA["required_packages_version"]  # the bundle carries its code
    readme = (BUNDLE / "docs" / "README.md").read_text()
    install = next(line for line in readme.splitlines() if line.startswith("pip install torch monai"))
    assert set(install.split()[2:]) == {"torch", "monai", "numpy", *METADATA["required_packages_version"]}
    ndf = METADATA["network_data_format"]
    assert ndf["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "tumor"}  # read by MONAI Label
    infer = json.loads((CONFIG_DIR / "inference.json").read_text())
    image, pred = ndf["inputs"]["image"], ndf["outputs"]["pred"]
    assert image["spatial_shape"] == pred["spatial_shape"] == infer["spatial_size"]
    assert image["num_channels"] == infer["network_def"]["in_channels"]
    assert pred["num_channels"] == infer["network_def"]["out_channels"] == len(pred["channel_def"])


def test_metadata_versions_match_constraints():
    """metadata.json names the versions this project tests with (constraints.txt)."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    listed = {"torch": METADATA["pytorch_version"], "monai": METADATA["monai_version"]}
    listed["numpy"] = METADATA["numpy_version"]
    listed.update(METADATA["required_packages_version"])
    for name, version in listed.items():
        assert (
            pins.get(name.lower()) == version
        ), f"{name}: metadata {version}, constraints.txt {pins.get(name.lower())}"


def _bundle_files() -> list[Path]:
    """Files of bundle/ that belong to the bundle: tracked or not ignored by git (run outputs are ignored)."""
    proc = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "bundle"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:  # not a git checkout: every file but run outputs
        return [p for p in BUNDLE.rglob("*") if p.is_file() and "eval" not in p.relative_to(BUNDLE).parts]
    return [REPO / line for line in proc.stdout.splitlines() if (REPO / line).is_file()]


def test_no_bundle_file_over_25_mb():
    files = _bundle_files()
    assert any(f.name == "metadata.json" for f in files)
    too_big = [f"{f} ({f.stat().st_size / 2**20:.1f} MB)" for f in files if f.stat().st_size > MAX_FILE_BYTES]
    assert not too_big, f"Model Zoo refuses files over 25 MB; list them in large_files.yml: {too_big}"


def test_large_files_lists_the_weights():
    pytest.importorskip("yaml")  # MONAI reads large_files.yml with PyYAML
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "large_files.yml"))
    entries = parser.get("large_files")
    weights = [e for e in entries if e["path"] == "models/model.pt"]
    assert len(weights) == 1
    [entry] = weights
    assert set(entry) == {"path", "url", "hash_val", "hash_type"}
    assert entry["hash_type"] == "sha256" and entry["url"].startswith("https://")
    model = BUNDLE / "models" / "model.pt"
    if model.is_file():
        assert entry["hash_val"] == sha256_file(model), "run: brainseg package --update-hash"


def test_required_files_and_monai_label_ids():
    for name in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md"):
        assert (BUNDLE / name).is_file(), name
    assert (BUNDLE / "docs" / "data_license.txt").is_file()
    infer = json.loads((CONFIG_DIR / "inference.json").read_text())
    # MONAI Label's BundleInferTask reads these ids
    for key in ("network_def", "preprocessing", "postprocessing", "inferer"):
        assert key in infer, key


# -- network checks and exports ------------------------------------------------------------


@pytest.mark.parametrize("config", [SMOKE_INFER, DEFAULT_INFER], ids=["smoke", "default"])
def test_verify_net_in_out(config):
    proc = monai_bundle(
        "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file", config
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_torchscript_export_matches_eager(smoke_model, tmp_path):
    ts_path = tmp_path / "model.ts"
    proc = monai_bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts_path),
        "--ckpt_file",
        str(smoke_model),
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        SMOKE_INFER,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(ts_path), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == METADATA["version"]  # ckpt_export embeds metadata
    eager = _eager_network([str(CONFIG_DIR / "inference.json"), str(SMOKE_NETWORK)], smoke_model)
    x = _fake_input()
    with torch.no_grad():
        assert torch.allclose(scripted(x), eager(x), atol=1e-5)


def test_onnx_export_matches_eager(smoke_model, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")  # torch.onnx's exporter
    onnx_path = tmp_path / "model.onnx"
    proc = monai_bundle(
        "onnx_export",
        "network_def",
        "--filepath",
        str(onnx_path),
        "--ckpt_file",
        str(smoke_model),
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        SMOKE_INFER,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    eager = _eager_network([str(CONFIG_DIR / "inference.json"), str(SMOKE_NETWORK)], smoke_model)
    x = _fake_input()[:1]  # exported with the metadata's input shape, batch 1
    [out] = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = eager(x).numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


# -- Model Zoo's per-bundle unit test ------------------------------------------------------


def _random_coco_split(split_dir: Path, n: int, rng: np.random.Generator) -> None:
    """``n`` random JPEGs and a Roboflow-style ``_annotations.coco.json`` with one random box each."""
    split_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        h, w = int(rng.integers(96, 160)), int(rng.integers(96, 160))
        name = f"{i}_jpg.rf.{i:032x}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(split_dir / name, quality=90)
        bw, bh = float(rng.integers(8, w // 2)), float(rng.integers(8, h // 2))
        x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh))
        poly = [x + bw, y, x, y, x, y + bh, x + bw, y + bh, x + bw, y]
        images.append({"id": i, "license": 1, "file_name": name, "height": h, "width": w})
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": int(rng.integers(1, 3)),
                "bbox": [x, y, bw, bh],
                "area": bw * bh,
                "segmentation": [poly],
                "iscrowd": 0,
            }
        )
    categories = [
        {"id": 0, "name": "Tumor", "supercategory": "none"},
        {"id": 1, "name": "0", "supercategory": "Tumor"},
        {"id": 2, "name": "1", "supercategory": "Tumor"},
    ]
    coco = {"categories": categories, "images": images, "annotations": annotations}
    (split_dir / "_annotations.coco.json").write_text(json.dumps(coco))


def _check_workflow(workflow: ConfigWorkflow) -> None:
    """Model Zoo's ci/unit_tests/utils.py check_workflow(..., check_properties=True)."""
    workflow.initialize()
    assert not workflow.check_properties()
    workflow.run()
    workflow.finalize()


def test_model_zoo_unit_test_on_random_jpegs(tmp_path):
    rng = np.random.default_rng(0)
    dataset = tmp_path / "data"
    _random_coco_split(dataset / "train", 6, rng)
    _random_coco_split(dataset / "valid", 6, rng)
    common = {
        "meta_file": str(META_FILE),
        "logging_file": str(CONFIG_DIR / "logging.conf"),
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(dataset),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
    }
    train_files = [str(CONFIG_DIR / "train.json"), str(SMOKE_NETWORK), str(CONFIGS / "smoke_cpu.json")]
    train_overrides = {"train#trainer#max_epochs": 2, "train_split": "train", "val_split": "valid"}

    _check_workflow(ConfigWorkflow(workflow_type="train", config_file=train_files, **common, **train_overrides))
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "models" / "checkpoint_latest.pt").is_file()

    # train + evaluate: a "train" workflow, as Model Zoo runs it (evaluate.json overrides train.json)
    evaluate_files = train_files[:1] + [str(CONFIG_DIR / "evaluate.json")] + train_files[1:]
    _check_workflow(ConfigWorkflow(workflow_type="train", config_file=evaluate_files, **common, **train_overrides))
    assert (tmp_path / "eval" / "metrics.csv").is_file()

    masks = tmp_path / "masks"
    _check_workflow(
        ConfigWorkflow(
            workflow_type="infer",
            config_file=[str(CONFIG_DIR / "inference.json"), str(SMOKE_NETWORK)],
            meta_file=str(META_FILE),
            logging_file=str(CONFIG_DIR / "logging.conf"),
            bundle_root=str(BUNDLE),
            dataset_dir=str(dataset / "valid"),
            ckpt_path=str(tmp_path / "models" / "model.pt"),
            output_dir=str(masks),
        )
    )
    for image in sorted((dataset / "valid").glob("*.jpg")):
        mask = masks / (image.stem + ".png")
        assert mask.is_file(), mask
        with Image.open(image) as im, Image.open(mask) as m:
            assert m.size == im.size
    assert len(list(masks.iterdir())) == 7  # 6 masks and the tumor report


# -- code format of the bundle's code ------------------------------------------------------

FORMAT_CHECKS = {
    # Model Zoo's runtests.sh --codeformat: black --skip-magic-trailing-comma, isort, flake8 (setup.cfg)
    "black (Model Zoo)": ["black", "--check", "--quiet", "-l", "120", "--skip-magic-trailing-comma"],
    "black": ["black", "--check", "--quiet", "-l", "120"],
    "isort": ["isort", "--check-only", "--profile", "black", "-l", "120"],
    # Model Zoo's setup.cfg ignores (N812: ``import torch.nn.functional as F``)
    "flake8": [
        "flake8",
        "--max-line-length",
        "120",
        "--extend-ignore",
        "E203,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419",
    ],
}


@pytest.mark.parametrize("check", list(FORMAT_CHECKS))
def test_bundle_code_passes_model_zoo_format_checks(check):
    command = FORMAT_CHECKS[check]
    pytest.importorskip(command[0])
    files = sorted(str(p.relative_to(REPO)) for p in (BUNDLE / "scripts").glob("*.py"))
    proc = subprocess.run(
        [sys.executable, "-m", *command, *files], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{check} fails on the bundle's code:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


# -- Model Zoo's pre-commit hooks (.pre-commit-config.yaml of the Model Zoo repository) ----------


def _bundle_text_files() -> list[Path]:
    """The bundle's committed text files (pre-commit runs its text hooks on text files only)."""
    proc = subprocess.run(["git", "ls-files", "bundle"], cwd=REPO, capture_output=True, text=True)
    files = [REPO / f for f in proc.stdout.split()] if proc.returncode == 0 and proc.stdout else []
    files = files or [p for p in BUNDLE.rglob("*") if p.is_file() and "eval" not in p.parts]
    return [
        p for p in files if p.suffix in {".py", ".json", ".md", ".yml", ".yaml", ".conf", ".txt", ""} and p.is_file()
    ]


# hook entry point and arguments, as Model Zoo's config runs them; fixers run on a copy and must change nothing
PRE_COMMIT_HOOKS = {
    "end-of-file-fixer": [],
    "trailing-whitespace-fixer": [],
    "mixed-line-ending": [],
    "check-docstring-first": [],
    "check-yaml": [],
    "pretty-format-json": ["--no-sort-keys", "--indent=4"],
}


@pytest.mark.parametrize("hook", list(PRE_COMMIT_HOOKS))
def test_bundle_passes_model_zoo_pre_commit_hooks(hook, tmp_path):
    exe = Path(sys.executable).with_name(hook)
    assert exe.is_file(), f"{hook}: pre-commit-hooks is in the test extras (pip install -e '.[test]')"
    suffixes = {"check-docstring-first": {".py"}, "check-yaml": {".yml", ".yaml"}, "pretty-format-json": {".json"}}
    files = [p for p in _bundle_text_files() if p.suffix in suffixes.get(hook, {p.suffix})]
    assert files
    copies = []
    for f in files:  # the fixers rewrite what they fix: run them on copies
        dst = tmp_path / f.relative_to(REPO)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(f.read_bytes())
        copies.append(str(dst))
    proc = subprocess.run([str(exe), *PRE_COMMIT_HOOKS[hook], *copies], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{hook}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


def test_only_the_weights_listed_in_large_files_exceed_a_megabyte():
    """Model Zoo's check-added-large-files (--maxkb=1024): the weights are the exception, listed in large_files.yml."""
    import yaml

    listed = {e["path"] for e in yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"]}
    proc = subprocess.run(["git", "ls-files", "bundle"], cwd=REPO, capture_output=True, text=True)
    files = [REPO / f for f in proc.stdout.split()] if proc.returncode == 0 else []
    big = {p.relative_to(BUNDLE).as_posix() for p in files if p.is_file() and p.stat().st_size > 1024 * 1024}
    assert big <= listed, f"over 1 MB and not in large_files.yml: {sorted(big - listed)}"


def test_download_large_files_verifies_the_shipped_weights(tmp_path):
    """The weights ship inside the bundle: ``download_large_files`` finds them with the listed hash, offline."""
    assert (BUNDLE / "models" / "model.pt").is_file(), "the bundle ships its weights in git"
    proc = monai_bundle("download_large_files", "--bundle_path", str(BUNDLE))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "exists" in (proc.stdout + proc.stderr).lower()


MODEL_ZOO = REPO.parent / "shared" / "model-zoo"


@pytest.mark.slow
def test_model_zoo_ci_passes(tmp_path):
    """Model Zoo's own verify_bundle.py (min, full), runtests.sh --codeformat and pre-commit hooks."""
    if not (MODEL_ZOO / "ci" / "verify_bundle.py").is_file():
        pytest.skip("../shared/model-zoo is not present")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "model_zoo_ci.py"), "--model-zoo", str(MODEL_ZOO)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "verify_bundle.py -m full" in proc.stdout and "FAIL" not in proc.stdout
