"""The bundle through MONAI's own entry points: ``python -m monai.bundle run`` and ``ConfigWorkflow``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLE, CONFIGS, SAMPLE_SPLIT, SMOKE_NETWORK, run_bundle, write_volume
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.transforms import Compose
from PIL import Image

from scripts.coco import coco_to_datalist

CONFIG_DIR = BUNDLE / "configs"


def _workflow(workflow_type: str, config_file, **overrides) -> ConfigWorkflow:
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=config_file,
        meta_file=str(CONFIG_DIR / "metadata.json"),
        logging_file=str(CONFIG_DIR / "logging.conf"),
        bundle_root=str(BUNDLE),
        **overrides,
    )


def test_train_properties_are_complete(tmp_path):
    wf = _workflow(
        "train",
        [str(CONFIG_DIR / "train.json"), str(SMOKE_NETWORK), str(CONFIGS / "smoke_cpu.json")],
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
    )
    wf.initialize()
    assert not wf.check_properties()
    # Model Zoo's ids are present and wired: val_interval drives the ValidationHandler
    for key in (
        "bundle_root",
        "device",
        "dataset_dir",
        "train#trainer",
        "train#trainer#max_epochs",
        "train#dataset",
        "train#dataset#data",
        "train#handlers",
        "validate#evaluator",
        "validate#handlers",
        "validate#dataset",
        "validate#dataset#data",
        "val_interval",
        "network_def",
        "loss",
        "optimizer",
        "lr_scheduler",
        "seed",
    ):
        assert key in wf.parser, key
    handlers = wf.parser.get_parsed_content("train#handlers")
    val = [h for h in handlers if type(h).__name__ == "ValidationHandler"]
    assert len(val) == 1 and val[0].interval == wf.parser.get_parsed_content("val_interval")
    wf.finalize()


def test_infer_properties_are_complete():
    wf = _workflow("infer", str(CONFIG_DIR / "inference.json"), load_pretrain=False)
    wf.initialize()
    assert not wf.check_properties()
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "output_dir", "dataset_dir", "ckpt_path"):
        assert key in wf.parser, key
    wf.finalize()


def test_train_and_inference_share_network_and_preprocessing():
    """inference.json must stand alone (Model Zoo, MONAI Label), so it repeats train.json: keep them equal."""
    train = json.loads((CONFIG_DIR / "train.json").read_text())
    infer = json.loads((CONFIG_DIR / "inference.json").read_text())
    for key in ("network_def", "image_transforms", "load_image", "spatial_size", "device", "use_amp"):
        assert train[key] == infer[key], key


def test_smoke_training_writes_cpu_state_dict_and_resumable_state(smoke_model):
    state = torch.load(smoke_model, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    parser = ConfigParser()
    parser.read_config([str(CONFIG_DIR / "train.json"), str(SMOKE_NETWORK)])
    parser.get_parsed_content("network_def").load_state_dict(state)  # fits the configured network

    latest = torch.load(smoke_model.parent / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert set(latest) == {"model", "optimizer", "lr_scheduler", "trainer", "validator"}
    assert latest["trainer"]["iteration"] // latest["trainer"]["epoch_length"] == 2  # ignite stores iterations
    assert -1 < latest["validator"]["best_metric"] <= 1


def test_resume_continues_from_latest_state(smoke_model, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_model.parent, run_dir / "models")
    proc = run_bundle(
        "--config_file",
        f"['configs/train.json','{SMOKE_NETWORK}','{CONFIGS / 'smoke_cpu.json'}']",
        "--ckpt_dir",
        str(run_dir / "models"),
        "--output_dir",
        str(run_dir / "eval"),
        "--resume",
        "true",
        "--train#trainer#max_epochs",
        "3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Epoch: 3/3" in log and "Epoch: 1/3" not in log and "Epoch: 2/3" not in log
    latest = torch.load(run_dir / "models" / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["trainer"]["iteration"] // latest["trainer"]["epoch_length"] == 3


def test_resume_without_state_fails_clearly(tmp_path):
    proc = run_bundle(
        "--config_file",
        f"['configs/train.json','{SMOKE_NETWORK}','{CONFIGS / 'smoke_cpu.json'}']",
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
        "--resume",
        "true",
    )
    assert proc.returncode != 0
    assert "no training state to resume from" in proc.stderr


def test_evaluate_writes_per_image_and_summary_metrics(smoke_model, tmp_path):
    proc = run_bundle(
        "--config_file",
        f"['configs/train.json','configs/evaluate.json','{SMOKE_NETWORK}','{CONFIGS / 'smoke_cpu.json'}']",
        "--ckpt_dir",
        str(smoke_model.parent),
        "--output_dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.reader(open(tmp_path / "val_mean_dice_raw.csv")))
    assert rows[0][0] == "filename" and len(rows) == 1 + 12  # one row per sample image
    values = [float(r[-1]) for r in rows[1:]]
    summary = dict(csv.reader(open(tmp_path / "metrics.csv")))
    assert set(summary) == {"val_mean_dice", "val_mean_iou"}
    assert float(summary["val_mean_dice"]) == pytest.approx(np.mean(values), abs=1e-4)  # the mean of the rows
    iou = [float(r[-1]) for r in list(csv.reader(open(tmp_path / "val_mean_iou_raw.csv")))[1:]]
    assert [round(d, 4) for d in values] == [round(2 * i / (1 + i), 4) for i in iou]  # Dice = 2 IoU / (1 + IoU)
    figures = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert figures["dice_mean"] == pytest.approx(float(summary["val_mean_dice"]), abs=1e-4)


@pytest.mark.parametrize("ext", [".png", ".nii.gz"])
def test_inference_writes_one_mask_per_image_at_input_size(smoke_model, tmp_path, ext):
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:3]:
        shutil.copy(f, images)
    # a non-square grayscale PNG: the mask must come back at its own size
    Image.fromarray(np.asarray(Image.open(f).convert("L"))[100:400, 50:550]).save(images / "crop.png")
    out = tmp_path / "masks"
    proc = run_bundle(
        "--config_file",
        f"['configs/inference.json','{SMOKE_NETWORK}']",
        "--dataset_dir",
        str(images),
        "--ckpt_path",
        str(smoke_model),
        "--output_dir",
        str(out),
        "--output_ext",
        ext,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for src in sorted(images.iterdir()):
        stem = src.name.rsplit(".", 1)[0]
        target = out / (stem + ext)
        assert target.is_file(), target
        with Image.open(src) as im:
            width, height = im.size
        if ext == ".png":
            mask = np.asarray(Image.open(target))
            assert mask.shape == (height, width) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255}
        else:
            import nibabel as nib

            mask = np.asarray(nib.load(target).dataobj)
            assert mask.shape == (width, height, 1)  # NIfTI (x, y, z)
            assert set(np.unique(mask)) <= {0, 1}
    # the masks and the tumor report, nothing else (no temporary files left)
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(ext)) == ["tumor_report.csv"]
    assert len(list(out.iterdir())) == 5
    # the written masks are the predictor's, not just any 0/255 image (an all-black one would pass above)
    from scripts.predictor import BundlePredictor

    predictor = BundlePredictor(BUNDLE, ckpt_path=smoke_model, config_files=[SMOKE_NETWORK], device="cpu")
    for src in sorted(images.iterdir()):
        target = out / (src.name.rsplit(".", 1)[0] + ext)
        if ext == ".png":
            written = np.asarray(Image.open(target)) > 0
        else:
            import nibabel as nib

            written = np.asarray(nib.load(target).dataobj)[..., 0].T > 0
        assert np.array_equal(written, predictor.predict_file(src) > 0), src.name


def test_box_model_override_selects_the_box_trained_weights_and_post_processing():
    """The shipped outline model is the default; bundle/configs/box_model.json brings back the box-trained one."""
    from scripts.predictor import BundlePredictor

    default = BundlePredictor(BUNDLE, device="cpu")
    box = BundlePredictor(BUNDLE, device="cpu", config_files=[CONFIG_DIR / "box_model.json"])
    assert Path(default.ckpt_path).name == "model.pt" and Path(box.ckpt_path).name == "model_box.pt"
    assert box.parser.get_parsed_content("threshold") == 0.6
    image = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]
    outline_mask, box_mask = default.predict_file(image), box.predict_file(image)
    assert outline_mask.shape == box_mask.shape == (640, 640)
    # the outline model draws the tumor, the box-trained model a larger box-like blob
    assert 0 < outline_mask.sum() < box_mask.sum()


@pytest.mark.parametrize("override", [None, "box_model.json"], ids=["outline_model", "box_model"])
def test_bundle_evaluate_measures_what_inference_writes(tmp_path, override):
    """``monai.bundle run`` evaluate applies the shipped post-processing (inference.json's threshold,
    operating point, cascade): the masks it measures are, pixel for pixel, the masks inference writes,
    and ``brainseg evaluate`` reports the figures the workflow computed."""
    from brainseg_monai.metrics import PER_IMAGE_FILE, SUMMARY_FILE, evaluate_split

    extra = [f"configs/{override}"] if override else []
    files = ["configs/train.json", "configs/evaluate.json"] + extra
    proc = run_bundle(
        "--config_file",
        "[" + ",".join(repr(f) for f in files) + "]",
        "--output_dir",
        str(tmp_path / "b"),
        "--masks_dir",
        str(tmp_path / "b" / "masks"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_bundle(
        "--config_file",
        "[" + ",".join(repr(f) for f in ["configs/inference.json"] + extra) + "]",
        "--dataset_dir",
        str(SAMPLE_SPLIT),
        "--output_dir",
        str(tmp_path / "inferred"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = sorted((tmp_path / "b" / "masks").glob("*.png"))
    assert len(measured) == 12
    for mask in measured:
        assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "inferred" / mask.name)))

    summary = json.loads((tmp_path / "b" / SUMMARY_FILE).read_text())
    dice = {Path(r[0]).name: float(r[-1]) for r in list(csv.reader(open(tmp_path / "b" / "val_mean_dice_raw.csv")))[1:]}
    assert summary["dice_mean"] == pytest.approx(np.mean(list(dice.values())), abs=1e-6)
    if override:  # brainseg evaluate runs this workflow whatever the network: checked once, with the shipped one
        return
    evaluation = evaluate_split(SAMPLE_SPLIT, tmp_path / "cli", gallery=False)
    assert {k: v for k, v in evaluation.summary.items() if k not in ("split_dir", "model")} == summary
    assert (tmp_path / "cli" / PER_IMAGE_FILE).read_text() == (tmp_path / "b" / PER_IMAGE_FILE).read_text()


def test_tumor_probability_to_mask_refuses_a_threshold_outside_zero_one():
    from scripts.transforms import TumorProbabilityToMaskd

    with pytest.raises(ValueError, match=r"threshold: must be a tumor probability in \(0, 1\), got 1.5"):
        TumorProbabilityToMaskd(threshold=1.5)
    scores = torch.zeros(2, 6, 6)
    scores[1, 1:3, 1:3] = scores[1, 4, 4] = 0.9  # two regions: the largest is kept
    scores[0] = 1 - scores[1]
    mask = TumorProbabilityToMaskd(threshold=0.5)({"pred": scores})["pred"]
    assert mask.shape == (1, 6, 6) and int(mask.sum()) == 4
    with pytest.raises(ValueError, match=r"pred: expected \(2, H, W\) softmax scores, got shape \(1, 6, 6\)"):
        TumorProbabilityToMaskd()({"pred": mask})


def test_flip_averaging_inferer_averages_the_mirrored_pass():
    from scripts.inferers import FlipAveragingInferer

    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    net = torch.nn.Conv2d(1, 2, kernel_size=(1, 3), padding=(0, 1), bias=False)
    with torch.no_grad():
        out = FlipAveragingInferer([[3]])(x, net)
        expected = (net(x) + torch.flip(net(torch.flip(x, [3])), [3])) / 2
    assert torch.allclose(out, expected)
    symmetric = torch.nn.Identity()
    assert torch.equal(FlipAveragingInferer([[2], [3]])(x, symmetric), x)
    with pytest.raises(ValueError, match="spatial dims"):
        FlipAveragingInferer([[1]])


def test_plain_tensor_inferer_runs_the_network_without_metadata_and_inverts_as_before():
    """The shipped inference chain: the network sees a plain tensor, the prediction still maps back to the image."""
    from monai.data import MetaTensor
    from monai.inferers import SimpleInferer

    from scripts.inferers import PlainTensorInferer

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    assert isinstance(parser.get_parsed_content("inferer"), PlainTensorInferer)
    preprocessing = parser.get_parsed_content("preprocessing")
    item = preprocessing({"image": coco_to_datalist(SAMPLE_SPLIT)[0]["image"]})
    assert isinstance(item["image"], MetaTensor) and item["image"].applied_operations

    seen = []
    net = torch.nn.Conv2d(1, 2, kernel_size=3, padding=1)

    def network(x):
        seen.append(type(x))
        return net(x)

    batch = item["image"][None]
    with torch.no_grad():
        ours, simple = PlainTensorInferer()(batch, network), SimpleInferer()(batch, network)
    assert seen == [torch.Tensor, MetaTensor] and type(ours) is torch.Tensor
    assert torch.equal(ours, simple.as_tensor())
    # Invertd (the bundle's probability_transforms) takes the geometry from the image, not the prediction
    invert = Compose(parser.get_parsed_content("probability_transforms"))
    pred = invert({**item, "pred": ours[0]})["pred"]
    assert pred.shape[1:] == item["image_native"].shape[1:]


@pytest.mark.parametrize("save_last, expected_epoch", [(False, 2), (True, 4)])
def test_best_model_saver_keeps_the_best_epoch_not_the_last(tmp_path, save_last, expected_epoch):
    """Validation metrics 0.5, 0.8, 0.6, 0.7: model.pt must hold epoch 2's weights (or epoch 4's with save_last)."""
    from ignite.engine import Engine, Events

    from scripts.handlers import BestModelSaver

    network = torch.nn.Linear(1, 1, bias=False)
    metrics = {1: 0.5, 2: 0.8, 3: 0.6, 4: 0.7}
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1.0, -1

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _validate(engine):  # what MONAI's evaluator does with its key metric, before the saver runs
        with torch.no_grad():
            network.weight.fill_(float(engine.state.epoch))  # the weights say which epoch they are from
        if metrics[engine.state.epoch] > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = metrics[engine.state.epoch], engine.state.epoch

    BestModelSaver(tmp_path, network, save_last=save_last).attach(evaluator)
    evaluator.run([0], max_epochs=4)
    saved = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert saved["weight"].item() == expected_epoch


def test_a_read_only_array_is_segmented_without_a_warning(smoke_model):
    import warnings

    from scripts.predictor import BundlePredictor

    predictor = BundlePredictor(BUNDLE, ckpt_path=smoke_model, config_files=[SMOKE_NETWORK], device="cpu")
    with Image.open(next(SAMPLE_SPLIT.glob("*.jpg"))) as im:
        image = np.asarray(im.convert("L"))
    image.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # torch warns about non-writable arrays
        mask = predictor.predict_array(image)
    assert mask.shape == image.shape


def test_a_full_disk_during_a_checkpoint_is_one_clear_error_and_the_old_file_stays(tmp_path, monkeypatch):
    """torch reports a full disk as '[enforce fail at inline_container.cc:672]'; the user gets the file and why."""
    import errno
    from collections import namedtuple

    from scripts import handlers

    target = tmp_path / "checkpoint_latest.pt"
    handlers.save_atomic({"w": torch.ones(2)}, target)
    before = target.read_bytes()

    def full_disk(obj, f):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(handlers.torch, "save", full_disk)
    monkeypatch.setattr(handlers.shutil, "disk_usage", lambda folder: usage(10**9, 10**9, 1024))
    with pytest.raises(OSError) as info:
        handlers.save_atomic({"w": torch.zeros(2)}, target)
    assert info.value.errno == errno.ENOSPC
    assert f"cannot write {target}: the disk is full" in str(info.value) and "unchanged" in str(info.value)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def _infer_from_elsewhere(data: Path, out: Path, cwd: Path):
    """``monai.bundle run`` of inference.json with --bundle_root, from a folder outside the bundle."""
    args = ["--config_file", str(CONFIG_DIR / "inference.json"), "--bundle_root", str(BUNDLE)]
    return run_bundle(*args, "--dataset_dir", str(data), "--output_dir", str(out), cwd=cwd)


def _write_dicom_series(folder: Path, slices: np.ndarray) -> None:
    import itk

    folder.mkdir()
    image = itk.image_from_array(np.ascontiguousarray(slices, dtype=np.int16))
    writer = itk.ImageSeriesWriter[type(image), itk.Image[itk.SS, 2]].New(
        Input=image,
        FileNames=[str(folder / f"slice{k:03d}.dcm") for k in range(len(slices))],
        ImageIO=itk.GDCMImageIO.New(),
    )
    writer.Update()


def test_inference_segments_medical_volumes_with_their_geometry(tmp_path):
    """``monai.bundle run inference.json`` over a folder of JPEG, NIfTI, MetaImage, NRRD and a DICOM series.

    Run as a user would, from another folder with the shipped model: each volume's mask carries its
    input's spacing, origin and direction, slice k of it is the predictor's mask of slice k, and the
    tumor report has one row per input.
    """
    import itk

    from scripts.predictor import BundlePredictor
    from scripts.square_pixels import resample_linear, resample_nearest

    grey = np.stack(
        [np.asarray(Image.open(f).convert("L"), np.float32) for f in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:3]]
    )
    data = tmp_path / "cases"
    data.mkdir()
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], data / "photo.jpg")
    permuted = [[0, 1, 0], [1, 0, 0], [0, 0, 1]]  # a direction ITK must keep, not reset to identity
    write_volume(data / "case1.nii.gz", grey, [0.5, 0.5, 3.0], [10.0, -20.0, 5.0], permuted)
    write_volume(data / "case2.mha", grey[::-1], [0.9, 0.9, 1.5], [-3.0, 4.0, 0.0], np.eye(3))
    # rows 1.4 mm apart, columns 0.7 mm: given to the network twice as tall, square pixels
    write_volume(data / "single.nrrd", grey[1][::2], [0.7, 1.4], [1.0, 2.0], np.eye(2))
    _write_dicom_series(data / "series", grey)
    out = tmp_path / "masks"
    proc = _infer_from_elsewhere(data, out, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "case1.nii.gz",
        "case1_slices.csv",
        "case2.nii.gz",
        "case2_slices.csv",
        "photo.png",
        "series.nii.gz",
        "series_slices.csv",
        "single.nii.gz",
        "tumor_report.csv",
    ]
    predictor = BundlePredictor(BUNDLE, device="cpu")
    # case1's direction puts its rows right to left and its columns front to back: each slice is segmented
    # transposed, rows front to back as in the training slices, and its mask turned back
    for name, source, n_slices, transposed in (
        ("case1", "case1.nii.gz", 3, True),
        ("case2", "case2.mha", 3, False),
        ("single", "single.nrrd", 1, False),
        ("series", "series", 3, False),
    ):
        src = data / source
        reference = itk.imread(sorted(str(p) for p in src.iterdir()) if src.is_dir() else str(src), itk.F)
        mask = itk.imread(str(out / f"{name}.nii.gz"))
        assert np.allclose(mask.GetSpacing(), reference.GetSpacing()), name
        assert np.allclose(mask.GetOrigin(), reference.GetOrigin()), name
        assert np.allclose(itk.array_from_matrix(mask.GetDirection()), itk.array_from_matrix(reference.GetDirection()))
        voxels = itk.array_from_image(mask)
        slices = itk.array_from_image(reference)
        assert voxels.shape == slices.shape and set(np.unique(voxels)) <= {0, 1, 2}, name
        planes = [slices] if n_slices == 1 else [s.T if transposed else s for s in slices]
        if name == "single":  # square pixels for the network, each voxel the label at its centre
            planes = [resample_linear(slices, (2 * slices.shape[0], slices.shape[1]))]
        for k, found in enumerate(predictor.predict_arrays(planes, details=True)):
            labels = voxels if n_slices == 1 else voxels[k]
            tumor, possible = (np.asarray(m).astype(bool) for m in (found.mask, found.possible_mask))
            tumor, possible = (resample_nearest(m, labels.shape) for m in (tumor, possible))
            tumor, possible = (tumor.T, possible.T) if transposed else (tumor, possible)
            # the slice's own tumor and possible tumor; its neighbours may only turn a tumor into a possible one
            assert np.array_equal(labels > 0, tumor | possible) and not (labels == 1)[~tumor].any(), (name, k)
    rows = {r["file_name"]: r for r in csv.DictReader(open(out / "tumor_report.csv"))}
    assert set(rows) == {"photo.jpg", "case1.nii.gz", "case2.mha", "single.nrrd", "series"}
    assert rows["case1.nii.gz"]["n_slices"] == "3" and rows["single.nrrd"]["n_slices"] == ""
    for name, n_slices in (("case1", 3), ("case2", 3), ("series", 3)):  # each volume's per-slice report
        voxels = itk.array_from_image(itk.imread(str(out / f"{name}.nii.gz")))
        slices_read = list(csv.DictReader(open(out / f"{name}_slices.csv")))
        assert [int(r["slice"]) for r in slices_read] == list(range(n_slices)), name
        assert [r["tumor_found"] == "True" for r in slices_read] == [bool((v == 1).any()) for v in voxels], name
    assert not (out / "single_slices.csv").exists() and not (out / "photo_slices.csv").exists()
    # as the 2D path finds the tumor on the whole JPEG, it finds it on every other row given square pixels
    assert rows["single.nrrd"]["tumor_found"] == str(bool(predictor.predict_array(grey[1]).any())) == "True"


@pytest.mark.parametrize("problem", ["output_in_input", "two_inputs_one_mask", "nothing_to_segment"])
def test_inference_refuses_a_run_that_would_lose_something_before_any_work(tmp_path, problem):
    data = tmp_path / "cases"
    data.mkdir()
    if problem != "nothing_to_segment":
        shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], data / "scan.jpg")
    if problem == "two_inputs_one_mask":
        shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[1], data / "scan.png")
    out = data if problem == "output_in_input" else tmp_path / "masks"
    before = sorted(p.name for p in data.iterdir())
    proc = _infer_from_elsewhere(data, out, tmp_path)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert str(data) in message and "Traceback" not in proc.stderr
    assert {
        "output_in_input": "inside dataset_dir",
        "two_inputs_one_mask": "both would be written to scan.png",
        "nothing_to_segment": "no images to segment",
    }[problem] in message
    assert sorted(p.name for p in data.iterdir()) == before
    assert not (tmp_path / "masks").exists()
