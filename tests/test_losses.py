"""Box-supervised losses (scripts.losses), their label transform, and their bundle override."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import BUNDLE, CONFIGS, SMOKE_NETWORK, run_bundle

from scripts.losses import (
    BoxEmptinessLoss,
    BoxPairwiseLoss,
    BoxProjectionLoss,
    BoxSizeLoss,
    BoxSupervisedLoss,
    BoxTightnessLoss,
    LogBarrierScheduler,
    TumorFreeLoss,
    box_instances,
    log_barrier,
)
from scripts.transforms import CocoAnnotationsToBoxMapd, CocoAnnotationsToMaskd

H = W = 16
SATURATED = 20.0  # logit magnitude: probabilities within 2e-9 of 0 or 1


def logits(mask: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) saturated logits of a boolean (B, H, W) foreground mask."""
    m = mask.float() * 2 - 1
    return torch.stack([-SATURATED * m, SATURATED * m], dim=1)


def instance_label(*boxes: tuple[int, int, int, int], image: torch.Tensor | None = None) -> torch.Tensor:
    """(1, C, H, W) label: instance map of boxes (row0, row1, col0, col1), half-open, plus an optional image."""
    inst = torch.zeros(1, 1, H, W)
    for k, (r0, r1, c0, c1) in enumerate(boxes, start=1):
        inst[0, 0, r0:r1, c0:c1] = k
    return inst if image is None else torch.cat([inst, image.reshape(1, 1, H, W)], dim=1)


def region(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, r0:r1, c0:c1] = True
    return mask


BOX = (4, 12, 3, 11)  # 8 x 8 pixels


# --------------------------------------------------------------------------- helpers


def test_log_barrier_matches_the_paper_and_is_continuous():
    t = 5.0
    z = torch.tensor([-0.5, -1 / t**2, 0.0, 1.0])
    out = log_barrier(z, t)
    assert out[0].item() == pytest.approx(-math.log(0.5) / t)
    assert out[1].item() == pytest.approx(-math.log(1 / t**2) / t)  # both branches agree at the switch
    assert out[2].item() == pytest.approx(2 * math.log(t) / t + 1 / t)
    assert out[3].item() == pytest.approx(t + 2 * math.log(t) / t + 1 / t)
    assert log_barrier(torch.tensor([-3.0]), t, clip=True).item() == 0.0
    assert log_barrier(torch.tensor([-3.0]), t).item() < 0  # the plain barrier rewards slack
    with pytest.raises(ValueError, match="t must be > 0"):
        log_barrier(z, 0.0)


def test_box_instances_finds_each_box_and_its_extent():
    boxes = box_instances(instance_label((1, 4, 2, 7), (8, 15, 9, 12)))
    assert boxes.count == 2 and boxes.batch_index.tolist() == [0, 0]
    assert torch.nonzero(boxes.rows[0]).flatten().tolist() == [1, 2, 3]
    assert torch.nonzero(boxes.cols[1]).flatten().tolist() == [9, 10, 11]
    band_rows, band_cols = boxes.band(0.25)  # 7 rows -> cut 1 each side; 3 columns -> cut 0
    assert torch.nonzero(band_rows[1]).flatten().tolist() == [9, 10, 11, 12, 13]
    assert torch.nonzero(band_cols[1]).flatten().tolist() == [9, 10, 11]
    assert box_instances(torch.zeros(2, 1, H, W)).count == 0


# --------------------------------------------------------------------------- projection


def test_projection_is_zero_for_the_box_and_hand_computed_for_a_shift():
    label = instance_label(BOX)
    loss = BoxProjectionLoss()
    assert loss(logits(region(*BOX)), label).item() == pytest.approx(0.0, abs=1e-4)
    # shifted 3 columns right: rows project identically (Dice 0); columns overlap 5 of 8 -> 1 - 2*5/(8+8)
    shifted = region(4, 12, 6, 14)
    assert loss(logits(shifted), label).item() == pytest.approx(1 - 10 / 16, abs=1e-4)


