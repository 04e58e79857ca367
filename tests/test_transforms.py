"""The bundle's real transform chains (parsed from its configs) and the package's own transforms."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLE, SAMPLE_SPLIT
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose
from PIL import Image

from scripts.coco import coco_to_datalist
from scripts.transforms import CocoAnnotationsToMaskd, PadToSquared, SaveMaskd, ToGrayscaled

SIZE = (256, 256)


def parse_config(name: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / name))
    parser["bundle_root"] = str(BUNDLE)
    for key, value in overrides.items():
        parser[key] = value
    return parser


@pytest.fixture(scope="module")
def train_config() -> ConfigParser:
    return parse_config("train.json")


@pytest.fixture(scope="module")
def sample_records() -> list[dict]:
    return coco_to_datalist(SAMPLE_SPLIT)


def load_and_normalize(config: ConfigParser) -> Compose:
    """The image half of the bundle's preprocessing: ``load_image`` + ``image_transforms``."""
    return Compose([config.get_parsed_content("load_image")] + config.get_parsed_content("image_transforms"))


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# --------------------------------------------------------------------------- the bundle's chains


def test_config_builds_the_expected_chains(train_config):
    image_transforms = train_config.get_parsed_content("image_transforms")
    assert isinstance(image_transforms[0], ToGrayscaled)
    assert [type(t).__name__ for t in image_transforms] == [
        "ToGrayscaled",
        "PadToSquared",
        "ShrinkLarged",
        "ScipyAntiAliasResized",
        "NumpyScaleIntensityRangePercentilesd",
        "EnsureTyped",
    ]
    val = train_config.get_parsed_content("validate#preprocessing")
    names = [type(t).__name__ for t in val.transforms]
    assert names[:2] == ["LoadImaged", "CocoAnnotationsToMaskd"] and names[-1] == "Resized"
    train = train_config.get_parsed_content("train#preprocessing")
    # training = the validation chain + random augmentation after it
    assert [type(t).__name__ for t in train.transforms[: len(names)]] == names
    assert {"RandFlipd", "RandAffined"} <= {type(t).__name__ for t in train.transforms[len(names) :]}


def test_the_inference_and_evaluation_chains_pad_the_image_alone_after_the_grey_copy():
    inference = parse_config("inference.json").get_parsed_content("slice_transforms")
    names = [type(t).__name__ for t in inference]
    assert names[:4] == ["ToGrayscaled", "CopyItemsd", "PadToSquared", "ShrinkLarged"]  # the cascade's copy unpadded
    assert list(inference[2].keys) == ["image", "label"] and inference[2].allow_missing_keys  # train.json's own
    evaluation = ConfigParser()
    evaluation.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "evaluate.json")])
    evaluation["bundle_root"] = str(BUNDLE)
    chain = evaluation.get_parsed_content("validate#preprocessing").transforms
    pads = [t for t in chain if isinstance(t, PadToSquared)]
    # the label stays at the input's size: the prediction is compared with it after Invertd undid the padding
    assert len(pads) == 1 and list(pads[0].keys) == ["image"]
    assert [type(t).__name__ for t in chain][:6] == [
        "LoadImaged", "CocoAnnotationsToMaskd", "ToGrayscaled", "CopyItemsd", "PadToSquared", "ShrinkLarged"
    ]  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 6, 10), (1, 9, 4), (1, 7, 7), (3, 5, 8)])
def test_pad_to_square_pads_the_shorter_side_with_the_slices_air_and_inverts(shape):
    image = MetaTensor(torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape) + 5.0)
    pad = PadToSquared(["image", "label"], allow_missing_keys=True)
    out = pad({"image": image})["image"]
    height, width = shape[1:]
    side = max(height, width)
    assert tuple(out.shape) == (shape[0], side, side)
    top, left = (side - height) // 2, (side - width) // 2
    assert torch.equal(out[:, top : top + height, left : left + width], image), "the slice sits in the middle"
    border = torch.ones(out.shape, dtype=torch.bool)
    border[:, top : top + height, left : left + width] = False
    assert torch.all(out[border] == 5.0), "the padding is the slice's lowest value (its air)"
    if height == width:
        assert out is image and not out.applied_operations, "a square slice is left as it was"
    back = pad.inverse({"image": out})["image"]
    assert torch.equal(back, image) and not back.applied_operations


