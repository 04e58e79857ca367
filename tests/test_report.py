"""Figures: the overlay gallery, single overlays and training curves from real TensorBoard logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_SPLIT
from PIL import Image

from brainseg_monai.report import (
    MODEL_COLORS,
    comparison_gallery,
    overlay_gallery,
    pick_gallery,
    read_scalars,
    single_overlay,
    training_curves,
)


def open_png(path: Path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 0
    im = Image.open(path)
    assert im.format == "PNG"
    im.load()
    return im


def square(shape: tuple[int, int], x: int, y: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[y : y + size, x : x + size] = 1
    return mask


def test_pick_gallery_best_median_worst_distinct():
    rows = [{"dice": d} for d in (0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.0, 1.0, None)]
    groups = pick_gallery(rows, n_each=3)
    # by Dice: 1.0(10) 0.9(1) 0.8(5) 0.7(3) 0.6(7) 0.5(0) 0.4(8) 0.3(4) 0.2(6) 0.1(2) 0.0(9); row 11 has none
    assert groups == [("best", [10, 1, 5]), ("median", [7, 0, 8]), ("worst", [9, 2, 6])]
    assert pick_gallery(rows[:2], n_each=3) == [("best", [1, 0])]
    assert pick_gallery([{"dice": None}], n_each=3) == []


def test_overlay_gallery_png_size(tmp_path: Path):
    shape = (48, 64)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(5)]
    masks = [square(shape, 10 + i, 10, 8) for i in range(5)]
    masks[4][:] = 0  # an empty prediction draws no contour and must not fail
    boxes = [[[8.0, 8.0, 14.5, 12.0]] for _ in range(5)]
    outlines = [square(shape, 12, 12, 5), None, None, str(_write(tmp_path / "o.png", square(shape, 1, 1, 3))), None]
    rows = [{"file_name": f"img_{i}.jpg", "dice": d} for i, d in enumerate((0.9, 0.1, 0.5, 0.7, 0.0))]
    out = overlay_gallery(rows, images, masks, boxes, tmp_path / "g" / "gallery.png", outlines=outlines, n_each=2)
    with open_png(Path(out)) as im:
        assert im.size == (2 * 300, 40 + 3 * 340)  # best, median, worst rows of two panels
    with pytest.raises(ValueError, match="align"):
        overlay_gallery(rows, images[:4], masks, boxes, tmp_path / "x.png")


def _write(path: Path, mask: np.ndarray) -> Path:
    Image.fromarray(mask * 255).save(path)
    return path


def test_overlay_gallery_from_files_of_the_sample_split(tmp_path: Path):
    images = sorted(SAMPLE_SPLIT.glob("*.jpg"))[:4]
    masks = []
    for k, path in enumerate(images):
        masks.append(_write(tmp_path / f"{path.stem}.png", square((640, 640), 200 + 10 * k, 250, 90)))
    rows = [{"file_name": p.name, "dice": 0.2 * k} for k, p in enumerate(images)]
    boxes = [[[190.0, 240.0, 120.0, 110.0]] for _ in images]
    with open_png(Path(overlay_gallery(rows, images, masks, boxes, tmp_path / "gallery.png"))) as im:
        assert im.size == (900, 40 + 2 * 340)  # four images: best three and the worst one


def test_single_overlay_keeps_the_image_size(tmp_path: Path):
    image = next(iter(sorted(SAMPLE_SPLIT.glob("*.jpg"))))
    mask = square((640, 640), 250, 320, 60)
    with open_png(Path(single_overlay(image, mask, tmp_path / "one.png", boxes=[[251, 323, 96.25, 67.5]]))) as im:
        assert im.size == (640, 640)
    rgb = np.zeros((48, 64, 3), np.uint8)
    with open_png(Path(single_overlay(rgb, np.zeros((48, 64)), tmp_path / "rgb.png"))) as im:
        assert im.size == (64, 48)
    with pytest.raises(ValueError, match="differ in size"):
        single_overlay(rgb, np.zeros((64, 48)), tmp_path / "bad.png")


@pytest.mark.parametrize(
    "value, dtype, shown",
    [(255, np.uint8, 255), (0, np.uint8, 0), (120, np.uint8, 120), (4000.0, np.float32, 255), (-3.0, np.float32, 0)],
)
def test_an_image_of_one_value_is_drawn_in_its_own_grey(value, dtype, shown, tmp_path: Path):
    """matplotlib draws an image whose range has no width in its lowest colour: an all-white slice came out black."""
    image = np.full((64, 64), value, dtype)
    with open_png(Path(single_overlay(image, np.zeros((64, 64)), tmp_path / "one.png"))) as im:
        top = np.asarray(im.convert("L"))[2:20, 2:62]  # above the caption and the legend
    assert abs(float(top.mean()) - shown) <= 1


def test_training_curves_from_a_real_bundle_run(smoke_model: Path, tmp_path: Path):
    log_dir = smoke_model.parent.parent / "eval"
    scalars = read_scalars(log_dir)
    assert {"train_loss", "val_mean_dice", "val_mean_iou"} <= set(scalars)
    curves = training_curves(log_dir, tmp_path / "curves.png")
    with open_png(tmp_path / "curves.png") as im:
        assert im.size == (1500, 400)
    # smoke_cpu.json: 2 epochs of 12 images in batches of 4
    assert len(scalars["train_loss"]) == 6
    assert [e for e, _ in curves["train_loss"]] == [1, 2]
    for epoch, mean in curves["train_loss"]:
        iterations = [v for s, _, v in scalars["train_loss"] if 3 * (epoch - 1) < s <= 3 * epoch]
        assert mean == pytest.approx(np.mean(iterations))
    assert [e for e, _ in curves["val_mean_dice"]] == [1, 2]
    assert all(0.0 <= v <= 1.0 for _, v in curves["val_mean_dice"])
    # train.json logs the learning rate per epoch; cosine annealing lowers it every epoch
    assert [e for e, _ in curves["learning_rate"]] == [1, 2]
    assert curves["learning_rate"][0][1] > curves["learning_rate"][1][1] > 0


def test_training_curves_with_missing_and_extra_tags(tmp_path: Path):
    from torch.utils.tensorboard import SummaryWriter

    only_dice = tmp_path / "only_dice"
    with SummaryWriter(str(only_dice)) as w:
        for epoch in (1, 2, 3):
            w.add_scalar("val_mean_dice", 0.1 * epoch, epoch, walltime=100.0 + epoch)
    curves = training_curves(only_dice, tmp_path / "a.png")
    assert curves["train_loss"] == []
    assert [e for e, _ in curves["val_mean_dice"]] == [1, 2, 3]
    assert [v for _, v in curves["val_mean_dice"]] == pytest.approx([0.1, 0.2, 0.3])
    assert open_png(tmp_path / "a.png").size == (1500, 400)

    full = tmp_path / "full"
    with SummaryWriter(str(full)) as w:
        for it, loss in enumerate((0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2), start=1):
            w.add_scalar("train_loss", loss, it, walltime=float(it))
        for epoch, end in ((1, 3.5), (2, 6.5)):  # iterations 7-8 belong to an unfinished epoch 3
            w.add_scalar("train_mean_dice", 0.5, epoch, walltime=end)
            w.add_scalar("lr", 1e-3 / epoch, epoch, walltime=end)
    curves = training_curves(full, tmp_path / "b.png")
    assert curves["train_loss"] == [(1, pytest.approx(0.8)), (2, pytest.approx(0.5))]
    assert curves["learning_rate"] == [(1, pytest.approx(1e-3)), (2, pytest.approx(5e-4))]
    assert open_png(tmp_path / "b.png").size == (1500, 400)

    iterations_only = tmp_path / "iterations_only"
    with SummaryWriter(str(iterations_only)) as w:
        for it in (1, 2, 3):
            w.add_scalar("train_loss", 1.0 / it, it, walltime=float(it))
    curves = training_curves(iterations_only, tmp_path / "c.png")
    assert [s for s, _ in curves["train_loss"]] == [1, 2, 3]  # no finished epoch: per iteration

    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        training_curves(tmp_path / "empty", tmp_path / "d.png")


def test_comparison_gallery_draws_each_model_in_its_colour(tmp_path: Path):
    images = sorted(SAMPLE_SPLIT.glob("*.jpg"))[:4]
    box = np.zeros((640, 640), np.uint8)
    box[200:400, 200:400] = 1
    blob = np.zeros((640, 640), np.uint8)
    blob[250:350, 260:340] = 1
    out = comparison_gallery(
        images,
        {"box-trained": [box] * 4, "outline": [blob] * 4},
        [[[200, 200, 200, 200]]] * 4,
        [f"image {k}" for k in range(4)],
        tmp_path / "cmp.png",
        outlines=[blob, None, blob, None],
        columns=3,
    )
    with open_png(Path(out)) as im:
        assert im.size == (900, 40 + 2 * 340)  # 4 panels in 3 columns: 2 rows
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for color in MODEL_COLORS[:2]:  # red and cyan contours are drawn
        from matplotlib.colors import to_rgb

        target = (np.array(to_rgb(color)) * 255).astype(int)
        assert (np.abs(pixels.astype(int) - target).sum(axis=1) < 60).sum() > 100, color
    with pytest.raises(ValueError, match="must align"):
        comparison_gallery(images, {"a": [box]}, [[]] * 4, ["x"] * 4, tmp_path / "bad.png")


def _colour_mask(rgb: np.ndarray, color: str) -> np.ndarray:
    """Pixels of ``color`` blended over black (the lines are drawn half transparent): same hue, not dark."""
    from matplotlib.colors import to_rgb

    target = np.array(to_rgb(color))
    pixels = rgb.astype(float)
    norm = np.linalg.norm(pixels, axis=-1)
    cosine = pixels @ target / np.maximum(norm * np.linalg.norm(target), 1e-9)
    return (cosine > 0.98) & (norm > 100)


def test_single_overlay_draws_the_prediction_the_outline_and_the_boxes_where_they_are(tmp_path: Path):
    from brainseg_monai.report import BOX_COLOR, OUTLINE_COLOR, PRED_COLOR

    grey = np.zeros((400, 400), np.uint8)  # black: the colours stay pure
    pred = np.zeros((400, 400), np.uint8)
    pred[100:200, 220:320] = 1  # the prediction: right half
    outline = np.zeros((400, 400), np.uint8)
    outline[250:350, 40:140] = 1  # the true outline: bottom left
    out = single_overlay(grey, pred, tmp_path / "o.png", boxes=[[20, 230, 140, 140]], outline=outline)
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB"))
    red, green, yellow = (_colour_mask(rgb, c) for c in (PRED_COLOR, OUTLINE_COLOR, BOX_COLOR))
    # each contour lies on its own region's border, nowhere else (the legend sits top left)
    assert red[95:205, 215:325].sum() > 200 and red[100:, :200].sum() == 0 and red[210:, :].sum() == 0
    assert green[245:355, 35:145].sum() > 200 and green[:, 200:].sum() == 0 and green[100:240, :].sum() == 0
    assert yellow[225:375, 15:165].sum() > 200 and yellow[:, 200:].sum() == 0
    assert not red[120:180, 240:300].any(), "a contour, not a filled mask"
    with pytest.raises(ValueError, match="outline"):
        single_overlay(grey, pred, tmp_path / "bad.png", outline=np.zeros((10, 10), np.uint8))


def test_single_overlay_draws_possible_tumors_dashed_and_says_the_verdict(tmp_path: Path):
    from brainseg_monai.report import POSSIBLE_COLOR, PRED_COLOR, overlay_caption

    grey = np.zeros((400, 400), np.uint8)
    labels = np.zeros((400, 400), np.uint8)
    labels[250:350, 250:350] = 2  # a possible tumor only (PNG value 128 reads the same)
    caption = overlay_caption("case_07.jpg", "possible tumor", 0.4321)
    assert caption == "case_07: possible tumor (score 0.43)"
    # a volume's slice: named after the file without its double suffix, with the slice's index
    assert overlay_caption("case_07.nii.gz", "tumor", 0.7249, slice_index=25) == "case_07 slice 25: tumor (score 0.72)"
    long = overlay_caption("x" * 60 + ".nii.gz", "nothing found", 0.0, slice_index=3)
    assert long.startswith("x" * 39 + "… slice 3: ")
    out = single_overlay(grey, labels * 64, tmp_path / "p.png", caption=caption)  # 128: the PNG's possible tumor
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB"))
    orange, red = _colour_mask(rgb, POSSIBLE_COLOR), _colour_mask(rgb, PRED_COLOR)
    border = orange[245:355, 245:355]
    assert border.sum() > 100 and not orange[270:330, 270:330].any()
    top = orange[248:253, 255:345].any(axis=0)  # along the top edge: dashes, not a solid line
    assert 0.3 < top.mean() < 0.9, f"a dashed outline covers part of its edge, got {top.mean():.2f}"
    assert red[120:, :].sum() == 0, "no tumor drawn: only the possible one"
    caption_band = rgb[360:, :, :].astype(int)
    assert (caption_band.min(axis=2) > 200).sum() > 50, "the caption's white text at the image's foot"


@pytest.mark.parametrize("size", [64, 640])
def test_legend_and_caption_scale_with_the_image(tmp_path: Path, size: int):
    """The legend neither covers a small slice nor is cut on it: it takes about the same share of any image."""
    from brainseg_monai.report import overlay_caption

    grey = np.zeros((size, size), np.uint8)
    labels = np.zeros((size, size), np.uint8)
    labels[size * 5 // 8 :, size * 5 // 8 :] = 1
    labels[: size // 4, size - size // 4 :] = 2
    out = single_overlay(grey, labels, tmp_path / "s.png", caption=overlay_caption("x.png", "tumor", 0.9))
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
        assert im.size == (size, size)
    lit = rgb.max(axis=2) > 60  # the legend's box and text on the black image
    legend = lit[: size // 2, : size // 2]
    rows, cols = np.nonzero(legend)
    assert rows.size, "a legend is drawn"
    assert 0.15 < (cols.max() + 1) / size < 0.5 and (rows.max() + 1) / size < 0.3, (rows.max(), cols.max())


def test_gallery_ranks_by_outline_dice_when_there_are_outlines():
    from brainseg_monai.report import _caption, pick_gallery

    # box Dice and outline Dice disagree: the box-shaped mask (row 0) wins on boxes, loses on outlines
    rows = [
        {"file_name": f"{i}.jpg", "dice": d, "outline_dice": o}
        for i, (d, o) in enumerate([(0.9, 0.2), (0.5, 0.9), (0.7, 0.6), (0.3, 0.4), (0.6, None)])
    ]
    by_box = dict(pick_gallery(rows, n_each=1))
    by_outline = dict(pick_gallery(rows, n_each=1, key="outline_dice"))
    assert by_box["best"] == [0] and by_box["worst"] == [3]
    assert by_outline["best"] == [1] and by_outline["worst"] == [0]
    assert 4 not in sum(by_outline.values(), []), "an image without an outline is not ranked by it"
    assert _caption("a.jpg", rows[1]).endswith("outline Dice 0.900, box Dice 0.500")
    assert _caption("a.jpg", rows[4]).endswith("box Dice 0.600")
