"""Synthetic tumor-free slices (scripts.tumor_free) and the training transform that makes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.coco import ANNOTATION_FILE, coco_to_datalist, rasterize_annotations, validate_split
from scripts.transforms import RandTumorFreed
from scripts.tumor_free import remove_tumor, tumor_source_indices, write_tumor_free_split
from conftest import SAMPLE_SPLIT


def _sample(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A real sample slice (grey, (1, H, W)) and its box mask."""
    record = coco_to_datalist(SAMPLE_SPLIT)[index]
    label = record["label"]
    h, w = label["height"], label["width"]
    boxes = rasterize_annotations([{"bbox": a["bbox"]} for a in label["annotations"]], h, w) > 0
    with Image.open(record["image"]) as im:
        grey = np.asarray(im.convert("F"), dtype=np.float32)
    return grey[None], boxes


def _convertible() -> list[int]:
    return [i for i in range(12) if remove_tumor(*_sample(i)) is not None]


def test_remove_tumor_replaces_the_box_and_keeps_the_far_pixels():
    converted = _convertible()
    assert len(converted) >= 4, "a good share of the sample slices can be made tumor-free"
    mirrored = [i for i in converted if remove_tumor(*_sample(i), min_crop=1.0) is not None]
    assert mirrored, "some by the mirror alone"
    for i in mirrored:
        image, boxes = _sample(i)
        out = remove_tumor(image, boxes, min_crop=1.0)
        assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
        inside = np.abs(out[0][boxes] - image[0][boxes]).mean()
        assert inside > 1.0, f"sample {i}: the box was not refilled"
        rows, cols = np.nonzero(boxes)
        far = np.ones_like(boxes)
        pad = 2 * max(np.ptp(rows), np.ptp(cols))
        far[max(0, rows.min() - pad) : rows.max() + pad, max(0, cols.min() - pad) : cols.max() + pad] = False
        if far.any():
            np.testing.assert_allclose(out[0][far], image[0][far], atol=1e-3)


def test_remove_tumor_takes_tissue_from_outside_the_box():
    sources = [(i, tumor_source_indices(_sample(i)[1], _sample(i)[0][0])) for i in range(12)]
    index, (src_rows, src_cols) = next((i, s) for i, s in sources if s is not None)
    boxes = _sample(index)[1]
    assert not boxes[src_rows[boxes], src_cols[boxes]].any()


def test_remove_tumor_keeps_every_channel_aligned():
    image, boxes = _sample(_convertible()[0])
    rgb = np.concatenate([image, image * 0.5, image + 3.0])
    out = remove_tumor(rgb, boxes)
    np.testing.assert_allclose(out[1], out[0] * 0.5, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out[2], out[0] + 3.0, rtol=1e-5, atol=1e-3)


def test_remove_tumor_says_none_when_it_cannot():
    image, boxes = _sample(0)
    assert remove_tumor(image, np.zeros_like(boxes)) is None  # no box
    everything = np.ones_like(boxes)
    assert remove_tumor(image, everything) is None  # no healthy tissue left to copy
    flat = np.full_like(image, 7.0)
    centre = np.zeros_like(boxes)
    centre[200:440, 200:440] = True
    assert remove_tumor(flat, centre) is None  # no head to find, mirror or crop


@pytest.mark.parametrize("kwargs, message", [({"margin": -0.1}, "margin must be in"), ({"feather": 3.0}, "feather in")])
def test_remove_tumor_refuses_bad_options(kwargs, message):
    image, boxes = _sample(0)
    with pytest.raises(ValueError, match=message):
        remove_tumor(image, boxes, **kwargs)
    with pytest.raises(ValueError, match="expected a"):
        remove_tumor(image[0], boxes)


def test_rand_tumor_free_zeroes_the_label_and_keeps_metadata():
    index = _convertible()[0]
    image, boxes = _sample(index)
    data = {"image": torch.from_numpy(image), "label": torch.from_numpy(boxes[None].astype(np.float32) * 2)}
    from monai.data import MetaTensor

    data["image"] = MetaTensor(data["image"], meta={"filename_or_obj": "x.jpg"})
    always = RandTumorFreed(prob=1.0)
    always.set_random_state(0)
    out = always(data)
    assert float(out["label"].sum()) == 0.0
    assert out["image"].meta["filename_or_obj"] == "x.jpg"
    assert not torch.equal(out["image"], data["image"])
    never = RandTumorFreed(prob=0.0)(data)
    assert torch.equal(never["image"], data["image"]) and torch.equal(never["label"], data["label"])


def test_rand_tumor_free_leaves_an_unconvertible_slice_alone():
    image, boxes = _sample(0)
    label = torch.ones((1, *boxes.shape))  # the whole image is "tumor": nothing to copy from
    out = RandTumorFreed(prob=1.0)({"image": torch.from_numpy(image), "label": label})
    assert torch.equal(out["label"], label) and torch.equal(out["image"], torch.from_numpy(image))


def test_write_tumor_free_split_is_a_valid_split_without_annotations(tmp_path: Path):
    out = tmp_path / "tumor_free"
    result = write_tumor_free_split(SAMPLE_SPLIT, out)
    assert result["n_source"] == 12 and result["n_written"] + len(result["skipped"]) == 12
    assert result["n_written"] >= 4
    data = json.loads((out / ANNOTATION_FILE).read_text())
    assert data["annotations"] == [] and len(data["images"]) == result["n_written"]
    assert not [p for p in validate_split(out) if p.severity == "error"]
    for im in data["images"]:
        with Image.open(out / im["file_name"]) as png:
            assert png.mode == "L" and png.size == (im["width"], im["height"])
    assert not list(out.glob(".*")), "no temporary file left behind"


def test_write_tumor_free_split_refuses_its_own_source(sample_split: Path):
    before = sorted(p.name for p in sample_split.iterdir())
    with pytest.raises(ValueError, match="inside the source split"):
        write_tumor_free_split(sample_split, sample_split)
    assert sorted(p.name for p in sample_split.iterdir()) == before
