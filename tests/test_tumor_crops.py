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


# --------------------------------------------------------------------------- hand-computed geometry and cascade choices


def test_context_square_centres_odd_sized_boxes_at_their_true_centre():
    # a 3x3 box at the origin: centre (1.5, 1.5), side 9 -> x0 = 1.5 - 4.5 = -3; its centre pixel 1 is the crop's 4th
    assert context_square([0, 0, 3, 3], 3.0, min_side=1) == (-3, -3, 9)
    # 5 wide: centre x 12.5, side 10 -> x0 = round(7.5) = 8; 4 high: centre y 22 -> y0 = 17
    assert context_square([10, 20, 5, 4], 2.0, min_side=1) == (8, 17, 10)
    # a 21x21 box at (50, 50) in a 63 px square: 21 px of context on every side
    crop = RandTumorCropd(spatial_size=63, context_range=(3.0, 3.0), max_shift=0.0, min_side=8)
    crop.set_random_state(0)
    out = crop(_slice_with_box(50, 50, 21, 21))
    rows, cols = np.nonzero(out["label"][0].numpy())
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (21, 41, 21, 41)


def test_crop_and_paste_resize_with_pixel_centres_not_corners():
    # a 2 px ramp [0, 1] to 4 px, bilinear on pixel centres (align_corners=False): 0, 1/4, 3/4, 1
    # (on the corners it would be 0, 1/3, 2/3, 1)
    ramp2 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])[None]
    up = crop_square(ramp2, 0, 0, 2, 4)
    assert up[0].tolist() == [[0.0, 0.25, 0.75, 1.0]] * 4
    pasted = paste_square(np.zeros((4, 4), np.float32), ramp2, 0, 0, 4)
    assert pasted.tolist() == [[0.0, 0.25, 0.75, 1.0]] * 4
    # shrinking 4 -> 2 is antialiased: a triangle of 2 px half-width on pixel centres 1 and 3 weighs
    # pixels 0, 1, 2 by 3/4, 3/4, 1/4 (and 1, 2, 3 by 1/4, 3/4, 3/4): a ramp 0..3 gives 1.25 / 1.75 and 4 / 1.75
    ramp4 = torch.arange(4.0).repeat(4, 1)[None]
    down = crop_square(ramp4, 0, 0, 4, 2)
    assert down[0] == pytest.approx(torch.tensor([[1.25 / 1.75, 4 / 1.75]] * 2), abs=1e-6)
    # crop (4 -> 8 px) then paste back (8 -> 4 px): the inverse on the inner pixels; the edges, clamped, move by 1/8
    back = paste_square(np.zeros((4, 4), np.float32), crop_square(ramp4, 0, 0, 4, 8), 0, 0, 4)
    assert back[0].tolist() == pytest.approx([0.125, 1.0, 2.0, 2.875], abs=1e-6)


def test_refine_scales_the_slice_by_its_percentiles_not_its_extremes():
    # 0..200: numpy's linear 0.5 and 99.5 percentiles are the 2nd and 200th values, 1 and 199
    arr = np.arange(201, dtype=np.float32)
    scaled_tensor = RefineTumorOutlined._scaled(MetaTensor(torch.from_numpy(arr)))
    assert type(scaled_tensor) is torch.Tensor, "a plain tensor for the outline network (no metadata per op)"
    scaled = scaled_tensor.numpy()
    assert scaled[100] == pytest.approx(99 / 198) and scaled[50] == pytest.approx(49 / 198)
    assert scaled[[0, 1, 199, 200]].tolist() == [0.0, 0.0, 1.0, 1.0], "clipped at the percentiles"
    assert not RefineTumorOutlined._scaled(np.full((4, 4), 7.0)).any(), "a constant slice is all zero"


def _two_blob_case(with_overlapping_blob: bool = True) -> dict:
    """A 100x100 slice: the first stage found a 10x10 square at (40, 40); in its crop the image shows a ring
    (6x6 at (42, 42) with a 2x2 hole) that overlaps it, and a larger 15x15 blob at (55, 20) that does not."""
    image = torch.zeros((1, 100, 100))
    if with_overlapping_blob:
        image[0, 42:48, 42:48] = 200.0
        image[0, 44:46, 44:46] = 0.0
    image[0, 20:35, 55:70] = 200.0
    first = torch.zeros((1, 100, 100))
    first[0, 40:50, 40:50] = 1
    components = [{"bbox": [40, 40, 10, 10], "area": 100, "confidence": 0.6}]
    # a second first-stage component far away, more confident: its crop sees nothing
    first[0, 85:90, 85:90] = 1
    components.append({"bbox": [85, 85, 5, 5], "area": 25, "confidence": 0.8})
    return {"image_native": image, "pred": MetaTensor(first), "pred_components": components}


