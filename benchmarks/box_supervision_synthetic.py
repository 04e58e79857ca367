"""Box supervision on synthetic MRI-like slices with known tumor outlines (a benchmark, not a test).

    OMP_NUM_THREADS=1 python benchmarks/box_supervision_synthetic.py [--size 64] [--epochs 30] [--methods ...]

The real data's "masks" are loose boxes (about 1.8x the tumor's own box area) and the true
outlines of the train split are unknown, so whether a loss learns outlines from boxes is
measured here on phantoms whose outlines are known:

* slices: an elliptic head with a bright skull ring, dark CSF gap, textured brain, dark
  ventricles, smooth bias field, blur and noise;
* tumors (80% of slices): irregular blobs (deformed ellipses), homogeneously bright, faintly
  bright, or ring-enhancing (bright rim, dark core), some with a dark oedema halo; the true
  outline includes the whole lesion (core included), as the figshare masks do;
* labels: LOOSE boxes like the dataset's: the tumor's tight box grown to about 1.8x its area
  (per image ratio 1.8 x lognormal, per-axis jitter) with random placement of the tumor
  inside it (Beta(2, 2) split of the slack), clipped to the image; 20% slices without tumor.

A small MONAI UNet is trained from the same seed with each loss, then scored on held-out
phantoms against the TRUE outlines with the project's own metric functions
(:mod:`brainseg_monai.metrics`): true-shape Dice (tumor slices), Dice against the box,
fill ratio (predicted share of the box), inside fraction (share of the prediction inside the
box), containment F1 (a component counts when most of it lies in the box) and false-positive
slices among tumor-free ones. A first row scores the boxes themselves as a prediction.

Methods: ``box_dice`` (the bundle's default: Dice against the box mask), ``box_sup``
(:class:`scripts.losses.BoxSupervisedLoss`, inner-band tightness), ``tight_full``
(ablation: the textbook tightness and projection on the full box, margin 0), ``boxinst``
(projection + pairwise + emptiness only, no tightness or size prior), and ``oracle`` (Dice
against the true outlines, which box-labelled data never has: the ceiling of this network and
schedule).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from brainseg_monai.metrics import (  # noqa: E402
    components_to_boxes,
    containment_counts,
    dice_iou,
    fill_ratios,
    outside_fraction,
)
from scripts.losses import BoxSupervisedLoss  # noqa: E402

METHODS = ("box_dice", "box_sup", "tight_full", "boxinst", "oracle")


# --------------------------------------------------------------------------- phantoms


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma)
    return field / (field.std() + 1e-8)


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float):
    """A deformed ellipse: boolean mask and the normalised radial coordinate (1 on the outline)."""
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.65, 1.0)
    dy, dx = yy - cy, xx - cx
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / aspect
    theta = np.arctan2(v, u)
    boundary = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        boundary += rng.uniform(-0.14, 0.14) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rho = np.hypot(u, v) / (radius * boundary)
    return rho <= 1.0, rho


def phantom(rng: np.random.Generator, size: int, with_tumor: bool) -> tuple[np.ndarray, np.ndarray]:
    """One MRI-like slice in [0, 1] and its true tumor mask (all False without tumor)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1) * 2 - 1
    cy, cx = rng.normal(0, 0.03, 2)
    ay, ax = rng.uniform(0.82, 0.95), rng.uniform(0.74, 0.88)
    r = np.sqrt(((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2)
    skull_in = rng.uniform(0.86, 0.9)
    img = np.zeros((size, size))
    img[(r <= 1.0) & (r > skull_in)] = 0.85
    img[(r <= skull_in) & (r > skull_in - 0.05)] = 0.12  # CSF gap
    brain = r <= skull_in - 0.05
    texture = 0.06 * _smooth_noise(rng, size, size / 16) + 0.03 * _smooth_noise(rng, size, size / 48)
    img[brain] = (0.45 + texture)[brain]
    for side in (-1, 1):  # ventricles
        vent, _ = _blob(rng, yy, xx, cy + rng.normal(0, 0.03), cx + side * rng.uniform(0.08, 0.14), 0.1)
        img[vent & brain] = 0.18
    truth = np.zeros((size, size), dtype=bool)
    if with_tumor:
        for _ in range(100):
            ty, tx = rng.uniform(-0.55, 0.55, 2)
            if np.hypot((ty - cy) / ay, (tx - cx) / ax) < 0.6:
                break
        radius = rng.uniform(0.1, 0.28)
        truth, rho = _blob(rng, yy, xx, ty, tx, radius)
        truth &= brain
        kind = rng.choice(["bright", "faint", "ring"], p=[0.45, 0.2, 0.35])
        if rng.random() < 0.4:  # oedema halo, hypointense on T1 contrast
            halo = (rho > 1.0) & (rho < rng.uniform(1.25, 1.5)) & brain
            img[halo] -= 0.08
        lesion = img.copy()
        if kind == "bright":
            lesion += rng.uniform(0.25, 0.4)
        elif kind == "faint":
            lesion += rng.uniform(0.12, 0.18)
        else:
            rim = rho > rng.uniform(0.55, 0.75)
            lesion = np.where(rim, lesion + rng.uniform(0.3, 0.4), 0.25 + 0.03 * _smooth_noise(rng, size, 2))
        img[truth] = lesion[truth]
    img = ndimage.gaussian_filter(img, 0.6)
    img *= 1 + 0.08 * _smooth_noise(rng, size, size / 4)  # bias field
    img += rng.normal(0, 0.025, img.shape) * (img > 0.02)
    return np.clip(img, 0, 1).astype(np.float32), truth


def loose_box(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A box mask about 1.8x the area of the tumor's tight box, the tumor placed at random inside it."""
    size = truth.shape[0]
    box = np.zeros_like(truth)
    if not truth.any():
        return box
    area_ratio = 1.8 * np.exp(rng.normal(0, 0.15))
    extents = []
    for axis in (1, 0):  # rows then columns
        idx = np.nonzero(truth.any(axis=axis))[0]
        lo, hi = int(idx.min()), int(idx.max())
        tight = hi - lo + 1
        loose = max(tight, int(round(tight * np.sqrt(area_ratio) * np.exp(rng.normal(0, 0.08)))))
        before = int(round((loose - tight) * rng.beta(2, 2)))
        start = max(0, lo - before)
        stop = min(size, start + loose)
        extents.append((start, stop))
    (r0, r1), (c0, c1) = extents
    box[r0:r1, c0:c1] = True
    return box


def make_set(seed: int, n: int, size: int, tumor_rate: float = 0.8):
    """``n`` phantoms: images (n, 1, S, S), true masks (n, S, S), loose boxes (n, S, S)."""
    rng = np.random.default_rng(seed)
    images, truths, boxes = [], [], []
    for _ in range(n):
        img, truth = phantom(rng, size, rng.random() < tumor_rate)
        images.append(img[None])
        truths.append(truth)
        boxes.append(loose_box(rng, truth))
    return np.stack(images), np.stack(truths), np.stack(boxes)


# --------------------------------------------------------------------------- training


def make_network():
    from monai.networks.nets import UNet

    return UNet(2, 1, 2, channels=(16, 32, 64), strides=(2, 2), num_res_units=1, norm="batch")


def make_loss(method: str, epochs: int):
    from monai.losses import DiceLoss

    if method in ("box_dice", "oracle"):
        return DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    warmup = max(1, epochs // 5)
    if method == "box_sup":
        return BoxSupervisedLoss(margin=0.2, pairwise_warmup_epochs=warmup)
    if method == "tight_full":
        return BoxSupervisedLoss(margin=0.0, projection_margin=0.0, pairwise_warmup_epochs=warmup)
    if method == "boxinst":
        return BoxSupervisedLoss(margin=0.0, tightness_weight=0.0, size_weight=0.0, pairwise_warmup_epochs=warmup)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def train(method: str, data, epochs: int, batch_size: int, lr: float, seed: int) -> torch.nn.Module:
    images, truths, boxes = data
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    net = make_network()
    loss_fn = make_loss(method, epochs)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr / 20)
    x_all = torch.from_numpy(images)
    if method == "box_dice":
        y_all = torch.from_numpy(boxes[:, None].astype(np.float32))
    elif method == "oracle":
        y_all = torch.from_numpy(truths[:, None].astype(np.float32))
    else:  # instance map (one box per phantom) + intensity, the bundle's box-supervised label layout
        y_all = torch.cat([torch.from_numpy(boxes[:, None].astype(np.float32)), x_all], dim=1)
    gen = torch.Generator().manual_seed(seed)
    n = len(x_all)
    steps = (n + batch_size - 1) // batch_size
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for step in range(steps):
            if hasattr(loss_fn, "set_epoch"):
                loss_fn.set_epoch(epoch + step / steps)
            idx = order[step * batch_size : (step + 1) * batch_size]
            x, y = x_all[idx], y_all[idx]
            if torch.rand(1, generator=gen) < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            if torch.rand(1, generator=gen) < 0.5:
                x, y = x.flip(-2), y.flip(-2)
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        sched.step()
    return net


@torch.no_grad()
def predict(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    net.eval()
    return net(torch.from_numpy(images)).argmax(dim=1).numpy().astype(bool)


def score(preds: np.ndarray, truths: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
    """The benchmark's figures for predictions of a test set."""
    true_dice, box_dice, fill, inside = [], [], [], []
    tp = fp = fn = 0
    empty_fp = empty_n = 0
    for pred, truth, box in zip(preds, truths, boxes):
        if not truth.any():
            empty_n += 1
            empty_fp += int(pred.any())
            fp += len(components_to_boxes(pred))
            continue
        true_dice.append(dice_iou(pred, truth)[0])
        box_dice.append(dice_iou(pred, box)[0])
        fill.extend(fill_ratios(pred, [box]))
        out = outside_fraction(pred, [box])
        inside.append(0.0 if out is None else 1.0 - out)
        c = containment_counts(components_to_boxes(pred), [box])
        tp, fp, fn = tp + c.tp, fp + c.fp, fn + c.fn
    return {
        "true_dice": statistics.mean(true_dice),
        "box_dice": statistics.mean(box_dice),
        "fill": statistics.median(fill),
        "inside": statistics.mean(inside),
        "contain_f1": 2 * tp / max(1, 2 * tp + fp + fn),
        "empty_fp": empty_fp / max(1, empty_n),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="phantom side in pixels")
    parser.add_argument("--n-train", type=int, default=640)
    parser.add_argument("--n-test", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the phantoms (test set: +1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds; figures are means")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    train_set = make_set(args.data_seed, args.n_train, args.size)
    test_images, test_truths, test_boxes = make_set(args.data_seed + 1000, args.n_test, args.size)
    with_tumor = test_truths.reshape(len(test_truths), -1).any(axis=1)
    fills = [t.sum() / b.sum() for t, b in zip(test_truths[with_tumor], test_boxes[with_tumor])]
    print(
        f"phantoms {args.size}x{args.size}: train {args.n_train}, test {args.n_test} "
        f"({int(with_tumor.sum())} with tumor); a tumor fills a median {statistics.median(fills):.2f} of its box; "
        f"{args.epochs} epochs, seeds {args.seeds}, {args.threads} thread(s)",
        flush=True,
    )
    rows = [("boxes", score(test_boxes, test_truths, test_boxes), [], 0.0)]
    for method in args.methods:
        start = time.perf_counter()
        scores = []
        for seed in args.seeds:
            net = train(method, train_set, args.epochs, args.batch_size, args.lr, seed)
            scores.append(score(predict(net, test_images), test_truths, test_boxes))
        mean = {k: statistics.mean(s[k] for s in scores) for k in scores[0]}
        per_seed = [s["true_dice"] for s in scores]
        rows.append((method, mean, per_seed, (time.perf_counter() - start) / len(args.seeds)))
        print(f"  {method}: true Dice per seed {' '.join(f'{d:.3f}' for d in per_seed)}", flush=True)
    print(
        f"{'method':<12}{'true Dice':>10}{'(seeds)':>15}{'box Dice':>10}{'fill':>7}{'inside':>8}{'cont F1':>9}"
        f"{'empty FP':>10}{'s/run':>7}"
    )
    for name, s, per_seed, seconds in rows:
        seeds = "/".join(f"{d:.2f}" for d in per_seed) if per_seed else "-"
        print(
            f"{name:<12}{s['true_dice']:>10.3f}{seeds:>15}{s['box_dice']:>10.3f}{s['fill']:>7.2f}{s['inside']:>8.2f}"
            f"{s['contain_f1']:>9.2f}{s['empty_fp']:>10.2f}{seconds:>7.0f}"
        )
    print(
        "true Dice: mean over tumor slices against the true outline; fill: median share of the box predicted; "
        "inside: mean share of the prediction inside the box; cont F1: containment detection F1 (components "
        "mostly inside a box); empty FP: share of tumor-free slices with any prediction"
    )


if __name__ == "__main__":
    main()
