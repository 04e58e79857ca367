"""benchmarks/gpu_session.py, run on the CPU before any GPU sees it: the dry run, the carry-ready data,
and the command that checks and installs what a GPU run brings back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import BUNDLE, REPO, SAMPLE_SPLIT

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_accept  # noqa: E402
import gpu_session  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """``gpu_session.py run --part all --dry-run``: every stage of both GPU commands, CPU, sample split."""
    out = tmp_path_factory.mktemp("gpu_out")
    work = tmp_path_factory.mktemp("gpu_work")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_session.py"), "run", "--part", "all", "--dry-run"]
        + ["--out", str(out), "--deadline", "300"],
        capture_output=True,
        text=True,
        env={**os.environ, "BRAINSEG_GPU_WORK": str(work / "w")},
        timeout=600,
    )
    return out, proc


def test_dry_run_runs_every_stage_and_keeps_each_result(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = json.loads((out / "session_partall.json").read_text())
    stages = session["stages"]
    assert list(stages) == [
        "environment",
        "smoke_fast_gpu",
        "benchmarks",
        "train_box",
        "train_outline",
        "train_robust",
        "train_cascade",
        "evaluate",
    ]
    assert all(s["status"] == "ok" for s in stages.values()), {k: s.get("error") for k, s in stages.items()}
    assert stages["benchmarks"]["measure"]["plain_fp32"]["images_per_s"] > 0
    assert stages["benchmarks"]["floor"]["floor_images_per_s"] > 0
    for name in ("box", "outline", "robust", "cascade"):
        assert stages[f"train_{name}"]["epochs_done"] == 1 and stages[f"train_{name}"]["completed"]
    assert stages["evaluate"]["n_images"] == 12 and 0.0 <= stages["evaluate"]["outline_dice_mean"] <= 1.0
    # brainseg_monai.recipe ran the stages: no real tumor-free slices are carried, so the free stage is
    # left out and the robust stage's model is model.pt; each stage's log is in the archive
    made = [stages[f"train_{name}"]["weights"] for name in ("box", "outline", "robust", "cascade")]
    assert made == [["model_box.pt"], None, ["model.pt"], ["model_outline.pt"]]
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert {"box.log", "outline.log", "robust.log", "cascade.log"} <= set(tar.getnames())
    # at most 8 files come back from the GPU machine: weights, the session, one archive of logs and curves
    names = sorted(p.name for p in out.iterdir())
    assert names == ["logs.tar.gz", "model.pt", "model_box.pt", "model_outline.pt", "session_partall.json"]
    assert set(session["files"]) == set(names) - {"session_partall.json"}
    for name, digest in session["files"].items():
        assert gpu_session.sha256(out / name) == digest


def test_a_stage_that_fails_is_recorded_and_the_session_goes_on(tmp_path):
    session = gpu_session.Session(tmp_path, "s.json", deadline_s=60)
    first = session.stage("first", lambda left: {"figure": 1})
    assert first["status"] == "ok" and first["figure"] == 1
    assert session.stage("broken", lambda left: 1 / 0) is None
    assert session.stage("late", lambda left: {}, minimum_s=3600) is None
    saved = json.loads((tmp_path / "s.json").read_text())["stages"]
    assert saved["first"]["figure"] == 1 and saved["first"]["status"] == "ok"
    assert saved["broken"]["status"] == "failed" and "ZeroDivisionError" in saved["broken"]["error"]
    assert saved["late"]["status"] == "skipped" and "needed" in saved["late"]["why"]


def test_prepare_splits_the_data_into_two_calls_that_fit(tmp_path, monkeypatch):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    shutil.copytree(SAMPLE_SPLIT, dataset / "train")
    shutil.copytree(SAMPLE_SPLIT, dataset / "valid")
    shutil.copytree(BUNDLE / "sample_data" / "valid_outlines", dataset / "valid_outlines")
    monkeypatch.setattr(gpu_session, "CARRY", tmp_path / "carry")
    monkeypatch.setattr(gpu_session, "WHEELS", tmp_path / "wheels")
    (tmp_path / "wheels").mkdir()
    report = gpu_session.prepare(dataset, valid_images=5, download=False)
    halves = {}
    for part in ("a", "b"):
        coco = json.loads((tmp_path / "carry" / part / "train" / gpu_session.ANNOTATIONS).read_text())
        files = {p.name for p in (tmp_path / "carry" / part / "train").glob("*.jpg")}
        assert files == {im["file_name"] for im in coco["images"]}
        ids = {im["id"] for im in coco["images"]}
        assert coco["annotations"] and all(a["image_id"] in ids for a in coco["annotations"])
        halves[part] = files
    assert not halves["a"] & halves["b"] and len(halves["a"] | halves["b"]) == 12
    assert report["train_images"] == {"a": len(halves["a"]), "b": len(halves["b"])}
    assert len(list((tmp_path / "carry" / "b" / "valid").glob("*.jpg"))) == 5
    assert len(list((tmp_path / "carry" / "b" / "valid_outlines").glob("*.png"))) == 5
    assert report["fits"] and max(report["bytes"]["call_a"], report["bytes"]["call_b"]) <= gpu_session.CARRY_LIMIT

    # on the device: both halves make one split; a cold machine (first half gone) still trains on the second
    merged = gpu_session.assemble_data([tmp_path / "carry" / "a", tmp_path / "carry" / "b"], tmp_path / "data")
    assert merged == {"train_images": 12, "halves": ["a", "b"]}
    assert (tmp_path / "data" / "valid" / gpu_session.ANNOTATIONS).is_file()
    cold = gpu_session.assemble_data([tmp_path / "nowhere", tmp_path / "carry" / "b"], tmp_path / "cold")
    assert cold == {"train_images": len(halves["b"]), "halves": ["b"]}


def test_device_calls_fit_the_lent_time_and_carry_what_each_part_reads():
    calls = gpu_session.device_commands()
    assert [c["carry"] for c in calls] == [[".whl", ".gpu_carry/a"], [".whl", ".gpu_carry/b"]]
    assert all(c["timeout_s"] <= 600 and len(c["command"]) <= 2000 for c in calls)
    assert sum(c["timeout_s"] for c in calls) <= 12 * 60  # of the 15 minutes, the rest for start-up
    assert "--part 1" in calls[0]["command"] and "--part 2" in calls[1]["command"]


def test_accept_checks_measures_refuses_a_worse_model_and_installs_with_force(dry_run, tmp_path):
    out, proc = dry_run
    assert proc.returncode == 0
    accept = [sys.executable, str(REPO / "benchmarks" / "gpu_accept.py"), str(out), "--dataset-dir"]
    accept += [str(BUNDLE / "sample_data")]
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("eval"))
    before = {p.name: p.read_bytes() for p in (bundle / "models").glob("*.pt")}
    meta_before = (bundle / "configs" / "metadata.json").read_text()

    # one epoch on 12 images is worse than the shipped model: reported, and not installed
    proc = subprocess.run(accept + ["--bundle-dir", str(bundle), "--install"], capture_output=True, text=True)
    assert proc.returncode == 1 and "not installed, worse than the shipped model" in proc.stderr
    assert "hashes match; weights load and export: model_box.pt, model.pt, model_outline.pt" in proc.stdout
    assert {p.name: p.read_bytes() for p in (bundle / "models").glob("*.pt")} == before
    assert (bundle / "configs" / "metadata.json").read_text() == meta_before

    proc = subprocess.run(
        accept + ["--bundle-dir", str(bundle), "--install", "--force"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("model.pt", "model_outline.pt", "model_box.pt"):
        assert (bundle / "models" / name).read_bytes() == (out / name).read_bytes()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    major, minor, _ = json.loads(meta_before)["version"].split(".")
    bumped = f"{major}.{int(minor) + 1}.0"  # installing new weights is a minor version: 0.4.0 -> 0.5.0
    assert meta["version"] == bumped and "trained on a GPU" in meta["changelog"][bumped]
    readme = (bundle / "docs" / "README.md").read_text()
    assert readme.count("<!-- gpu-session -->") == 1 and "| cascade | ok | 1 of 1 |" in readme
    # a second install replaces the table, it does not add one (in process: the measurement is the one above)
    gpu_accept.install(bundle, out, [], "<!-- gpu-session -->\nagain\n<!-- /gpu-session -->", {})
    readme = (bundle / "docs" / "README.md").read_text()
    assert readme.count("<!-- gpu-session -->") == 1 and "\nagain\n" in readme and "| cascade | ok" not in readme

    # a file damaged in transfer is refused by name
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    data = bytearray((damaged / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "model.pt").write_bytes(bytes(data))
    proc = subprocess.run(accept[:2] + [str(damaged)] + accept[3:], capture_output=True, text=True)
    assert proc.returncode == 1 and "model.pt: sha256 differs" in proc.stderr
