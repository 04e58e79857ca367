"""``brainseg train --recipe``: every stage of the shipped recipe in one resumable command, run for real
(one epoch a stage, 32 px, a tiny network) on the sample split, a tiny tumor-free and a tiny tumor-box split."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE_SPLIT
from PIL import Image

from brainseg_monai.cli import main
from brainseg_monai.recipe import RECIPE, bundle_sources, plan_stages, stage_epochs

STAGES = ("box", "outline", "robust", "free", "tumor_boxes", "cascade")
#: The stages' own sizes are replaced: 32 px and a two-level network keep a stage to seconds on 2 CPUs.
TINY = {
    "spatial_size": [32, 32],
    "batch_size": 4,
    "use_amp": False,
    "network_def#channels": [4, 8],
    "network_def#strides": [2],
    "network_def#num_res_units": 1,
}


def write_tumor_free_split(folder: Path, n: int = 3, boxes: bool = False) -> Path:
    """A COCO split of ``n`` grey PNGs, no annotation or (``boxes``) one tumor box each, as
    ``benchmarks/make_lgg_splits.py`` writes its ``tumor_free`` and ``tumor_boxes``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for k in range(n):
        Image.fromarray((rng.random((48, 48)) * 120 + 60).astype(np.uint8), mode="L").save(folder / f"free{k}.png")
        images.append({"id": k + 1, "file_name": f"free{k}.png", "height": 48, "width": 48})
        if boxes:
            annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": [10, 12, 16, 14]})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "Tumor", "supercategory": "none"}],
    }
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return folder


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipe")
    for split in ("train", "valid"):
        shutil.copytree(SAMPLE_SPLIT, root / "dataset" / split)
    tiny = root / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    return {
        "root": root,
        "dataset": root / "dataset",
        "free": write_tumor_free_split(root / "free"),
        "boxes": write_tumor_free_split(root / "boxes", boxes=True),
        "tiny": tiny,
    }


def recipe_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--recipe",
        "--dataset-dir",
        str(inputs["dataset"]),
        "--output-dir",
        str(out),
        "--epochs-scale",
        "0.01",
        "--device",
        "cpu",
        "--config",
        str(inputs["tiny"]),
        *extra,
    ]


def test_the_stage_list_is_the_shipped_recipe():
    assert tuple(s.name for s in RECIPE) == STAGES
    by_name = {s.name: s for s in RECIPE}
    assert by_name["free"].configs == (
        "train_full.json",
        "box_supervised.json",
        "robust_finetune.json",
        "real_tumor_free.json",
    )
    assert by_name["tumor_boxes"].configs == (*by_name["free"].configs, "real_tumor_boxes.json")
    assert by_name["free"].start_from == "robust" and by_name["cascade"].start_from == "robust"
    assert by_name["tumor_boxes"].start_from == "free"
    assert [stage_epochs(s) for s in RECIPE] == [40, 8, 16, 8, 8, 40]
    assert [stage_epochs(s, 0.01) for s in RECIPE] == [1, 1, 1, 1, 1, 1]
    assert stage_epochs(by_name["box"], 0.25) == 10
    for stage in RECIPE:
        assert all((REPO / "configs" / c).is_file() for c in stage.configs + stage.cuda_configs)
    # with both kinds of real slices the tumor_boxes stage makes model.pt; without tumor boxes the free stage
    # does, without either the robust stage
    assert bundle_sources(plan_stages(True, True)) == {
        "model_box.pt": "box",
        "model.pt": "tumor_boxes",
        "model_outline.pt": "cascade",
    }
    assert bundle_sources(plan_stages(True))["model.pt"] == "free"
    assert bundle_sources(plan_stages(False))["model.pt"] == "robust"
    assert bundle_sources(plan_stages(False, True))["model.pt"] == "robust"  # it needs the tumor-free slices too
    # benchmarks/gpu_session.py runs the same list (gpu_accept.py reads it from there)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_session

    assert gpu_session.RECIPE is RECIPE