def test_refine_keeps_the_refined_component_that_overlaps_the_first_stage_not_the_largest():
    # squares of side 60 (min_side) at (15, 15) and (58, 58), at the network's size: no resizing, the
    # stand-in network's tumor is exactly the bright pixels
    refine = RefineTumorOutlined(network=_BoxNet(), spatial_size=60, context=2.0, min_side=60)
    out = refine(_two_blob_case())
    expected = np.zeros((100, 100), np.float32)
    expected[42:48, 42:48] = 1  # the ring, its hole filled
    assert np.array_equal(out["pred"][0].numpy(), expected)
    assert isinstance(out["pred"], MetaTensor)
    assert out["pred_components"] == [{"bbox": [42.0, 42.0, 6.0, 6.0], "area": 36, "confidence": 0.8}]
    unfilled = RefineTumorOutlined(network=_BoxNet(), spatial_size=60, min_side=60, fill_holes=False)
    assert unfilled(_two_blob_case())["pred_components"][0]["area"] == 32


def test_refine_keeps_the_first_stage_outline_when_the_crop_finds_only_something_else():
    refine = RefineTumorOutlined(network=_BoxNet(), spatial_size=60, context=2.0, min_side=60)
    case = _two_blob_case(with_overlapping_blob=False)
    first, components = case["pred"].clone(), [dict(c) for c in case["pred_components"]]
    out = refine(case)
    assert torch.equal(out["pred"], first) and out["pred_components"] == components


def test_context_square_refuses_empty_boxes_and_non_positive_contexts_only():
    for bad in ([0, 0, -3, 5], [0, 0, 5, 0], [0, 0, 5, -1]):
        with pytest.raises(ValueError, match="bbox: expected a non-empty"):
            context_square(bad, 2.0)
    with pytest.raises(ValueError, match="context: must be a positive multiple"):
        context_square([0, 0, 5, 5], -1.0)
    assert context_square([0, 0, 1, 1], 2.0, min_side=1) == (0, 0, 2), "a one-pixel box is a box"
    assert context_square([10, 10, 40, 20], 0.5, min_side=1) == (20, 10, 20), "a context below 1 is a context"
    assert context_square([30, 40, 4, 2], 2.0) == (8, 17, 48), "48 px at least by default"
    assert context_square([5, 5, 0.2, 0.2], 1.0, min_side=0) == (5, 5, 1), "one pixel at least"


def test_crop_and_paste_past_every_edge_of_the_image():
    image = torch.arange(1, 101, dtype=torch.float32).reshape(1, 10, 10)  # pixel (r, c) holds 10 r + c + 1
    # a 5 px square over the top-left corner: 2 rows above the image, 3 columns left of it
    corner = crop_square(image, -3, -2, 5, 5)
    expected = torch.zeros((1, 5, 5))
    expected[0, 2:5, 3:5] = torch.tensor([[1.0, 2.0], [11.0, 12.0], [21.0, 22.0]])
    assert torch.equal(corner, expected)
    target = np.zeros((10, 10), np.float32)
    paste_square(target, torch.arange(1, 26, dtype=torch.float32).reshape(1, 5, 5), -3, -2, 5)
    assert target[0:3, 0:2].tolist() == [[14.0, 15.0], [19.0, 20.0], [24.0, 25.0]] and target.sum() == 117.0
    # a 3x3 patch into a one-pixel square: bilinear on pixel centres samples the patch's centre
    one = paste_square(np.zeros((4, 4), np.float32), torch.arange(9.0).reshape(1, 3, 3), 1, 1, 1)
    assert one[1, 1] == 4.0 and one.sum() == 4.0
    # 60 px squares just off each edge (2 px away): nothing of the image, and nothing pasted
    for x0, y0 in ((12, 0), (0, 12), (-62, 0), (0, -62)):
        assert not crop_square(image, x0, y0, 60, 60).any(), (x0, y0)
        untouched = np.arange(100, dtype=np.float32).reshape(10, 10)
        paste_square(untouched, torch.ones((1, 60, 60)), x0, y0, 60)
        assert np.array_equal(untouched, np.arange(100, dtype=np.float32).reshape(10, 10)), (x0, y0)