def test_projection_cannot_tell_a_box_from_an_outline_touching_its_sides():
    label = instance_label(BOX)
    outline = region(*BOX)
    outline[0, 6:10, 5:9] = False  # a hollow square still touching all four sides
    cross = region(7, 9, 3, 11) | region(4, 12, 6, 8)  # a plus sign spanning the box
    loss = BoxProjectionLoss()
    values = [loss(logits(m), label).item() for m in (region(*BOX), outline, cross)]
    assert values == pytest.approx([values[0]] * 3, abs=1e-6)
    # ...but a shape that stops short of the box's sides is penalised unless the margin forgives it
    inner = region(6, 10, 5, 9)
    assert loss(logits(inner), label).item() > 0.3
    assert BoxProjectionLoss(margin=0.25)(logits(inner), label).item() == pytest.approx(0.0, abs=1e-4)


# --------------------------------------------------------------------------- emptiness


def test_emptiness_penalises_foreground_outside_boxes_only():
    label = instance_label(BOX)
    dense, both = BoxEmptinessLoss(projection=False), BoxEmptinessLoss()
    assert both(logits(region(*BOX)), label).item() == pytest.approx(0.0, abs=1e-6)
    spill = region(*BOX) | region(0, 2, 0, 16)  # 32 foreground pixels among the 192 outside the box
    cost = 2 * SATURATED  # -log p_background of a foreground pixel: the logit gap
    assert dense(logits(spill), label).item() == pytest.approx(32 * cost / (H * W - 64), rel=1e-4)
    # max-projection: rows 0 and 1 of 16 hold foreground, and every column does
    assert both(logits(spill), label).item() == pytest.approx(32 * cost / 192 + 2 * cost / 16 + cost, rel=1e-4)
    empty_image = torch.zeros(1, 1, H, W)
    nothing = logits(torch.zeros(1, H, W, dtype=torch.bool))
    assert both(nothing, empty_image).item() == pytest.approx(0.0, abs=1e-6)
    # p = 0.5 everywhere on an image without boxes: -log 0.5, densely and in every row and column
    assert dense(torch.zeros(1, 2, H, W), empty_image).item() == pytest.approx(math.log(2), rel=1e-5)
    assert both(torch.zeros(1, 2, H, W), empty_image).item() == pytest.approx(3 * math.log(2), rel=1e-5)


def test_emptiness_projection_sees_a_single_speck():
    empty_image = torch.zeros(1, 1, H, W)
    speck = torch.zeros(1, H, W, dtype=torch.bool)
    speck[0, 3, 3] = True
    dense, both = BoxEmptinessLoss(projection=False), BoxEmptinessLoss()
    assert dense(logits(speck), empty_image).item() == pytest.approx(2 * SATURATED / (H * W), rel=1e-4)
    assert both(logits(speck), empty_image).item() > 2 * (2 * SATURATED / H)  # a row and a column


# --------------------------------------------------------------------------- tightness


def test_tightness_inner_band_is_satisfied_by_a_tumor_inside_a_loose_box():
    label = instance_label(BOX)
    tumor = region(6, 10, 5, 9)  # the inner 4x4 of the 8x8 box: what a loose box around it looks like
    banded = BoxTightnessLoss(margin=0.25)  # band = rows 6..9, columns 5..8; each holds 4 pixels >= 1 + 1
    textbook = BoxTightnessLoss(margin=0.0)
    assert banded(logits(tumor), label).item() == 0.0
    assert textbook(logits(tumor), label).item() > 1.0  # the full-box prior wants the box's edges reached


def test_tightness_penalises_an_empty_band_row_more_as_t_grows():
    label = instance_label(BOX)
    gap = region(6, 10, 5, 9)
    gap[0, 7] = False  # band row 7 holds no foreground
    low, high = BoxTightnessLoss(margin=0.25, t=5.0), BoxTightnessLoss(margin=0.25, t=20.0)
    one_row = log_barrier(torch.tensor(1.0), 5.0).item()  # z = 1 - 0 for the empty row
    assert low(logits(gap), label).item() == pytest.approx(one_row / 8, rel=1e-4)  # 1 of 4 rows + 4 columns
    assert high(logits(gap), label).item() > low(logits(gap), label).item() > 0.5
    # an empty prediction violates every band row and column equally
    nothing = torch.zeros(1, H, W, dtype=torch.bool)
    assert low(logits(nothing), label).item() == pytest.approx(one_row, rel=1e-4)