def test_pad_to_square_pads_an_image_and_its_label_alike_and_invertd_takes_the_padding_away():
    from monai.transforms import Invertd, Resized

    image = MetaTensor(torch.rand(1, 40, 64) + 1.0)
    label = MetaTensor(torch.zeros(1, 40, 64))
    label[0, 10:20, 30:50] = 1.0
    image[0, 10:20, 30:50] = 9.0
    chain = Compose([PadToSquared(["image", "label"]), Resized(["image", "label"], (32, 32), mode="nearest")])
    out = chain({"image": image, "label": label})
    assert torch.equal(out["image"][0] == 9.0, out["label"][0] == 1.0), "the label lies on the image's tumor"
    out["pred"] = out["label"].clone()
    back = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)(out)["pred"]
    assert tuple(back.shape) == (1, 40, 64) and torch.equal(back, label)


def test_validation_preprocessing_on_real_sample_records(train_config, sample_records):
    preprocessing = train_config.get_parsed_content("validate#preprocessing")
    assert len(sample_records) == 12
    for rec in sample_records:
        out = preprocessing(rec)
        image, label = out["image"], out["label"]
        name = os.path.basename(rec["image"])
        assert tuple(image.shape) == (1, *SIZE), name
        assert tuple(label.shape) == (1, *SIZE), name
        assert image.dtype == torch.float32, name
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0, name
        assert float(image.min()) == 0.0 and float(image.max()) == pytest.approx(1.0), name  # percentile scaling
        values = set(torch.unique(label).tolist())
        assert values == {0.0, 1.0}, (name, values)
        assert torch.equal(label, label.round()), name
        # the resized mask covers the same fraction of the image as the annotation box
        x, y, w, h = rec["label"]["annotations"][0]["bbox"]
        box_fraction = w * h / (640 * 640)
        assert float(label.float().mean()) == pytest.approx(box_fraction, rel=0.1), name
        assert out["image_id"] == rec["image_id"]


def test_validation_preprocessing_is_deterministic(train_config, sample_records):
    preprocessing = train_config.get_parsed_content("validate#preprocessing")
    a, b = preprocessing(sample_records[0]), preprocessing(sample_records[0])
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_train_preprocessing_on_real_sample_records(train_config, sample_records):
    preprocessing = train_config.get_parsed_content("train#preprocessing")
    for seed, rec in enumerate(sample_records[:4]):
        preprocessing.set_random_state(seed=seed)
        out = preprocessing(rec)
        image, label = out["image"], out["label"]
        assert tuple(image.shape) == (1, *SIZE) and tuple(label.shape) == (1, *SIZE)
        assert image.dtype == torch.float32
        assert torch.isfinite(image).all()
        # intensity augmentation may leave [0, 1] a little (shift 0.1, scale 10%, noise), no more
        assert -0.3 < float(image.min()) and float(image.max()) < 1.4
        assert set(torch.unique(label).tolist()) <= {0.0, 1.0}
        assert float(label.sum()) > 0  # every sample image has a tumor; augmentation keeps it in view


def test_train_preprocessing_is_reproducible_with_a_seed(train_config, sample_records):
    preprocessing = train_config.get_parsed_content("train#preprocessing")
    preprocessing.set_random_state(seed=11)
    a = preprocessing(sample_records[1])
    preprocessing.set_random_state(seed=11)
    b = preprocessing(sample_records[1])
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


# --------------------------------------------------------------------------- augmentation keeps alignment


