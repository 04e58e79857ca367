"""The sequence check: slices of another MRI sequence (FLAIR) are told from T1 contrast slices."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLE, REPO, SAMPLE_SPLIT

from scripts.handlers import load_weights
from scripts.input_check import load_input_reference, unusual_volume
from scripts.predictor import BundlePredictor
from scripts.sequence_check import (
    MEMBER_RECIPES,
    OTHER_SEQUENCE_THRESHOLD,
    SEQUENCE_INPUT_SIZE,
    OtherSequenced,
    SequenceClassifier,
    reorder_intensities,
    sequence_input,
    train_sequence_classifier,
)

LGG_VOLUMES = REPO.parent / "shared" / "data" / "lgg_volumes"
WEIGHTS = BUNDLE / "models" / "sequence_check.pt"
REF = {"mean": [0.0], "std": [1.0], "max_distance": 1.2}


def _slices(n: int, order: str, seed: int) -> np.ndarray:
    """Heads in miniature: a ring of scalp around a disc of white matter ringed by grey matter.

    ``order`` "t1": scalp brightest, white matter brighter than grey; "flair": grey brighter than white,
    the scalp dull."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SEQUENCE_INPUT_SIZE, :SEQUENCE_INPUT_SIZE]
    scalp, grey, white = (0.9, 0.4, 0.6) if order == "t1" else (0.45, 0.7, 0.5)
    out = []
    for _ in range(n):
        r = np.hypot(yy - 32 + rng.normal(0, 2), xx - 32 + rng.normal(0, 2))
        radius = rng.uniform(20, 28)
        image = np.select([r <= radius - 8, r <= radius - 2, r <= radius], [white, grey, scalp], 0.0)
        out.append(np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1))
    return np.asarray(out, dtype=np.float32)


def test_sequence_input_averages_any_slice_down_to_the_classifiers_size():
    for shape in [(256, 256), (1, 256, 256), (3, 100, 130), (5, 1, 256, 256)]:
        x = sequence_input(np.ones(shape, np.float32))
        assert x.shape == (shape[0] if len(shape) == 4 else 1, 1, SEQUENCE_INPUT_SIZE, SEQUENCE_INPUT_SIZE)
        assert x.dtype == torch.float32 and torch.allclose(x, torch.ones_like(x))
    plane = np.zeros((256, 256), np.float32)
    plane[:4, :4] = 1.0  # one 4x4 block: one pixel of the 64x64 input, at full value
    assert float(sequence_input(torch.from_numpy(plane))[0, 0, 0, 0]) == pytest.approx(1.0)
    assert torch.isfinite(sequence_input(np.full((64, 64), np.nan))).all()


def test_reorder_intensities_keeps_air_dark_and_reorders_tissues_unless_monotone():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 101, dtype=np.float32)
    for _ in range(20):
        kept = reorder_intensities(ramp, rng, monotone=True)
        assert kept[0] == 0 and np.all(np.diff(kept) >= -1e-6)  # the same order, another windowing
        swapped = reorder_intensities(ramp, rng)
        assert swapped[0] == 0 and swapped.max() <= 1 and np.min(np.diff(swapped)) < 0  # some tissue darker
        assert np.max(np.maximum.accumulate(swapped) - swapped) > 0.2  # by more than a nudge


def test_training_learns_the_tissue_order_and_refuses_empty_or_mismatched_slices():
    model = train_sequence_classifier(_slices(96, "t1", 0), _slices(96, "flair", 1), epochs=15, seed=0)
    assert not model.training
    with torch.no_grad():
        p_t1 = torch.sigmoid(model(torch.from_numpy(_slices(16, "t1", 2))[:, None]))
        p_flair = torch.sigmoid(model(torch.from_numpy(_slices(16, "flair", 3))[:, None]))
    assert float(p_flair.mean()) > 0.5 > float(p_t1.mean())
    with pytest.raises(ValueError, match="two non-empty"):
        train_sequence_classifier(_slices(4, "t1", 0), np.zeros((0, 64, 64), np.float32))
    with pytest.raises(ValueError, match="two non-empty"):
        train_sequence_classifier(_slices(4, "t1", 0), np.zeros((4, 32, 32), np.float32))
    # one member per recipe: a recipe twice gives two members that differ by their random numbers
    twice = train_sequence_classifier(
        _slices(8, "t1", 0), _slices(8, "flair", 1), epochs=1, recipes=MEMBER_RECIPES[:1] * 2
    )
    first, second = (m[0].weight for m in twice.members)
    assert len(twice.members) == 2 and not torch.equal(first, second)
    with pytest.raises(ValueError, match="at least one member recipe"):
        train_sequence_classifier(_slices(4, "t1", 0), _slices(4, "flair", 1), recipes=())


def test_other_sequenced_adds_the_probability_and_keeps_an_earlier_flag():
    network = SequenceClassifier().eval()

    def answer(logit: float) -> None:  # every member says the same of every slice
        for member in network.members:
            torch.nn.init.zeros_(member[-1].weight)
            torch.nn.init.constant_(member[-1].bias, logit)

    answer(3.0)  # another sequence, p = 0.95
    check = OtherSequenced("image", network=network)
    out = check({"image": torch.rand(1, 256, 256)})
    assert out["image_other_sequence"] == pytest.approx(0.9526, abs=1e-4) and out["image_unusual"] is True
    answer(-3.0)
    out = check({"image": torch.rand(1, 256, 256), "image_unusual": True})
    assert out["image_other_sequence"] < 0.1 and out["image_unusual"] is True  # the histogram check's flag stays
    assert check({"image": torch.rand(1, 256, 256)})["image_unusual"] is False
    with pytest.raises(ValueError, match="sequence classifier"):
        OtherSequenced("image")