# --------------------------------------------------------------------------- size


def test_size_prior_penalises_fill_outside_its_range():
    label = instance_label(BOX)  # 64 pixels
    half, full, sliver = region(4, 8, 3, 11), region(*BOX), region(4, 5, 3, 7)  # fill 0.5, 1.0, 4/64
    # Kervadec's plain barrier (the default): -log(f - a_min)/t - log(a_max - f)/t inside the range
    plain = BoxSizeLoss(bounds=(0.2, 0.7), t=5.0)
    expected = (-math.log(0.5 - 0.2) - math.log(0.7 - 0.5)) / 5.0
    assert plain(logits(half), label).item() == pytest.approx(expected, rel=1e-4)
    # full: 0.3 above the upper bound, the linear part; the lower constraint is satisfied by 0.8
    linear = 5.0 * 0.3 + 2 * math.log(5.0) / 5.0 + 1 / 5.0
    assert plain(logits(full), label).item() == pytest.approx(linear - math.log(0.8) / 5.0, rel=1e-4)
    assert plain(logits(sliver), label).item() > 1.5 > 0.6 > plain(logits(half), label).item()
    # scaled and clipped: free well inside the range, steep outside
    scaled = BoxSizeLoss(bounds=(0.2, 0.7), t=5.0, tolerance=0.05, clip=True)
    assert scaled(logits(half), label).item() == pytest.approx(0.0, abs=1e-6)
    assert scaled(logits(full), label).item() == pytest.approx(log_barrier(torch.tensor(6.0), 5.0).item(), rel=1e-4)
    with pytest.raises(ValueError, match="bounds"):
        BoxSizeLoss(bounds=(0.8, 0.2))


# --------------------------------------------------------------------------- pairwise


def test_pairwise_prefers_edges_that_follow_intensity_edges():
    image = torch.full((H, W), 0.2)
    image[:, 7:] = 0.8  # an intensity edge between columns 6 and 7, inside the box
    label = instance_label(BOX, image=image)
    loss = BoxPairwiseLoss(sigma=0.1, dilations=1)
    along_edge = region(4, 12, 7, 11)
    across_flat = region(4, 12, 5, 11)  # its edge sits in the flat dark part
    uniform = region(*BOX)
    a, b, c = (loss(logits(m), label).item() for m in (along_edge, across_flat, uniform))
    assert a < b
    assert c == pytest.approx(0.0, abs=1e-6)  # one label everywhere: every pair agrees
    # hand check of the along-edge case: only the pairs across the edge disagree, with
    # log P(same) = log(2 * exp(-2 * SATURATED));
    # pairs straddling the edge have weight exp(-0.6 / 0.1); with dilation 1, 4 offsets over the 8x8 box
    w_edge = math.exp(-6.0)
    n_edge = 8 + 2 * 7  # horizontal pairs on 8 rows, two diagonals on 7 row pairs
    n_total = 8 * 7 * 2 + 7 * 7 * 2  # horizontal + vertical + two diagonals inside the box
    expected = n_edge * w_edge * (2 * SATURATED - math.log(2)) / ((n_total - n_edge) + n_edge * w_edge)
    assert a == pytest.approx(expected, rel=1e-3)


def test_pairwise_sees_period_two_stripes_only_with_neighbours_at_distance_one():
    image = torch.full((H, W), 0.5)
    label = instance_label(BOX, image=image)
    stripes = region(*BOX)
    stripes[0, 5::2] = False  # every other row of the box
    assert BoxPairwiseLoss(dilations=2)(logits(stripes), label).item() == pytest.approx(0.0, abs=1e-6)
    assert BoxPairwiseLoss(dilations=(1, 2))(logits(stripes), label).item() > 5