@pytest.fixture
def bright_box_record(tmp_path) -> dict:
    """A non-square 200x300 image, dark except a bright rectangle that is exactly its annotation box.

    The box is off-centre so that flips move it, and rows/columns differ so a transposition shows.
    """
    h, w = 200, 300
    rows, cols = (30, 80), (40, 130)  # bbox [x=40, y=30, w=90, h=50]
    rng = np.random.default_rng(0)
    image = (20 + rng.integers(0, 10, (h, w))).astype(np.uint8)
    image[rows[0] : rows[1], cols[0] : cols[1]] = 220
    path = save_png(tmp_path / "bright_box.png", image)
    bbox = [cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0]]
    return {
        "image": str(path),
        "label": {"height": h, "width": w, "annotations": [{"segmentation": None, "bbox": bbox, "label": 1}]},
        "image_id": 1,
    }


def test_mask_of_the_bright_box_is_where_the_bright_pixels_are(train_config, bright_box_record):
    out = train_config.get_parsed_content("validate#preprocessing")(bright_box_record)
    mask = out["label"][0].numpy() > 0.5
    bright = out["image"][0].numpy() > 0.5
    assert iou(mask, bright) > 0.9
    rows, cols = np.nonzero(mask)
    # rows 30..79 of 200 and columns 40..129 of 300; the 200 rows padded to 300 (50 above), then 300x300 to 256x256:
    # the box keeps its proportions
    assert abs(rows.min() - 80 * 256 / 300) <= 2 and abs(rows.max() + 1 - 130 * 256 / 300) <= 2
    assert abs(cols.min() - 40 * 256 / 300) <= 2 and abs(cols.max() + 1 - 130 * 256 / 300) <= 2


def test_augmentation_keeps_image_and_mask_aligned(train_config, bright_box_record):
    preprocessing = train_config.get_parsed_content("train#preprocessing")
    masks = set()
    for seed in range(8):
        preprocessing.set_random_state(seed=seed)
        out = preprocessing(bright_box_record)
        image = out["image"][0].numpy()
        mask = out["label"][0].numpy() > 0.5
        assert mask.sum() > 500, seed  # the box stays (mostly) in view
        inside, outside = image[mask].mean(), image[~mask].mean()
        assert inside > 0.6 and outside < 0.3 and inside - outside > 0.5, (seed, inside, outside)
        assert iou(mask, image > 0.5) > 0.85, seed
        masks.add(mask.tobytes())
    assert len(masks) >= 4  # the seeds really moved the box around: alignment was tested, not assumed


def test_augmentation_alignment_with_global_determinism(train_config, bright_box_record):
    from monai.utils import set_determinism

    preprocessing = train_config.get_parsed_content("train#preprocessing")
    try:
        outs = []
        for _ in range(2):
            set_determinism(seed=123)
            preprocessing.set_random_state(seed=123)
            outs.append(preprocessing(bright_box_record))
        assert torch.equal(outs[0]["label"], outs[1]["label"])
        mask = outs[0]["label"][0].numpy() > 0.5
        assert iou(mask, outs[0]["image"][0].numpy() > 0.5) > 0.85
    finally:
        set_determinism(seed=None)


# --------------------------------------------------------------------------- grayscale and bit depth


def _grey_test_image() -> np.ndarray:
    yy, xx = np.mgrid[0:96, 0:128]
    grey = (xx + yy).astype(np.uint8)  # 0..222, no wrap-around
    grey[30:60, 40:90] = 250
    return grey


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_colour_files_load_like_their_grey_version(tmp_path, train_config, mode):
    grey = _grey_test_image()
    pipeline = load_and_normalize(train_config)
    reference = pipeline({"image": str(save_png(tmp_path / "grey.png", grey))})["image"]
    alpha = np.full_like(grey, 255)
    alpha[:10] = 7  # alpha carries no image information and must not leak in
    channels = {"RGB": [grey] * 3, "RGBA": [grey] * 3 + [alpha], "LA": [grey, alpha]}[mode]
    path = save_png(tmp_path / f"colour_{mode}.png", np.stack(channels, axis=-1), mode=mode)
    with Image.open(path) as im:
        assert im.mode == mode
    out = pipeline({"image": str(path)})["image"]
    assert tuple(out.shape) == (1, *SIZE) and out.dtype == torch.float32
    torch.testing.assert_close(out.as_tensor(), reference.as_tensor(), atol=1e-5, rtol=0)