def test_a_volume_most_of_whose_slices_look_like_another_sequence_is_unusual():
    near = [0.8] * 10  # every distance within max_distance: the histogram check passes the volume
    assert not unusual_volume(near, REF, [False] * 10, [0.2] * 10)
    assert unusual_volume(near, REF, [True] * 6 + [False] * 4, [0.9] * 6 + [0.1] * 4)
    assert not unusual_volume(near, REF, None, [0.9] * 4 + [0.1] * 6)  # 4 of 10: not most
    assert unusual_volume(near, REF, None, [0.9] * 4 + [0.1] * 6, other_sequence_threshold=0.05)
    assert not unusual_volume(near, REF, None, [None, float("nan"), 0.2])  # missing scores left out
    assert unusual_volume(near, REF, None, [0.8, None, 0.9]) and 0.8 > OTHER_SEQUENCE_THRESHOLD


def test_the_shipped_check_passes_the_sample_slices_and_loads_from_the_bundle_config():
    predictor = BundlePredictor(BUNDLE, device="cpu")
    assert predictor.other_sequence_threshold == OTHER_SEQUENCE_THRESHOLD
    results = [predictor.predict_file(p, details=True) for p in sorted(SAMPLE_SPLIT.glob("*.jpg"))]
    scores = [r.input_other_sequence for r in results]
    assert all(0.0 <= s <= 1.0 for s in scores) and np.median(scores) < 0.1, scores
    load_weights(SequenceClassifier(), WEIGHTS)  # the shipped weights fit the config's network


@functools.lru_cache(maxsize=1)
def _checks():
    """The bundle's slice_transforms and input_checks, composed (parsed once)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = "$torch.device('cpu')"
    return Compose([*parser.get_parsed_content("slice_transforms"), *parser.get_parsed_content("input_checks")])


def _volume_checks(path: Path) -> tuple[list[float], list[bool], list[float]]:
    """Each slice's distance, flag and probability of another sequence, as inference checks a volume
    (read_medical_image, one slice per k, the bundle's slice_transforms and input_checks; no segmentation)."""
    from scripts.io import read_medical_image
    from scripts.predictor import _as_channel_first

    array, _ = read_medical_image(path)
    out = [_checks()({"image": _as_channel_first(s)}) for s in array]
    return (
        [d["image_distance"] for d in out],
        [d["image_unusual"] for d in out],
        [d["image_other_sequence"] for d in out],
    )


def test_shipped_check_flags_the_held_apart_flair_volumes_and_passes_their_t1_contrast():
    """The four FLAIR volumes of patients held apart (never used to train the check) are flagged; the T1
    contrast volumes of the same patients pass (all volumes: benchmarks/input_check_volumes.py)."""
    if not (LGG_VOLUMES / "flair").is_dir():
        pytest.skip("../shared/data/lgg_volumes is not present on this machine")
    reference = load_input_reference(BUNDLE / "models" / "input_reference.json")
    for case in ("TCGA_FG_6688_20020215", "TCGA_FG_6691_20020405", "TCGA_FG_7643_20021104", "TCGA_FG_A4MU_20030903"):
        for sequence, expected in (("flair", True), ("t1c", False)):
            distances, flags, other = _volume_checks(LGG_VOLUMES / sequence / f"{case}.nii.gz")
            assert unusual_volume(distances, reference, flags, other) is expected, (sequence, case)


def test_make_sequence_check_trains_from_listed_cases_only_and_writes_the_weights_atomically(tmp_path: Path):
    import json
    import shutil

    import nibabel as nib

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    (tmp_path / "t1c").mkdir()
    (tmp_path / "flair").mkdir()
    for name, order in (("a", "t1"), ("b", "t1"), ("held", "t1")):
        nib.save(
            nib.Nifti1Image(np.moveaxis(_slices(6, order, 5), 0, -1) * 255, np.eye(4)),
            tmp_path / "t1c" / f"{name}.nii.gz",
        )
    nib.save(
        nib.Nifti1Image(np.moveaxis(_slices(6, "flair", 6), 0, -1) * 255, np.eye(4)), tmp_path / "flair" / "a.nii.gz"
    )
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"train": ["a", "b"], "tune": ["held"]}))
    before = (bundle / "models" / "sequence_check.pt").read_bytes()
    argv = [sys.executable, str(REPO / "benchmarks" / "make_sequence_check.py"), str(SAMPLE_SPLIT),
            "--t1c", str(tmp_path / "t1c"), "--other", str(tmp_path / "flair"), "--cases", str(cases),
            "--bundle", str(bundle), "--epochs", "1"]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["t1c_slices"] == 12 + 12 and summary["other_slices"] == 6  # the held-apart case never read
    assert (bundle / "models" / "sequence_check.pt").read_bytes() != before
    load_weights(SequenceClassifier(), bundle / "models" / "sequence_check.pt")
    written = (bundle / "models" / "sequence_check.pt").read_bytes()
    cases.write_text(json.dumps({"train": ["b"]}))  # no FLAIR volume among the listed cases
    run = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0 and "no volume of the cases listed" in run.stderr
    assert (bundle / "models" / "sequence_check.pt").read_bytes() == written  # nothing half-written
    assert not [p for p in (bundle / "models").iterdir() if p.name.startswith(".")]