def test_pairwise_needs_the_image_channel():
    with pytest.raises(ValueError, match="channel 1"):
        BoxPairwiseLoss()(logits(region(*BOX)), instance_label(BOX))
    with pytest.raises(ValueError, match="channel 1"):
        BoxSupervisedLoss()(logits(region(*BOX)), instance_label(BOX))
    assert BoxSupervisedLoss(pairwise_weight=0.0)(logits(region(*BOX)), instance_label(BOX)).isfinite()


# --------------------------------------------------------------------------- several boxes, gradients, schedules


def test_two_boxes_are_handled_per_box():
    label = instance_label((1, 5, 1, 5), (9, 15, 8, 14))
    both = region(1, 5, 1, 5) | region(9, 15, 8, 14)
    # each box's projection ignores the other box: filling both boxes is perfect
    assert BoxProjectionLoss()(logits(both), label).item() == pytest.approx(0.0, abs=1e-4)
    # filling only the first: box 1 scores 0, box 2 scores 1 + 1 (nothing projects): mean 1
    assert BoxProjectionLoss()(logits(region(1, 5, 1, 5)), label).item() == pytest.approx(1.0, abs=1e-4)
    # size per box: box 1 full (fill 1), box 2 half (fill 0.5) -> the mean of the two barriers
    size = BoxSizeLoss(bounds=(0.2, 0.7), t=5.0)
    half2 = region(1, 5, 1, 5) | region(9, 12, 8, 14)
    one = size(logits(region(1, 5, 1, 5)), instance_label((1, 5, 1, 5))).item()
    half = (-math.log(0.3) - math.log(0.2)) / 5.0
    assert size(logits(half2), label).item() == pytest.approx((one + half) / 2, rel=1e-4)


def test_batches_mix_images_with_and_without_boxes():
    label = torch.cat([instance_label(BOX), torch.zeros(1, 1, H, W)])
    pred = torch.cat([logits(region(*BOX)), logits(torch.zeros(1, H, W, dtype=torch.bool))])
    assert BoxProjectionLoss()(pred, label).item() == pytest.approx(0.0, abs=1e-4)
    assert BoxEmptinessLoss()(pred, label).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        BoxEmptinessLoss()(pred[:1], label)


@pytest.mark.parametrize("with_box", [True, False])
def test_gradients_flow_and_are_finite(with_box):
    torch.manual_seed(0)
    image = torch.rand(2, 1, H, W)
    inst = torch.zeros(2, 1, H, W)
    if with_box:
        inst[0, 0, 2:9, 3:12] = 1
        inst[0, 0, 10:15, 1:6] = 2
        inst[1, 0, 5:14, 5:14] = 1
    pred = torch.randn(2, 2, H, W, requires_grad=True)
    loss_fn = BoxSupervisedLoss()
    loss = loss_fn(pred, torch.cat([inst, image], dim=1))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    expected = {"projection", "emptiness", "tightness", "size", "pairwise"}
    assert set(loss_fn.last_terms) == expected
    # saturated logits must not produce NaN (log of 0 probabilities)
    sat = (logits(torch.rand(2, H, W) > 0.5) * 5).requires_grad_()
    loss_fn(sat, torch.cat([inst, image], dim=1)).backward()
    assert torch.isfinite(sat.grad).all()


def test_sigmoid_and_probability_inputs_agree_with_softmax_logits():
    label = instance_label(BOX, image=torch.rand(H, W))
    z = torch.randn(1, 1, H, W)
    two = torch.cat([torch.zeros_like(z), z], dim=1)  # softmax over (0, z) is sigmoid(z)
    probs = torch.cat([1 - torch.sigmoid(z), torch.sigmoid(z)], dim=1)
    loss = BoxSupervisedLoss()
    a, b = loss(two, label).item(), loss(z, label).item()
    c = BoxSupervisedLoss(softmax=False)(probs, label).item()
    assert a == pytest.approx(b, rel=1e-5) and a == pytest.approx(c, rel=1e-4)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        loss(torch.zeros(1, 3, H, W), label)