def test_real_rgb_sample_becomes_one_channel(train_config, sample_records):
    load = train_config.get_parsed_content("load_image")
    raw = load({"image": sample_records[0]["image"]})["image"]
    assert tuple(raw.shape) == (3, 640, 640)  # the sample JPEGs are RGB
    grey = ToGrayscaled()({"image": raw})["image"]
    assert tuple(grey.shape) == (1, 640, 640)
    torch.testing.assert_close(grey[0].as_tensor(), raw.float().mean(0).as_tensor())


def test_to_grayscale_of_interleaved_rgb_is_the_channel_mean():
    """A reader's (C, H, W) view of an interleaved (H, W, C) picture: the grey is the mean of R, G and B to the
    bit, as ``mean(dim=0)`` gives it, and a MetaTensor keeps its metadata."""
    from monai.data import MetaTensor

    rng = np.random.default_rng(4)
    for dtype in (np.uint8, np.uint16, np.float32):
        pixels = (rng.random((37, 53, 3)) * (255 if dtype is np.uint8 else 4000)).astype(dtype)
        view = MetaTensor(torch.from_numpy(pixels).permute(2, 0, 1), meta={"filename_or_obj": "x.png"})
        assert not view.is_contiguous()
        grey = ToGrayscaled()({"image": view})["image"]
        assert torch.equal(grey.as_tensor(), view.as_tensor().float().mean(dim=0, keepdim=True))
        assert isinstance(grey, MetaTensor) and grey.meta["filename_or_obj"] == "x.png"


def test_to_grayscale_channel_rules_on_tensors():
    rgba = torch.stack(
        [torch.full((4, 5), 30.0), torch.full((4, 5), 60.0), torch.full((4, 5), 90.0), torch.full((4, 5), 255.0)]
    )
    out = ToGrayscaled()({"image": rgba[:3]})["image"]
    assert tuple(out.shape) == (1, 4, 5) and torch.all(out == 60.0)  # mean of R, G, B
    out = ToGrayscaled()({"image": rgba})["image"]
    assert tuple(out.shape) == (1, 4, 5) and torch.all(out == 60.0)  # alpha dropped, not averaged in
    out = ToGrayscaled()({"image": rgba[[0, 3]]})["image"]
    assert tuple(out.shape) == (1, 4, 5) and torch.all(out == 30.0)  # grey + alpha: the grey channel
    one = torch.arange(20.0).reshape(1, 4, 5)
    assert torch.equal(ToGrayscaled()({"image": one})["image"], one)


def test_to_grayscale_on_uint8_tensors_and_numpy():
    rgb = torch.tensor([10, 20, 40], dtype=torch.uint8)[:, None, None].expand(3, 2, 2)
    out = ToGrayscaled()({"image": rgb})["image"]
    assert out.dtype == torch.float32 and torch.allclose(out, torch.full((1, 2, 2), 70 / 3))
    out = ToGrayscaled()({"image": rgb.numpy()})["image"]
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, 2, 2)
    np.testing.assert_allclose(out, 70 / 3, rtol=1e-6)
    two = np.stack([np.full((2, 2), 9, np.uint8), np.full((2, 2), 255, np.uint8)])
    np.testing.assert_array_equal(ToGrayscaled()({"image": two})["image"], np.full((1, 2, 2), 9))


def test_to_grayscale_keeps_metadata():
    img = MetaTensor(torch.rand(3, 4, 5), meta={"filename_or_obj": "/data/scan_7.jpg"})
    out = ToGrayscaled()({"image": img, "other": 1})
    assert isinstance(out["image"], MetaTensor)
    assert out["image"].meta["filename_or_obj"] == "/data/scan_7.jpg"
    assert out["other"] == 1


