"""The cascade: native-resolution crops around a tumor (geometry, training crop, inference refinement)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from scripts.transforms import RandTumorCropd, RefineTumorOutlined
from scripts.tumor_crops import context_square, crop_square, paste_square


def test_context_square_hand_computed():
    # box 20 wide, 10 high at (30, 40): centre (40, 45); side 2 x 20 = 40
    assert context_square([30, 40, 20, 10], 2.0, min_side=8) == (20, 25, 40)
    # a tiny box gets the minimum side, centred
    assert context_square([30, 40, 4, 2], 2.0, min_side=48) == (8, 17, 48)
    # shifted right by a quarter of the side, up by a tenth
    assert context_square([30, 40, 20, 10], 2.0, min_side=8, shift=(0.25, -0.1)) == (30, 21, 40)
    with pytest.raises(ValueError, match="context"):
        context_square([0, 0, 5, 5], 0.0)
    with pytest.raises(ValueError, match="bbox"):
        context_square([0, 0, 0, 5], 2.0)


def test_crop_square_pads_outside_the_image_with_zeros():
    image = torch.arange(1, 101, dtype=torch.float32).reshape(1, 10, 10)
    crop = crop_square(image, -2, 5, 6, 6)
    assert crop.shape == (1, 6, 6)
    assert torch.all(crop[0, :, :2] == 0), "the two columns left of the image are zero"
    assert torch.all(crop[0, 5:, :] == 0), "the row below the image is zero"
    assert torch.equal(crop[0, :5, 2:], image[0, 5:10, 0:4])
    # resized: the side changes, a label keeps its values
    label = (image > 50).float()
    small = crop_square(label, 0, 0, 10, 5, mode="nearest")
    assert small.shape == (1, 5, 5) and set(small.unique().tolist()) == {0.0, 1.0}


def test_paste_square_inverts_crop_square_and_keeps_the_maximum():
    target = np.zeros((10, 10), np.float32)
    target[0, 0] = 0.9
    patch = torch.full((1, 6, 6), 0.5)
    paste_square(target, patch, -2, -2, 6)
    assert target[0, 0] == pytest.approx(0.9), "the larger value stays"
    assert np.all(target[1:4, 1:4] == 0.5) and np.all(target[4:, :] == 0) and np.all(target[:, 4:] == 0)
    # a patch at the network's size is resized to the square
    target2 = np.zeros((10, 10), np.float32)
    paste_square(target2, torch.ones((1, 3, 3)), 2, 2, 6)
    assert target2[2:8, 2:8].min() == pytest.approx(1.0) and target2.sum() == pytest.approx(36)


def _slice_with_box(x: int, y: int, w: int, h: int, size: int = 200) -> dict:
    image = torch.zeros((1, size, size))
    image[0, y : y + h, x : x + w] = 1.0
    label = torch.zeros((1, size, size))
    label[0, y : y + h, x : x + w] = 1.0
    return {"image": MetaTensor(image), "label": MetaTensor(label)}


def test_rand_tumor_crop_centres_the_box_at_the_drawn_scale():
    crop = RandTumorCropd(spatial_size=64, context_range=(2.0, 2.0), max_shift=0.0, min_side=8)
    crop.set_random_state(0)
    out = crop(_slice_with_box(100, 60, 40, 20))
    assert out["image"].shape == (1, 64, 64) and out["label"].shape == (1, 64, 64)
    rows, cols = np.nonzero(out["label"][0].numpy())
    # square side 80 -> 64 px: the 40 px wide box spans half the crop, centred
    assert cols.max() - cols.min() + 1 == 32 and rows.max() - rows.min() + 1 == 16
    assert (cols.min(), rows.min()) == (16, 24)
    assert set(out["label"].unique().tolist()) == {0.0, 1.0}, "labels stay label values"
    assert torch.equal(out["image"] > 0.5, out["label"] > 0), "image and label get the same square"


def test_rand_tumor_crop_varies_scale_and_handles_a_slice_without_boxes():
    crop = RandTumorCropd(spatial_size=64, context_range=(1.5, 3.0), max_shift=0.15, min_side=8)
    crop.set_random_state(1)
    widths = {int(np.ptp(np.nonzero(crop(_slice_with_box(80, 80, 40, 40))["label"][0].numpy())[1])) for _ in range(8)}
    assert len(widths) > 3 and min(widths) >= 64 / 3 - 2 and max(widths) <= 64 / 1.5 + 1
    empty = {"image": MetaTensor(torch.rand(1, 90, 120)), "label": MetaTensor(torch.zeros(1, 90, 120))}
    out = crop(empty)
    assert out["image"].shape == (1, 64, 64) and not out["label"].any()
    with pytest.raises(ValueError, match="context_range"):
        RandTumorCropd(context_range=(3.0, 1.0))


class _BoxNet(torch.nn.Module):
    """A stand-in outline network: tumor wherever its input is bright (the crop geometry is under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.w * (x - 0.5)
        return torch.cat([-logit, logit], dim=1)


def test_refine_tumor_outline_replaces_the_first_stage_outline_inside_the_crop():
    size = 160
    image = torch.zeros((1, size, size))
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = (yy - 80) ** 2 + (xx - 70) ** 2 <= 20**2
    image[0][disk] = 200.0
    first = torch.zeros((1, size, size))
    first[0, 55:105, 45:95] = 1  # the first stage's box-like blob around the disk
    refine = RefineTumorOutlined(network=_BoxNet(), spatial_size=64, context=2.0, min_side=16)
    data = {
        "image_native": image,
        "pred": MetaTensor(first),
        "pred_components": [{"bbox": [45, 55, 50, 50], "area": 2500, "confidence": 0.8}],
        "pred_tumor_score": 0.8,
    }
    out = refine(data)
    mask = out["pred"][0].numpy() > 0
    truth = disk.numpy()
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.95, "the refined outline follows the disk, not the first stage's square"
    assert out["pred_tumor_score"] == 0.8 and out["pred_components"][0]["confidence"] == 0.8
    x, y, w, h = out["pred_components"][0]["bbox"]
    assert abs(w - 41) <= 2 and abs(h - 41) <= 2 and out["pred_components"][0]["area"] == int(mask.sum())


def test_refine_tumor_outline_keeps_the_first_stage_where_the_crop_sees_nothing_or_there_is_no_tumor():
    first = torch.zeros((1, 100, 100))
    first[0, 40:60, 40:60] = 1
    refine = RefineTumorOutlined(network=_BoxNet(), spatial_size=32, min_side=16)
    data = {
        "image_native": torch.zeros((1, 100, 100)),
        "pred": first,
        "pred_components": [{"bbox": [40, 40, 20, 20], "area": 400, "confidence": 0.7}],
    }
    assert torch.equal(refine(data)["pred"], first)
    no_tumor = {"image_native": torch.zeros((1, 100, 100)), "pred": torch.zeros((1, 100, 100)), "pred_components": []}
    assert not refine(no_tumor)["pred"].any()
    with pytest.raises(ValueError, match="network"):
        RefineTumorOutlined()