def test_set_epoch_schedules_t_and_the_pairwise_warmup():
    loss = BoxSupervisedLoss(t0=5.0, t_mult=2.0, t_max=30.0, pairwise_warmup_epochs=2)
    assert loss.t == 5.0 and loss.pairwise_factor == 0.0
    loss.set_epoch(1.5)
    assert loss.t == 10.0 and loss.tightness.t == loss.size.t == 10.0 and loss.pairwise_factor == 0.75
    loss.set_epoch(7)
    assert loss.t == 30.0 and loss.pairwise_factor == 1.0
    label = instance_label(BOX, image=torch.rand(H, W))
    loss.set_epoch(0)
    loss(torch.randn(1, 2, H, W), label)
    assert "pairwise" not in loss.last_terms  # off during the first step of the warm-up
    with pytest.raises(ValueError, match="weight"):
        BoxSupervisedLoss(size_weight=-1)


def test_log_barrier_scheduler_drives_the_loss_from_an_ignite_engine():
    from ignite.engine import Engine

    loss = BoxSupervisedLoss(pairwise_warmup_epochs=2)
    seen = []
    engine = Engine(lambda e, batch: seen.append((loss.t, loss.pairwise_factor)))
    LogBarrierScheduler(loss, t0=2.0, mult=3.0).attach(engine)
    engine.run([0, 1], max_epochs=3)
    assert [t for t, _ in seen] == pytest.approx([2.0, 2.0, 6.0, 6.0, 18.0, 18.0])
    assert [f for _, f in seen] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    with pytest.raises(TypeError, match="set_epoch"):
        LogBarrierScheduler(torch.nn.MSELoss())


# --------------------------------------------------------------------------- label transform


def test_box_map_transform_draws_each_box_with_its_own_id():
    anns = [
        {"bbox": [2, 1, 4, 3], "label": 1, "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
        {"bbox": [1, 6, 12, 8], "label": 2},  # larger: drawn first, id 1
        {"segmentation": [[9, 8, 11, 8, 10, 11]], "label": 1},  # no bbox: the polygon's extent, on top
    ]
    out = CocoAnnotationsToBoxMapd("label")({"label": {"height": 16, "width": 16, "annotations": anns}})["label"]
    assert tuple(out.shape) == (1, 16, 16) and out.dtype == torch.float32
    inst = out[0].numpy()
    assert set(np.unique(inst)) == {0, 1, 2, 3}
    assert (inst[1:4, 2:6] == 2).all() and (inst == 2).sum() == 12
    boxes = box_instances(out[None])
    assert boxes.count == 3
    assert torch.nonzero(boxes.cols[0]).flatten().tolist() == list(range(1, 13))  # big box intact in extent
    mask = CocoAnnotationsToMaskd("label")({"label": {"height": 16, "width": 16, "annotations": anns[:2]}})["label"]
    two = CocoAnnotationsToBoxMapd("label")({"label": {"height": 16, "width": 16, "annotations": anns[:2]}})["label"]
    assert torch.equal(torch.as_tensor(two) > 0, torch.as_tensor(mask) > 0)
    empty = CocoAnnotationsToBoxMapd("label")({"label": {"height": 4, "width": 5, "annotations": []}})["label"]
    assert tuple(empty.shape) == (1, 4, 5) and not empty.any()
    with pytest.raises(ValueError, match="COCO annotations"):
        CocoAnnotationsToBoxMapd("label")({"label": np.zeros((4, 4))})


# --------------------------------------------------------------------------- the bundle override

BOX_CONFIGS = [
    "configs/train.json",
    str(CONFIGS / "box_supervised.json"),
    str(SMOKE_NETWORK),
    str(CONFIGS / "smoke_cpu.json"),
]


def test_box_supervised_labels_through_the_bundle_preprocessing(tmp_path):
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / c) if c.startswith("configs/") else c for c in BOX_CONFIGS])
    parser["bundle_root"] = str(BUNDLE)
    parser["output_dir"] = str(tmp_path)  # the handlers' TensorBoard writer, kept out of the checkout
    parser["ckpt_dir"] = str(tmp_path / "models")
    record = parser.get_parsed_content("train#datalist")[0]
    train = Compose(parser.get_parsed_content("train#deterministic_transforms"))(dict(record))
    val = parser.get_parsed_content("validate#preprocessing")(dict(record))
    size = tuple(parser.get_parsed_content("spatial_size"))
    assert tuple(train["label"].shape) == (2, *size)  # instance map + image
    assert tuple(val["label"].shape) == (1, *size)  # validation still scores against the box mask
    boxes, masks = torch.as_tensor(train["label"][0]) > 0, torch.as_tensor(val["label"][0]) > 0
    # the map is drawn from the bbox, the mask from the polygon (equal to within half a pixel at 640 px)
    assert (boxes & masks).sum() / (boxes | masks).sum() > 0.8
    assert torch.allclose(torch.as_tensor(train["label"][1]), torch.as_tensor(train["image"][0]))
    assert isinstance(parser.get_parsed_content("loss"), BoxSupervisedLoss)
    handlers = parser.get_parsed_content("train#handlers")
    assert any(isinstance(h, LogBarrierScheduler) for h in handlers)
    assert not any(type(h).__name__ == "CheckpointLoader" for h in handlers)  # pretrained is null by default