@pytest.mark.slow
def test_recipe_trains_every_stage_skips_them_on_rerun_and_resumes_an_interrupted_one(inputs, capsys):
    out = inputs["root"] / "run"
    splits = ("--tumor-free-split", str(inputs["free"]), "--tumor-box-split", str(inputs["boxes"]))
    assert main(recipe_args(inputs, out, *splits)) == 0
    printed = capsys.readouterr().out
    assert "stage 1/6 box: 1 epoch, from scratch" in printed
    assert "stage 2/6 outline: 1 epoch, from box" in printed
    assert "stage 4/6 free: 1 epoch, from robust" in printed
    assert "stage 5/6 tumor_boxes: 1 epoch, from free" in printed
    assert "stage 6/6 cascade: 1 epoch, from robust" in printed
    for stage in STAGES:
        done = json.loads((out / stage / "done.json").read_text())
        assert done["epochs"] == 1 and done["epochs_done"] == 1 and not done["stopped_early"]
        assert (out / stage / "models" / "model.pt").is_file() and (out / stage / "train.log").is_file()
        assert f"stage {STAGES.index(stage) + 1}/6 {stage}: done in" in printed
    free = json.loads((out / "free" / "done.json").read_text())
    assert free["tumor_free_splits"] == [str(inputs["free"])] and free["tumor_box_splits"] == []
    assert free["configs"][-2:] == ["real_tumor_free.json", "tiny.json"]
    boxes = json.loads((out / "tumor_boxes" / "done.json").read_text())
    assert boxes["tumor_free_splits"] == [str(inputs["free"])] and boxes["tumor_box_splits"] == [str(inputs["boxes"])]
    assert boxes["configs"][-3:] == ["real_tumor_free.json", "real_tumor_boxes.json", "tiny.json"]
    models = out / "bundle_models"
    for name, stage in (("model_box.pt", "box"), ("model.pt", "tumor_boxes"), ("model_outline.pt", "cascade")):
        assert (models / name).read_bytes() == (out / stage / "models" / "model.pt").read_bytes()
    assert json.loads((models / "outline_network.json").read_text()) == {
        "refine_ckpt_path": str(models / "model_outline.pt")
    }
    usage = next(line for line in printed.splitlines() if line.strip().startswith("brainseg segment"))
    assert f"--model {models / 'model.pt'} --config {models / 'outline_network.json'}" in usage

    # the printed command works: the retrained model and outline network segment an image
    options = usage.split("--output-dir masks ")[1].split()
    image = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]
    assert main(["segment", str(image), "--output-dir", str(inputs["root"] / "masks"), *options]) == 0
    assert (inputs["root"] / "masks" / f"{image.stem}.png").is_file()
    capsys.readouterr()

    # a rerun skips every finished stage and leaves its weights alone
    before = {s: fingerprint(out / s / "models" / "model.pt") for s in STAGES}
    assert main(recipe_args(inputs, out, *splits)) == 0
    printed = capsys.readouterr().out
    assert all(f"{s}: done earlier" in printed for s in STAGES) and "epoch, from" not in printed
    assert {s: fingerprint(out / s / "models" / "model.pt") for s in STAGES} == before

    # an interrupted stage (its checkpoint there, no done.json) is refused without --resume, continued with it
    (out / "robust" / "done.json").unlink()
    assert (out / "robust" / "models" / "checkpoint_latest.pt").is_file()
    assert main(recipe_args(inputs, out, *splits)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage robust" in err[0] and "add --resume" in err[0]
    assert not (out / "robust" / "done.json").exists()
    assert main(recipe_args(inputs, out, *splits, "--resume")) == 0
    printed = capsys.readouterr().out
    assert (
        f"stage 3/6 robust: 1 epoch, from outline, resuming {out / 'robust' / 'models' / 'checkpoint_latest.pt'}"
        in (printed)
    )
    assert json.loads((out / "robust" / "done.json").read_text())["resumed"] is True
    assert "stage 4/6 free: done earlier" in printed and "stage 1/6 box: done earlier" in printed

    # without --tumor-box-split the tumor_boxes stage is skipped and the free stage's model is model.pt
    assert main(recipe_args(inputs, out, "--tumor-free-split", str(inputs["free"]))) == 0
    printed = capsys.readouterr().out
    assert "stage 5/6 tumor_boxes: skipped, no --tumor-box-split given" in printed
    assert (models / "model.pt").read_bytes() == (out / "free" / "models" / "model.pt").read_bytes()
    # without --tumor-free-split the free stage is skipped too and the robust stage's model is model.pt
    assert main(recipe_args(inputs, out)) == 0
    printed = capsys.readouterr().out
    assert "stage 4/6 free: skipped, no --tumor-free-split given" in printed
    assert "stage 5/6 tumor_boxes: skipped, no --tumor-free-split given" in printed
    assert (models / "model.pt").read_bytes() == (out / "robust" / "models" / "model.pt").read_bytes()


def test_a_bad_tumor_free_split_is_refused_before_any_stage_runs(inputs, capsys):
    bad = inputs["root"] / "bad_free"
    shutil.copytree(inputs["free"], bad)
    (bad / "free1.png").write_text("not a PNG")
    out = inputs["root"] / "refused"
    assert main(recipe_args(inputs, out, "--tumor-free-split", str(bad))) == 1
    err = capsys.readouterr().err
    assert "free1.png" in err and "no stage started" in err
    assert not out.exists()

    # a tumor-free split with annotations would teach tumors: refused too
    annotated = inputs["root"] / "annotated_free"
    shutil.copytree(inputs["free"], annotated)
    coco = json.loads((annotated / "_annotations.coco.json").read_text())
    coco["annotations"] = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10]}]
    (annotated / "_annotations.coco.json").write_text(json.dumps(coco))
    assert main(recipe_args(inputs, out, "--tumor-free-split", str(annotated))) == 1
    assert "has no annotations, this one has 1" in capsys.readouterr().err
    assert not out.exists()

    # a tumor-box split with an image lacking its box would teach that slice as tumor-free: refused
    unboxed = inputs["root"] / "unboxed"
    shutil.copytree(inputs["boxes"], unboxed)
    coco = json.loads((unboxed / "_annotations.coco.json").read_text())
    coco["annotations"] = coco["annotations"][:-1]
    (unboxed / "_annotations.coco.json").write_text(json.dumps(coco))
    args = ("--tumor-free-split", str(inputs["free"]), "--tumor-box-split", str(unboxed))
    assert main(recipe_args(inputs, out, *args)) == 1
    assert "1 have none: free2.png" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--stages", "outline"], "starts from the box stage, which is not done"),
        (["--stages", "box,nope"], "unknown stage nope"),
        (["--stages", "free"], "give --tumor-free-split"),
        (["--stages", "tumor_boxes", "--tumor-free-split", "FREE"], "give --tumor-box-split"),
        (["--epochs", "3"], "--epochs: not with --recipe"),
    ],
)
def test_recipe_refuses_what_it_cannot_do_in_one_line(inputs, capsys, extra, message):
    out = inputs["root"] / "never"
    extra = [str(inputs["free"]) if e == "FREE" else e for e in extra]
    assert main(recipe_args(inputs, out, *extra)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (out / "box").exists() and not (out / "outline").exists()


def test_recipe_options_need_recipe(inputs, capsys):
    args = ["train", "--dataset-dir", str(inputs["dataset"]), "--output-dir", str(inputs["root"] / "plain")]
    assert main([*args, "--tumor-free-split", str(inputs["free"])]) == 1
    assert "--tumor-free-split: only with --recipe" in capsys.readouterr().err
    assert main([*args, "--tumor-box-split", str(inputs["boxes"])]) == 1
    assert "--tumor-box-split: only with --recipe" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--recipe", "--epochs-scale", "0"])
    assert "must be a number above 0" in capsys.readouterr().err


def test_a_time_limit_stops_a_stage_between_epochs_or_within_one():
    """A stage under a deadline (as benchmarks/gpu_session.py runs it): finished epochs are kept, the run stops
    before it would overrun."""
    import time

    from ignite.engine import Engine

    from brainseg_monai.recipe import _StageWatch

    def run(limit: float | None, max_epochs: int) -> _StageWatch:
        engine = Engine(lambda engine, batch: time.sleep(0.05))  # 0.2 s an epoch
        watch = _StageWatch(limit)
        watch.attach(engine)
        engine.run(range(4), max_epochs=max_epochs)
        return watch

    free = run(None, 3)
    assert free.epochs_done == 3 and not free.stopped_early
    between = run(0.5, 10)  # a third epoch would end after 0.5 s
    assert between.stopped_early and 1 <= between.epochs_done <= 2
    within = run(0.1, 10)  # the first epoch already overruns: stopped in it, no epoch finished
    assert within.stopped_early and within.epochs_done == 0