def test_to_grayscale_refuses_five_channels_naming_the_image():
    img = MetaTensor(torch.rand(5, 4, 4), meta={"filename_or_obj": "/data/odd_scan.tif"})
    with pytest.raises(ValueError) as info:
        ToGrayscaled()({"image": img})
    msg = str(info.value)
    assert "\n" not in msg
    assert "/data/odd_scan.tif" in msg and "expected 1, 3 or 4 channels" in msg and "got 5" in msg
    with pytest.raises(ValueError, match=r"^image: expected 1, 3 or 4 channels .* got 5$"):
        ToGrayscaled()({"image": np.zeros((5, 4, 4))})  # no metadata: the key is named


def test_to_grayscale_refuses_a_non_2d_image():
    with pytest.raises(ValueError, match=r"expected a 2D image, got array of shape \(1, 4, 4, 4\)"):
        ToGrayscaled()({"image": torch.zeros(1, 4, 4, 4)})


def test_8_bit_and_16_bit_png_normalize_the_same(tmp_path, train_config):
    grey8 = _grey_test_image()
    grey16 = grey8.astype(np.uint16) * 257  # 0..255 -> 0..65535, same relative intensities
    p8 = save_png(tmp_path / "img8.png", grey8)
    p16 = save_png(tmp_path / "img16.png", grey16)
    with Image.open(p16) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    raw16 = train_config.get_parsed_content("load_image")({"image": str(p16)})["image"]
    assert float(raw16.max()) == 250 * 257  # loaded at full 16-bit range, not squeezed to 8 bits
    pipeline = load_and_normalize(train_config)
    out8, out16 = pipeline({"image": str(p8)})["image"], pipeline({"image": str(p16)})["image"]
    assert tuple(out8.shape) == tuple(out16.shape) == (1, *SIZE)
    assert out8.dtype == out16.dtype == torch.float32
    assert float(out16.min()) == 0.0 and float(out16.max()) == pytest.approx(1.0)
    torch.testing.assert_close(out16.as_tensor(), out8.as_tensor(), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- inference inversion and saving


def test_inference_inversion_restores_the_original_size(tmp_path):
    h, w = 300, 500
    image = np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))
    path = save_png(tmp_path / "wide_scan.png", image)
    # the first stage's geometry on fake logits (the outline stage has its own tests, test_tumor_crops.py)
    config = parse_config("inference.json", output_dir=str(tmp_path / "out"), cascade=False)
    data = config.get_parsed_content("preprocessing")({"image": str(path)})
    assert tuple(data["image"].shape) == (1, *SIZE)

    # a fake network output: tumor logits high in the top-left quadrant of the 256x256 grid
    logits = torch.zeros(2, *SIZE)
    logits[0], logits[1] = 4.0, -4.0
    logits[0, :128, :128], logits[1, :128, :128] = -4.0, 4.0  # softmax: 1 - 3e-4 vs 3e-4
    data["pred"] = logits
    out = Compose(config.get_parsed_content("probability_transforms"))(data)
    prob = out["pred"]
    assert tuple(prob.shape) == (2, h, w)  # original (H, W), not transposed, not the network size
    torch.testing.assert_close(prob.sum(0), torch.ones(h, w), atol=1e-4, rtol=0)
    tumor = prob[1].numpy() if not isinstance(prob, MetaTensor) else prob[1].as_tensor().numpy()
    assert (tumor[: h // 2 - 10, : w // 2 - 10] > 0.99).all()  # top-left quadrant of the original image
    assert (tumor[h // 2 + 10 :, :] < 0.01).all()
    assert (tumor[:, w // 2 + 10 :] < 0.01).all()

    # the rest of inference post-processing writes a mask of the original size
    mask_out = Compose(config.get_parsed_content("mask_transforms") + [config.get_parsed_content("save_mask")])(out)
    assert tuple(mask_out["pred"].shape) == (1, h, w)
    written = tmp_path / "out" / "wide_scan.png"
    assert os.listdir(tmp_path / "out") == ["wide_scan.png"]
    with Image.open(written) as im:
        assert im.size == (w, h) and im.mode == "L"
        saved = np.asarray(im)
    assert set(np.unique(saved).tolist()) == {0, 255}
    expected = np.zeros((h, w), bool)
    expected[: h // 2, : w // 2] = True
    assert iou(saved > 0, expected) > 0.97


def _mask_and_image(h: int = 6, w: int = 9):
    mask = np.zeros((h, w), np.uint8)
    mask[1:4, 2:7] = 1
    mask[5, 0] = 1
    image = MetaTensor(torch.zeros(1, h, w), meta={"filename_or_obj": "/scans/case_01.jpg"})
    return mask, image


def test_save_mask_png(tmp_path):
    mask, image = _mask_and_image()
    out_dir = tmp_path / "masks"
    pred = torch.from_numpy(mask[None])
    result = SaveMaskd(keys="pred", output_dir=out_dir)({"image": image, "pred": pred})
    assert result["pred"] is pred  # the record passes through
    assert sorted(os.listdir(out_dir)) == ["case_01.png"]  # no temporary file left behind
    with Image.open(out_dir / "case_01.png") as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (9, 6)
        saved = np.asarray(im)
    assert set(np.unique(saved).tolist()) == {0, 255}
    np.testing.assert_array_equal(saved, mask * 255)


def test_save_mask_nifti(tmp_path):
    mask, image = _mask_and_image()
    SaveMaskd(keys="pred", output_dir=tmp_path, output_ext=".nii.gz")({"image": image, "pred": mask[None]})
    assert sorted(os.listdir(tmp_path)) == ["case_01.nii.gz"]
    nii = nib.load(str(tmp_path / "case_01.nii.gz"))
    data = np.asarray(nii.dataobj)
    assert data.shape == (9, 6, 1)  # NIfTI (x=column, y=row, one slice)
    np.testing.assert_array_equal(data[:, :, 0].T, mask)  # label values, not scaled


def test_save_mask_uses_meta_dict_and_refuses_unnamed_inputs(tmp_path):
    mask, _ = _mask_and_image()
    data = {"image": np.zeros((1, 6, 9)), "image_meta_dict": {"filename_or_obj": "/x/scan.nii.gz"}, "pred": mask}
    SaveMaskd(output_dir=tmp_path)(data)
    with Image.open(tmp_path / "scan.png") as im:  # .nii.gz is one suffix
        np.testing.assert_array_equal(np.asarray(im), mask * 255)
    with pytest.raises(ValueError, match="no filename_or_obj metadata"):
        SaveMaskd(output_dir=tmp_path)({"image": torch.zeros(1, 6, 9), "pred": mask})


def test_annotations_to_mask_then_resize_label_keeps_labels_binary(train_config):
    entry = {"height": 300, "width": 500, "annotations": [{"segmentation": [[10, 10, 490, 10, 250, 290]], "label": 1}]}
    d = CocoAnnotationsToMaskd()({"label": entry})
    d = train_config.get_parsed_content("resize_label")(d)
    assert tuple(d["label"].shape) == (1, *SIZE)
    assert set(torch.unique(d["label"]).tolist()) == {0.0, 1.0}
    json.dumps(entry)  # the record's label stays plain data; the transform did not mutate it
    assert entry["annotations"][0]["label"] == 1


def test_overlays_read_the_grey_the_model_sees(tmp_path):
    """One grey conversion: read_grey (overlays, pictures) equals the bundle's load_image + ToGrayscaled."""
    from brainseg_monai.report import _load_gray
    from scripts.io import read_grey

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    load = Compose([parser.get_parsed_content("load_image"), ToGrayscaled(keys="image")])
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)  # unequal channels: luma and mean differ
    cases = {"rgb.png": rgb, "grey.png": rgb[..., 0], "rgba.png": np.dstack([rgb, np.full((40, 60), 7, np.uint8)])}
    for name, arr in cases.items():
        Image.fromarray(arr).save(tmp_path / name)
        seen = np.asarray(load({"image": str(tmp_path / name)})["image"][0], dtype=np.float32)
        grey = read_grey(tmp_path / name)
        assert grey.shape == (40, 60) and grey.dtype == np.float32
        np.testing.assert_allclose(grey, seen, err_msg=name)
        np.testing.assert_allclose(_load_gray(tmp_path / name), seen, err_msg=name)
    np.testing.assert_allclose(read_grey(tmp_path / "rgb.png"), rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(_load_gray(rgb), rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)


def _scores(prob: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - prob, prob]).astype(np.float32)


def test_post_processing_threshold_is_inclusive_and_holes_are_filled_hand_computed():
    from scripts.transforms import TumorProbabilityToMaskd

    prob = np.zeros((9, 9), np.float32)
    prob[2:7, 2:7] = 0.9
    prob[4, 4] = 0.0  # a hole in the middle of the tumor
    prob[0, 0] = 0.3  # exactly at the threshold: tumor, but a separate speck
    filled = TumorProbabilityToMaskd(threshold=0.3, keep_largest_component=False, fill_holes=True)
    out = np.asarray(filled({"pred": _scores(prob)})["pred"][0])
    assert out[4, 4] == 1, "the hole is filled"
    assert out[0, 0] == 1, "a pixel exactly at the threshold is tumor"
    assert out.sum() == 25 + 1
    unfilled = TumorProbabilityToMaskd(threshold=0.3, keep_largest_component=False, fill_holes=False)
    out = np.asarray(unfilled({"pred": _scores(prob)})["pred"][0])
    assert out[4, 4] == 0 and out.sum() == 24 + 1
    largest = TumorProbabilityToMaskd(threshold=0.3, keep_largest_component=True, fill_holes=True)
    out = np.asarray(largest({"pred": _scores(prob)})["pred"][0])
    assert out[0, 0] == 0 and out.sum() == 25
    just_below = prob.copy()
    just_below[0, 0] = np.nextafter(np.float32(0.3), np.float32(0))
    out = np.asarray(unfilled({"pred": _scores(just_below)})["pred"][0])
    assert out[0, 0] == 0


def test_the_shipped_post_processing_fills_holes_and_keeps_one_component():
    """What inference.json ships for its first stage (not a transform built here): filled, one component,
    inclusive threshold. The outline stage, off here, keeps the first stage's decisions (test_tumor_crops.py)."""
    parser = parse_config("inference.json", cascade=False)
    shipped = Compose(parser.get_parsed_content("mask_transforms"))
    assert [type(t).__name__ for t in shipped.transforms] == ["TumorProbabilityToMaskd"]
    threshold = float(parser.get_parsed_content("threshold"))
    prob = np.zeros((40, 40), np.float32)
    prob[5:30, 5:30] = 0.95
    prob[12:20, 12:20] = 0.0  # a ring
    prob[35:38, 35:38] = 0.95  # a second, smaller component
    out = np.asarray(shipped({"pred": _scores(prob)})["pred"][0])
    assert out[15, 15] == 1 and out[36, 36] == 0 and out.sum() == 25 * 25
    # a region exactly at the threshold is a component, but its confidence (0.3) is under the
    # shipped operating point: found as a candidate, reported as no tumor
    min_confidence = float(parser.get_parsed_content("min_confidence"))
    assert threshold < min_confidence
    edge = np.zeros((40, 40), np.float32)
    edge[5:30, 5:30] = threshold
    result = shipped({"pred": _scores(edge)})
    assert np.asarray(result["pred"][0]).sum() == 0
    assert result["pred_tumor_score"] == pytest.approx(threshold) and result["pred_components"] == []