@pytest.mark.slow
def test_box_supervised_smoke_training_from_a_pretrained_model(tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(SMOKE_NETWORK)])
    pretrained = tmp_path / "pretrained.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), pretrained)
    proc = run_bundle(
        "--config_file",
        "[" + ",".join(f"'{c}'" for c in BOX_CONFIGS) + "]",
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
        "--pretrained",
        str(pretrained),
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    assert "log-barrier t=5.5" in log  # the scheduler raised t for the second epoch
    assert "Restored all variables from" in log and str(pretrained) in log


# --------------------------------------------------------------------------- tumor-free slices


def test_tumor_free_loss_sees_one_confident_speck_on_a_tumor_free_image():
    loss = TumorFreeLoss(top_fraction=0.01)
    empty = torch.zeros(1, 1, H, W)
    clean = loss(logits(torch.zeros(1, H, W, dtype=torch.bool)), empty)
    speck = loss(logits(region(3, 4, 3, 4)), empty)  # 1 pixel of 256, confident
    assert float(clean) < 1e-6 and float(speck) > 10.0  # about -log(2e-9): the speck alone sets it
    dense = BoxEmptinessLoss(projection=False)(logits(region(3, 4, 3, 4)), empty)
    assert float(dense) < float(speck) / 50  # what the dense emptiness mean makes of the same speck


def test_tumor_free_loss_ignores_images_with_a_box_and_averages_over_tumor_free_ones():
    loss = TumorFreeLoss(top_fraction=0.01)
    pred = logits(torch.cat([region(*BOX), region(3, 4, 3, 4)]))
    labels = torch.cat([instance_label(BOX), torch.zeros(1, 1, H, W)])
    both = loss(pred, labels)
    assert float(both) == pytest.approx(float(loss(pred[1:], labels[1:])))
    assert float(loss(pred[:1], labels[:1])) == 0.0
    with pytest.raises(ValueError, match="top_fraction must be in"):
        TumorFreeLoss(top_fraction=0.0)


def test_box_supervised_loss_adds_the_tumor_free_term_only_when_weighted():
    pred = logits(region(3, 4, 3, 4))
    label = torch.zeros(1, 2, H, W)
    off = BoxSupervisedLoss(pairwise_weight=0.0)
    on = BoxSupervisedLoss(pairwise_weight=0.0, tumor_free_weight=2.0)
    extra = float(on(pred, label)) - float(off(pred, label))
    assert extra == pytest.approx(2.0 * float(TumorFreeLoss()(pred, label)), rel=1e-5)
    assert "tumor_free" in on.last_terms and "tumor_free" not in off.last_terms


def test_robust_finetune_smoke_training(tmp_path):
    """configs/robust_finetune.json layered on the box-supervised recipe trains through monai.bundle."""
    proc = run_bundle(
        "--config_file",
        "["
        + ",".join(f"'{c}'" for c in [*BOX_CONFIGS[:2], str(CONFIGS / "robust_finetune.json"), *BOX_CONFIGS[2:]])
        + "]",
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
        "--tumor_free_prob",
        "0.5",
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (tmp_path / "models" / "model.pt").is_file()
