"""The COCO data layer: rasterization against hand-computed masks, datalists, category maps, validation.

Every expected mask below is written out by hand. pycocotools' convention, which these
masks follow: pixel (row r, column c) is the unit square [c, c+1) x [r, r+1), and it is
drawn when its centre (c + 0.5, r + 0.5) lies inside the polygon.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLE, SAMPLE_SPLIT
from PIL import Image

from scripts.coco import (
    ANNOTATION_FILE,
    CocoDataError,
    DataProblem,
    coco_to_datalist,
    load_coco_json,
    rasterize_annotations,
    resolve_category_map,
    split_dir,
    validate_split,
)
from scripts.transforms import CocoAnnotationsToMaskd

from brainseg_monai.cli import main

# --------------------------------------------------------------------------- hand-computed masks

# Polygon rectangle x in [2, 6], y in [1, 4] on a 6x8 image: columns 2..5, rows 1..3.
RECT_POLYGON = [2, 1, 6, 1, 6, 4, 2, 4]
RECT_MASK = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)

# Triangle (1,1), (7,1), (4,7) on 8x8. Its sides are x = 1 + (y-1)/2 and x = 7 - (y-1)/2, so
# row r (centre y = r + 0.5) keeps the columns whose centre lies strictly between
# 1 + (r-0.5)/2 and 7 - (r-0.5)/2:  r=1: (1.25, 6.75) -> 1..6;  r=2: (1.75, 6.25) -> 2..5;
# r=3: (2.25, 5.75) -> 2..5;  r=4: (2.75, 5.25) -> 3..4;  r=5: (3.25, 4.75) -> 3..4;
# r=6: (3.75, 4.25) -> none. No pixel centre lies on a side, so there is no tie to break.
TRIANGLE = [1, 1, 7, 1, 4, 7]
TRIANGLE_MASK = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)

# RLE on a 3x4 image. Column-major pixels: col0 = 0 0 0, col1 = 1 1 0, col2 = 1 1 0, col3 = 0 0 0
# -> runs (starting with zeros) 3, 2, 1, 2, 4.
RLE_MASK = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.uint8)
RLE_COUNTS = [3, 2, 1, 2, 4]
# The same runs compressed (pycocotools' LEB128-like string): each run is stored as a delta to
# the run two before it from the 4th run on: 3, 2, 1, 2-2=0, 4-1=3; each small value v is the
# character chr(48 + v).
RLE_COMPRESSED = "32103"


def test_polygon_rectangle_on_integer_coordinates():
    mask = rasterize_annotations([{"segmentation": [RECT_POLYGON]}], 6, 8)
    assert mask.dtype == np.uint8
    assert mask.shape == (6, 8)
    np.testing.assert_array_equal(mask, RECT_MASK)


def test_closed_polygon_repeating_its_first_point_is_the_same_rectangle():
    # Roboflow closes polygons by repeating the first vertex.
    mask = rasterize_annotations([{"segmentation": [RECT_POLYGON + RECT_POLYGON[:2]]}], 6, 8)
    np.testing.assert_array_equal(mask, RECT_MASK)


def test_polygon_triangle():
    mask = rasterize_annotations([{"segmentation": [TRIANGLE]}], 8, 8)
    np.testing.assert_array_equal(mask, TRIANGLE_MASK)


def test_polygon_right_triangle_excludes_pixels_centred_on_the_hypotenuse():
    # (0,0), (8,0), (0,8): inside is x + y < 8; centre (c+.5) + (r+.5) < 8  <=>  r + c <= 6.
    expected = np.array([[1 if r + c <= 6 else 0 for c in range(8)] for r in range(8)], dtype=np.uint8)
    assert expected.sum() == 28  # 7 + 6 + ... + 1
    mask = rasterize_annotations([{"segmentation": [[0, 0, 8, 0, 0, 8]]}], 8, 8)
    np.testing.assert_array_equal(mask, expected)


def test_rle_uncompressed_counts():
    mask = rasterize_annotations([{"segmentation": {"size": [3, 4], "counts": RLE_COUNTS}}], 3, 4)
    np.testing.assert_array_equal(mask, RLE_MASK)


@pytest.mark.parametrize("counts", [RLE_COMPRESSED, RLE_COMPRESSED.encode("ascii")], ids=["str", "bytes"])
def test_rle_compressed_counts(counts):
    mask = rasterize_annotations([{"segmentation": {"size": [3, 4], "counts": counts}}], 3, 4)
    np.testing.assert_array_equal(mask, RLE_MASK)


def test_rle_compressed_counts_survive_a_json_round_trip():
    ann = json.loads(json.dumps({"segmentation": {"size": [3, 4], "counts": RLE_COMPRESSED}, "label": 1}))
    np.testing.assert_array_equal(rasterize_annotations([ann], 3, 4), RLE_MASK)


@pytest.mark.parametrize(
    "ann",
    [
        {"bbox": [2, 1, 4, 3]},
        {"bbox": [2, 1, 4, 3], "segmentation": []},
        {"bbox": [2, 1, 4, 3], "segmentation": None},
        {"bbox": [2.0, 1.0, 4.0, 3.0], "segmentation": {}},
    ],
    ids=["no-segmentation", "empty-list", "null", "empty-dict"],
)
def test_bbox_only_annotation_is_drawn_as_its_box(ann):
    # bbox [x=2, y=1, w=4, h=3] is the same rectangle as RECT_POLYGON.
    np.testing.assert_array_equal(rasterize_annotations([ann], 6, 8), RECT_MASK)


def test_several_annotations_are_merged_later_ones_on_top():
    anns = [
        {"segmentation": [TRIANGLE], "label": 1},
        {"bbox": [0, 0, 3, 2], "label": 2},  # columns 0..2, rows 0..1: overlaps the triangle at (1,1), (1,2)
        {"segmentation": [[5, 5, 8, 5, 8, 8, 5, 8]], "label": 3},  # columns 5..7, rows 5..7
    ]
    expected = np.array(
        [
            [2, 2, 2, 0, 0, 0, 0, 0],
            [2, 2, 2, 1, 1, 1, 1, 0],
            [0, 0, 1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 1, 3, 3, 3],
            [0, 0, 0, 0, 0, 3, 3, 3],
            [0, 0, 0, 0, 0, 3, 3, 3],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(rasterize_annotations(anns, 8, 8), expected)


def test_one_annotation_with_two_polygons_draws_both():
    mask = rasterize_annotations([{"segmentation": [[0, 0, 2, 0, 2, 2, 0, 2], [5, 3, 8, 3, 8, 6, 5, 6]]}], 6, 8)
    expected = np.zeros((6, 8), np.uint8)
    expected[0:2, 0:2] = 1
    expected[3:6, 5:8] = 1
    np.testing.assert_array_equal(mask, expected)


def test_no_annotation_gives_an_empty_mask():
    mask = rasterize_annotations([], 5, 7)
    assert mask.shape == (5, 7)
    assert mask.dtype == np.uint8
    assert not mask.any()


def test_real_sample_annotations_fill_their_box_to_within_one_pixel():
    data = json.loads((SAMPLE_SPLIT / ANNOTATION_FILE).read_text())
    boxes = {a["image_id"]: a["bbox"] for a in data["annotations"]}
    records = coco_to_datalist(SAMPLE_SPLIT)
    assert len(records) == len(boxes) == 12
    for rec in records:
        h, w = rec["label"]["height"], rec["label"]["width"]
        mask = rasterize_annotations(rec["label"]["annotations"], h, w).astype(bool)
        x, y, bw, bh = boxes[rec["image_id"]]
        outer = np.zeros((h, w), bool)  # the box grown by one pixel
        top, left = max(0, math.floor(y) - 1), max(0, math.floor(x) - 1)
        outer[top : math.ceil(y + bh) + 1, left : math.ceil(x + bw) + 1] = True
        inner = np.zeros((h, w), bool)  # the box shrunk by one pixel
        inner[math.ceil(y) + 1 : math.floor(y + bh) - 1, math.ceil(x) + 1 : math.floor(x + bw) - 1] = True
        assert inner.sum() > 1000, rec["image"]
        assert not (mask & ~outer).any(), f"{rec['image']}: mask spills outside its box"
        assert not (inner & ~mask).any(), f"{rec['image']}: mask leaves holes inside its box"
        assert abs(int(mask.sum()) - bw * bh) <= 2 * (bw + bh) + 4, rec["image"]


def test_annotations_to_mask_transform_matches_rasterize():
    entry = {"height": 8, "width": 8, "annotations": [{"segmentation": [TRIANGLE], "bbox": [1, 1, 6, 6], "label": 1}]}
    out = CocoAnnotationsToMaskd(keys="label")({"image": "img.png", "label": entry, "image_id": 3})
    label = out["label"]
    assert isinstance(label, torch.Tensor)
    assert tuple(label.shape) == (1, 8, 8)
    np.testing.assert_array_equal(label[0].numpy(), TRIANGLE_MASK)
    assert out["image"] == "img.png" and out["image_id"] == 3  # other keys untouched


def test_annotations_to_mask_transform_empty_annotations():
    out = CocoAnnotationsToMaskd()({"label": {"height": 4, "width": 6, "annotations": []}})
    assert tuple(out["label"].shape) == (1, 4, 6)
    assert int(out["label"].sum()) == 0


def test_annotations_to_mask_transform_refuses_other_labels_and_allows_missing_keys():
    with pytest.raises(ValueError, match="label: expected COCO annotations"):
        CocoAnnotationsToMaskd()({"label": "mask.png"})
    with pytest.raises(KeyError):
        CocoAnnotationsToMaskd()({"image": "x.png"})
    assert CocoAnnotationsToMaskd(allow_missing_keys=True)({"image": "x.png"}) == {"image": "x.png"}


# --------------------------------------------------------------------------- helpers for split edits


def read_json(split: Path) -> dict:
    return json.loads((split / ANNOTATION_FILE).read_text())


def write_json(split: Path, data: dict) -> None:
    replace_file(split / ANNOTATION_FILE, json.dumps(data).encode())


def replace_file(path: Path, content: bytes) -> None:
    """Overwrite a (possibly read-only, copied) file."""
    if path.exists():
        path.unlink()
    path.write_bytes(content)


def errors_of(split: Path) -> list[DataProblem]:
    return [p for p in validate_split(split) if p.severity == "error"]


def expect_one_error(split: Path, where: str, field: str, *words: str) -> str:
    """The split has exactly one error, at ``where``/``field``; its one-line message names the
    JSON file, the element (with its id) and the field, plus ``words``; coco_to_datalist raises
    CocoDataError carrying that very line. Returns the line."""
    problems = errors_of(split)
    assert len(problems) == 1, "\n".join(map(str, problems))
    p = problems[0]
    assert (p.where, p.field) == (where, field), str(p)
    line = str(p)
    assert "\n" not in line
    assert line.startswith("error: ")
    assert p.file == str(split / ANNOTATION_FILE)
    assert str(split / ANNOTATION_FILE) in line
    assert f"{where}.{field}" in line if where else f": {field}:" in line
    for word in words:
        assert word in line, line
    with pytest.raises(CocoDataError) as info:
        coco_to_datalist(split)
    assert isinstance(info.value, ValueError)
    assert str(info.value).splitlines() == [line]
    assert info.value.problems and info.value.problems[0] == p
    return line


def sample_image(split: Path, image_id: int = 56) -> Path:
    im = next(i for i in read_json(split)["images"] if i["id"] == image_id)
    return split / im["file_name"]


# --------------------------------------------------------------------------- coco_to_datalist


def test_sample_split_validates_with_no_problem_at_all():
    assert validate_split(SAMPLE_SPLIT) == []


def test_datalist_record_structure():
    data = json.loads((SAMPLE_SPLIT / ANNOTATION_FILE).read_text())
    anns = {a["image_id"]: a for a in data["annotations"]}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    records = coco_to_datalist(SAMPLE_SPLIT)
    assert [r["image_id"] for r in records] == sorted(files)
    for rec in records:
        assert set(rec) == {"image", "label", "image_id"}
        assert isinstance(rec["image_id"], int)
        path = Path(rec["image"])
        assert path.is_absolute() and path.is_file()
        assert path == (SAMPLE_SPLIT / files[rec["image_id"]]).resolve()
        label = rec["label"]
        assert set(label) == {"height", "width", "annotations"}
        assert (label["height"], label["width"]) == (640, 640)
        (ann,) = label["annotations"]
        src = anns[rec["image_id"]]
        assert ann == {"segmentation": src["segmentation"], "bbox": src["bbox"], "label": 1}
    json.dumps(records)  # records are plain data (CacheDataset / multiprocessing friendly)


def test_split_dir_joins_root_and_split():
    assert split_dir("/data/brain", "valid") == os.path.join("/data/brain", "valid")


def test_images_without_annotations_are_kept_as_true_negatives(sample_split):
    data = read_json(sample_split)
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in (56, 57)]
    write_json(sample_split, data)
    assert errors_of(sample_split) == []
    records = coco_to_datalist(sample_split)
    assert len(records) == 12
    by_id = {r["image_id"]: r for r in records}
    for iid in (56, 57):
        assert by_id[iid]["label"]["annotations"] == []
        mask = CocoAnnotationsToMaskd()(by_id[iid])["label"]
        assert tuple(mask.shape) == (1, 640, 640) and int(mask.sum()) == 0
    assert all(len(r["label"]["annotations"]) == 1 for r in records if r["image_id"] not in (56, 57))


def test_bbox_only_annotation_in_a_split(sample_split):
    data = read_json(sample_split)
    del data["annotations"][0]["segmentation"]  # image 56
    data["annotations"][0]["bbox"] = [251, 323, 96.25, 67.25]
    write_json(sample_split, data)
    assert errors_of(sample_split) == []
    rec = next(r for r in coco_to_datalist(sample_split) if r["image_id"] == 56)
    assert rec["label"]["annotations"] == [{"segmentation": None, "bbox": [251, 323, 96.25, 67.25], "label": 1}]
    mask = CocoAnnotationsToMaskd()(rec)["label"][0].numpy().astype(bool)
    expected = np.zeros((640, 640), bool)
    # pixel centres strictly inside x in (251, 347.25), y in (323, 390.25): columns 251..346, rows 323..389
    expected[323:390, 251:347] = True
    np.testing.assert_array_equal(mask, expected)


# --------------------------------------------------------------------------- category maps

CATEGORIES = [
    {"id": 0, "name": "Tumor", "supercategory": "none"},
    {"id": 1, "name": "glioma", "supercategory": "TUMOR"},
    {"id": 2, "name": "eye", "supercategory": "anatomy"},
    {"id": 5, "name": "meningioma", "supercategory": "Tumor"},
]


def test_default_category_map_takes_tumor_names_and_supercategories():
    assert resolve_category_map(CATEGORIES) == {0: 1, 1: 1, 5: 1}
    assert resolve_category_map([{"id": 3, "name": "tumor"}]) == {3: 1}
    assert resolve_category_map([{"id": 3, "name": "lesion", "supercategory": "none"}]) == {}


def test_explicit_category_map_by_id_and_by_name():
    assert resolve_category_map(CATEGORIES, {1: 1, 5: 2}) == {1: 1, 5: 2}
    assert resolve_category_map(CATEGORIES, {"glioma": 1, "meningioma": 2}) == {1: 1, 5: 2}
    assert resolve_category_map(CATEGORIES, {"eye": 3}) == {2: 3}
    # JSON configs only have string keys: a digit string that is an id (and no name) is the id.
    assert resolve_category_map(CATEGORIES, {"5": 4}) == {5: 4}


def test_digit_key_that_is_also_a_category_name_means_the_name():
    # Roboflow's sample: category "0" has id 1, category "1" has id 2.
    cats = [{"id": 0, "name": "Tumor"}, {"id": 1, "name": "0"}, {"id": 2, "name": "1"}]
    assert resolve_category_map(cats, {"1": 7}) == {2: 7}
    assert resolve_category_map(cats, {1: 7}) == {1: 7}


def test_label_zero_drops_a_category():
    assert resolve_category_map(CATEGORIES, {"Tumor": 0, "glioma": 1}) == {1: 1}
    assert resolve_category_map(CATEGORIES, {0: 0}) == {}


@pytest.mark.parametrize(
    "category_map, match",
    [
        ({"astrocytoma": 1}, "no category named or numbered 'astrocytoma'"),
        ({99: 1}, "no category with id 99"),
        ({"glioma": -1}, r"category_map\['glioma'\]: label must be a non-negative integer, got -1"),
        ({"glioma": "1"}, "label must be a non-negative integer"),
        ({"glioma": 1.5}, "label must be a non-negative integer"),
        ({"glioma": True}, "label must be a non-negative integer"),
    ],
)
def test_bad_category_map_raises_a_clear_value_error(category_map, match):
    with pytest.raises(ValueError, match=match):
        resolve_category_map(CATEGORIES, category_map)


def test_category_map_applied_by_coco_to_datalist():
    # Sample split: category id 1 (named "0") on 6 images, id 2 (named "1") on 6 images.
    data = json.loads((SAMPLE_SPLIT / ANNOTATION_FILE).read_text())
    cat_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
    assert sorted(cat_of.values()).count(1) == 6

    records = coco_to_datalist(SAMPLE_SPLIT, {1: 1, 2: 2})
    assert {r["image_id"]: r["label"]["annotations"][0]["label"] for r in records} == cat_of

    records = coco_to_datalist(SAMPLE_SPLIT, {1: 1, 2: 0})  # drop id 2, keep its images
    assert len(records) == 12
    for r in records:
        assert len(r["label"]["annotations"]) == (1 if cat_of[r["image_id"]] == 1 else 0)

    # a map that labels no annotated category would make every mask empty: refused
    with pytest.raises(CocoDataError, match=r"categories: no annotation's category maps to a tumor label"):
        coco_to_datalist(SAMPLE_SPLIT, {"Tumor": 1})  # no annotation uses category 0


def test_categories_the_default_map_does_not_recognise_are_an_error_naming_them(sample_split):
    data = read_json(sample_split)
    for c in data["categories"]:
        c.update(name="glioma" if c["id"] else "tumour-types", supercategory="none")
    write_json(sample_split, data)
    line = expect_one_error(sample_split, "", "categories", "the annotations use 'glioma'", '{"glioma": 1}')
    assert "categories named 'Tumor' or under the supercategory 'Tumor'" in line
    assert not [p for p in validate_split(sample_split, {"glioma": 1}) if p.severity == "error"]
    assert len(coco_to_datalist(sample_split, {"glioma": 1})) == 12


def test_bad_category_map_in_coco_to_datalist(sample_split):
    with pytest.raises(CocoDataError) as info:
        coco_to_datalist(sample_split, {"astrocytoma": 1})
    assert isinstance(info.value, ValueError)
    line = str(info.value)
    assert str(sample_split / ANNOTATION_FILE) in line and "categories" in line and "astrocytoma" in line
    (problem,) = [p for p in validate_split(sample_split, {"astrocytoma": 1}) if p.severity == "error"]
    assert problem.field == "categories"
    with pytest.raises(ValueError, match="astrocytoma"):
        coco_to_datalist(sample_split, {"astrocytoma": 1}, validate=False)


# --------------------------------------------------------------------------- validation: the JSON file


def test_malformed_json(sample_split):
    replace_file(sample_split / ANNOTATION_FILE, b'{"images": [}')
    (p,) = validate_split(sample_split)
    line = str(p)
    assert p.severity == "error" and "\n" not in line
    assert str(sample_split / ANNOTATION_FILE) in line
    assert "malformed or truncated JSON at line 1 column" in line
    with pytest.raises(CocoDataError) as info:
        coco_to_datalist(sample_split)
    assert str(info.value) == line


def test_truncated_json(sample_split):
    raw = (sample_split / ANNOTATION_FILE).read_bytes()
    replace_file(sample_split / ANNOTATION_FILE, raw[: len(raw) // 2])
    (p,) = validate_split(sample_split)
    line = str(p)
    assert p.severity == "error" and "\n" not in line
    assert str(sample_split / ANNOTATION_FILE) in line
    assert "malformed or truncated JSON" in line
    with pytest.raises(CocoDataError) as info:
        coco_to_datalist(sample_split, validate=False)  # the loader itself refuses it too
    assert str(info.value) == line


def test_json_that_is_not_an_object(sample_split):
    replace_file(sample_split / ANNOTATION_FILE, b"[1, 2]")
    (p,) = validate_split(sample_split)
    assert "top level must be an object, not list" in str(p)


def test_missing_annotation_file_and_missing_split(tmp_path, sample_split):
    (sample_split / ANNOTATION_FILE).unlink()
    (p,) = validate_split(sample_split)
    assert str(sample_split / ANNOTATION_FILE) in str(p) and "annotation file not found" in str(p)
    with pytest.raises(CocoDataError, match="annotation file not found"):
        load_coco_json(sample_split / ANNOTATION_FILE)
    (p,) = validate_split(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(p) and "split folder not found" in str(p)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(sample_split, key):
    data = read_json(sample_split)
    del data[key]
    write_json(sample_split, data)
    line = expect_one_error(sample_split, "", key, "missing top-level key")
    assert line == f"error: {sample_split / ANNOTATION_FILE}: {key}: missing top-level key"


def test_top_level_key_of_the_wrong_type(sample_split):
    data = read_json(sample_split)
    data["annotations"] = {"id": 1}
    write_json(sample_split, data)
    expect_one_error(sample_split, "", "annotations", "must be a list, not dict")


# --------------------------------------------------------------------------- validation: image files


def test_listed_image_missing(sample_split):
    img = sample_image(sample_split)
    img.unlink()
    expect_one_error(sample_split, "images[id=56]", "file_name", img.name, "image file is missing")


def test_empty_image_file(sample_split):
    img = sample_image(sample_split)
    replace_file(img, b"")
    expect_one_error(sample_split, "images[id=56]", "file_name", img.name, "empty (0 bytes)")


def test_text_file_named_jpg(sample_split):
    img = sample_image(sample_split)
    replace_file(img, b"this is not a JPEG, just text\n" * 20)
    expect_one_error(sample_split, "images[id=56]", "file_name", img.name, "unreadable")


def test_truncated_jpeg(sample_split):
    img = sample_image(sample_split)
    raw = img.read_bytes()
    replace_file(img, raw[: len(raw) // 2])
    with Image.open(img) as im:  # the header is intact: only a full decode finds the truncation
        assert im.size == (640, 640)
    expect_one_error(sample_split, "images[id=56]", "file_name", img.name, "unreadable", "truncated")


def test_image_size_differs_from_json(sample_split):
    data = read_json(sample_split)
    data["images"][0]["height"] = 480  # image 56; its annotation still fits 640x480
    write_json(sample_split, data)
    expect_one_error(sample_split, "images[id=56]", "height/width", "JSON says 640x480", "is 640x640")


def test_image_with_non_positive_size_in_json(sample_split):
    data = read_json(sample_split)
    data["images"][0]["width"] = 0
    write_json(sample_split, data)
    expect_one_error(sample_split, "images[id=56]", "width", "must be a positive integer, got 0")


def test_extra_unlisted_image_is_only_a_warning(sample_split):
    extra = sample_split / "extra_scan.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(extra)
    problems = validate_split(sample_split)
    assert len(problems) == 1
    (p,) = problems
    assert p.severity == "warning"
    assert p.file == str(extra)
    line = str(p)
    assert line.startswith("warning: ") and str(extra) in line and "not listed" in line
    records = coco_to_datalist(sample_split)
    assert len(records) == 12
    assert all(Path(r["image"]).name != extra.name for r in records)


# --------------------------------------------------------------------------- validation: ids


def test_duplicate_image_id(sample_split):
    data = read_json(sample_split)
    data["images"].append(dict(data["images"][0]))  # a second image with id 56
    write_json(sample_split, data)
    expect_one_error(sample_split, "images[id=56]", "id", "duplicate image id")


def test_duplicate_annotation_id(sample_split):
    data = read_json(sample_split)
    dup = dict(data["annotations"][1])  # id 57 again, on image 57
    data["annotations"].append(dup)
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=57]", "id", "duplicate annotation id")


@pytest.mark.parametrize("image_id", [9999, None, "56", [56]], ids=["unknown", "null", "string", "list"])
def test_annotation_on_an_unknown_image(sample_split, image_id):
    data = read_json(sample_split)
    data["annotations"][0]["image_id"] = image_id
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "image_id", f"no image with id {image_id!r}")


@pytest.mark.parametrize("category_id", [77, None, [1]], ids=["unknown", "null", "list"])
def test_annotation_with_an_unknown_category(sample_split, category_id):
    data = read_json(sample_split)
    data["annotations"][0]["category_id"] = category_id
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "category_id", f"no category with id {category_id!r}")


# --------------------------------------------------------------------------- validation: geometry


@pytest.mark.parametrize("size", [(0, 67.5), (96.25, -5)], ids=["zero-width", "negative-height"])
def test_bbox_with_non_positive_size(sample_split, size):
    data = read_json(sample_split)
    data["annotations"][0]["bbox"] = [251, 323, *size]
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "bbox", f"non-positive size {size[0]}x{size[1]}")


@pytest.mark.parametrize("bbox", [[600, 323, 96.25, 67.5], [-10, 323, 96.25, 67.5], [251, 600, 96.25, 67.5]])
def test_bbox_outside_the_image(sample_split, bbox):
    data = read_json(sample_split)
    data["annotations"][0]["bbox"] = bbox
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "bbox", "lies outside the 640x640 image")


def test_bbox_touching_the_border_is_fine(sample_split):
    data = read_json(sample_split)
    data["annotations"][0]["bbox"] = [0, 0, 640, 640]
    data["annotations"][0]["segmentation"] = [[0, 0, 640, 0, 640, 640, 0, 640]]
    write_json(sample_split, data)
    assert errors_of(sample_split) == []


def test_polygon_with_an_odd_number_of_coordinates(sample_split):
    data = read_json(sample_split)
    data["annotations"][0]["segmentation"][0].pop()  # 10 -> 9 numbers
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", "odd number of coordinates (9)")


def test_polygon_with_too_few_points(sample_split):
    data = read_json(sample_split)
    data["annotations"][0]["segmentation"] = [[251, 323, 347, 390]]  # pycocotools would read this as a box
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", "at least 3 points")


def test_polygon_outside_the_image(sample_split):
    data = read_json(sample_split)
    poly = data["annotations"][0]["segmentation"][0]
    poly[0::2] = [x + 400 for x in poly[0::2]]  # bbox left alone: only the polygon is wrong
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", "polygon lies outside the 640x640 image")


def test_second_polygon_outside_the_image_is_named(sample_split):
    data = read_json(sample_split)
    seg = data["annotations"][0]["segmentation"]
    seg.append([700, 10, 710, 10, 710, 20])
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", "polygon 1:", "outside")


@pytest.mark.parametrize(
    "counts, why",
    [
        ("0", "sum to 0, not 640*640"),  # one empty run: pycocotools would decode uninitialised memory
        ("PPYo1", "RLE counts"),  # runs that cover part of the image
        ("`", "not a valid compressed RLE string"),  # a number cut off
        ("0\x7f", "not a valid compressed RLE string"),  # a character outside the encoding
    ],
    ids=["empty-run", "short", "cut-off", "bad-char"],
)
def test_compressed_rle_must_cover_the_image(sample_split, counts, why):
    data = read_json(sample_split)
    data["annotations"][0]["segmentation"] = {"size": [640, 640], "counts": counts}
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", why)


def test_compressed_rle_that_covers_the_image_is_accepted_and_read_back(sample_split):
    from pycocotools import mask as mask_utils

    truth = np.zeros((640, 640), np.uint8)
    truth[100:200, 200:350] = 1
    counts = mask_utils.encode(np.asfortranarray(truth))["counts"].decode("ascii")
    data = read_json(sample_split)
    data["annotations"][0]["segmentation"] = {"size": [640, 640], "counts": counts}
    write_json(sample_split, data)
    assert not [p for p in validate_split(sample_split) if p.severity == "error"]
    np.testing.assert_array_equal(rasterize_annotations([data["annotations"][0]], 640, 640), truth)


def test_rle_of_another_size(sample_split):
    data = read_json(sample_split)
    data["annotations"][0]["segmentation"] = {"size": [3, 4], "counts": RLE_COUNTS}
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", "RLE size [3, 4] differs", "[640, 640]")


def _rect_rle_counts_640(rows: tuple[int, int], cols: tuple[int, int]) -> list[int]:
    """Uncompressed RLE counts of a filled rectangle (rows r0..r1-1, columns c0..c1-1) on 640x640,
    written out from the geometry: column-major runs, starting with zeros."""
    (r0, r1), (c0, c1) = rows, cols
    ones, below = r1 - r0, 640 - r1
    return [c0 * 640 + r0] + [ones, below + r0] * (c1 - c0 - 1) + [ones, below + (640 - c1) * 640]


@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "compressed"])
def test_rle_annotation_in_a_split(sample_split, compressed):
    counts = _rect_rle_counts_640((100, 200), (200, 350))
    assert sum(counts) == 640 * 640 and counts[:3] == [128100, 100, 540] and counts[-1] == 440 + 290 * 640
    expected = np.zeros((640, 640), np.uint8)
    expected[100:200, 200:350] = 1
    if compressed:
        from pycocotools import mask as mask_utils

        counts = mask_utils.encode(np.asfortranarray(expected))["counts"].decode("ascii")
        assert isinstance(counts, str)
    data = read_json(sample_split)
    ann = data["annotations"][0]  # image 56
    ann.update(segmentation={"size": [640, 640], "counts": counts}, bbox=[200, 100, 150, 100], iscrowd=1)
    write_json(sample_split, data)
    assert errors_of(sample_split) == []
    rec = next(r for r in coco_to_datalist(sample_split) if r["image_id"] == 56)
    mask = CocoAnnotationsToMaskd()(rec)["label"]
    assert tuple(mask.shape) == (1, 640, 640)
    np.testing.assert_array_equal(mask[0].numpy(), expected)


@pytest.mark.parametrize(
    "counts, words",
    [
        ([3, 2, 1, 2, 4], "RLE counts sum to 12, not 640*640=409600 pixels"),
        ([409600.0], "RLE counts must be non-negative integers"),
        ([-1, 409601], "RLE counts must be non-negative integers"),
        ("zz!!", "RLE counts: not a valid compressed RLE string"),
        (5, "RLE counts must be a list of run lengths or a compressed string, not int"),
    ],
    ids=["short", "float", "negative", "garbage-string", "int"],
)
def test_rle_with_bad_counts(sample_split, counts, words):
    data = read_json(sample_split)
    data["annotations"][0]["segmentation"] = {"size": [640, 640], "counts": counts}
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", words)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "251"], ids=["nan", "inf", "string"])
def test_non_finite_or_string_bbox_coordinates(sample_split, bad):
    data = read_json(sample_split)
    data["annotations"][0]["bbox"][0] = bad
    write_json(sample_split, data)  # json.dumps writes NaN / Infinity, which json.load reads back
    expect_one_error(sample_split, "annotations[id=56]", "bbox", "must be [x, y, width, height] of finite numbers")


@pytest.mark.parametrize("bad", [float("nan"), "347.5", None], ids=["nan", "string", "null"])
def test_non_finite_or_string_polygon_coordinates(sample_split, bad):
    data = read_json(sample_split)
    data["annotations"][0]["segmentation"][0][2] = bad
    write_json(sample_split, data)
    expect_one_error(sample_split, "annotations[id=56]", "segmentation", "polygon must be a list of finite numbers")


# --------------------------------------------------------------------------- validation: file_name safety


@pytest.fixture
def outside_image(tmp_path: Path) -> Path:
    """A real, readable image outside the split folder: a reader that followed file_name would succeed."""
    path = tmp_path / "outside.jpg"
    shutil.copyfile(SAMPLE_SPLIT / sorted(p.name for p in SAMPLE_SPLIT.glob("*.jpg"))[0], path)
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot", "nested-dotdot"])
def test_file_name_outside_the_split_is_refused(sample_split, outside_image, how):
    file_name = {"absolute": str(outside_image), "dotdot": "../outside.jpg", "nested-dotdot": "sub/../../outside.jpg"}[
        how
    ]
    assert (sample_split / file_name).resolve() == outside_image.resolve()
    data = read_json(sample_split)
    data["images"][0]["file_name"] = file_name
    write_json(sample_split, data)

    line = expect_one_error(sample_split, "images[id=56]", "file_name", file_name, "refused")
    assert "absolute or escapes the split folder" in line
    # Without validation the datalist still never points outside the split.
    with pytest.raises(CocoDataError) as info:
        coco_to_datalist(sample_split, validate=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(sample_split / ANNOTATION_FILE) in msg and "images[id=56].file_name" in msg and "refused" in msg


def test_file_name_with_a_harmless_dot_segment_is_accepted(sample_split):
    data = read_json(sample_split)
    name = data["images"][0]["file_name"]
    data["images"][0]["file_name"] = f"./{name}"
    write_json(sample_split, data)
    assert errors_of(sample_split) == []
    rec = next(r for r in coco_to_datalist(sample_split) if r["image_id"] == 56)
    assert Path(rec["image"]) == (sample_split / name).resolve()


def test_every_error_is_reported_at_once(sample_split):
    data = read_json(sample_split)
    data["annotations"][0]["bbox"][2] = 0
    data["annotations"][1]["category_id"] = 42
    data["images"][2]["file_name"] = "../x.jpg"
    write_json(sample_split, data)
    with pytest.raises(CocoDataError) as info:
        coco_to_datalist(sample_split)
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert any("annotations[id=56].bbox" in s for s in lines)
    assert any("annotations[id=57].category_id" in s for s in lines)
    assert any("images[id=63].file_name" in s for s in lines)
    # the image whose file_name was refused is now unlisted: a warning, not in the error message
    assert [p.severity for p in info.value.problems].count("warning") == 1


# -- check-data refuses what train cannot use --------------------------------------------------


def test_image_and_annotation_ids_must_fit_in_64_bits(sample_split):
    data = read_json(sample_split)
    data["images"][0]["id"] = 2**70
    write_json(sample_split, data)
    problems = errors_of(sample_split)
    assert any(p.field == "id" and "does not fit in 64 bits" in str(p) for p in problems)
    data = read_json(sample_split)
    data["images"][0]["id"] = 0
    data["annotations"][0]["id"] = -(2**64)
    write_json(sample_split, data)
    assert any("does not fit in 64 bits" in str(p) for p in errors_of(sample_split))


@pytest.mark.parametrize("label", [2, 300])
def test_a_binary_bundle_takes_labels_0_and_1_only(sample_split, label, capsys):
    from scripts.coco import bundle_max_label

    assert bundle_max_label(BUNDLE) == 1  # the shipped network: background and tumor
    assert not [p for p in validate_split(sample_split, {"1": label}) if p.severity == "error"]  # no model given
    errors = [p for p in validate_split(sample_split, {"1": label}, max_label=1) if p.severity == "error"]
    assert (
        len(errors) == 1
        and f"gives label(s) [{label}]" in str(errors[0])
        and "background and tumor only" in str(errors[0])
    )
    # check-data knows the bundle; coco_to_datalist (what train.json calls) refuses it as well
    assert main(["check-data", str(sample_split), "--category-map", json.dumps({"1": label})]) == 1
    assert "background and tumor only" in capsys.readouterr().err
    with pytest.raises(CocoDataError, match="background and tumor only"):
        coco_to_datalist(sample_split, {1: label}, max_label=1)


def test_a_partial_category_map_is_warned_about_with_counts(sample_split):
    # the sample's annotations: 6 of category id 1 (named "0"), 6 of id 2 (named "1")
    problems = validate_split(sample_split, {2: 1})
    assert not [p for p in problems if p.severity == "error"]
    [warning] = [p for p in problems if p.severity == "warning"]
    assert "6 of 12 annotations have a category that maps to no tumor label and become background" in str(warning)
    assert "'0' (6)" in str(warning)
    assert not validate_split(sample_split, {1: 1, 2: 1})


def test_the_suggested_category_map_is_one_that_works(sample_split):
    [error] = [p for p in validate_split(sample_split, {"Tumor": 1}) if p.severity == "error"]
    suggested = json.loads(str(error).rsplit("e.g. ", 1)[1])
    assert suggested == {"1": 1, "2": 1}
    assert not validate_split(sample_split, {int(k): v for k, v in suggested.items()})


def test_a_split_without_images_is_refused(sample_split):
    data = read_json(sample_split)
    data["images"], data["annotations"] = [], []
    write_json(sample_split, data)
    for image in sample_split.glob("*.jpg"):
        image.unlink()
    assert any(p.field == "images" and "no images" in str(p) for p in errors_of(sample_split))


@pytest.mark.parametrize("field", ["bbox", "segmentation"])
def test_numbers_too_large_for_a_float_are_named_not_a_traceback(sample_split, field):
    text = (sample_split / ANNOTATION_FILE).read_text()
    data = json.loads(text)
    huge = 10**400
    if field == "bbox":
        data["annotations"][0]["bbox"] = [1, 2, huge, 3]
    else:
        data["annotations"][0]["segmentation"] = [[1, 1, huge, 1, 5, 5]]
    (sample_split / ANNOTATION_FILE).write_text(json.dumps(data))  # json writes the big integer as digits
    problems = errors_of(sample_split)
    assert len(problems) == 1 and problems[0].field == field and "finite numbers" in str(problems[0])
    assert "annotations[id=56]" in str(problems[0])


@pytest.mark.parametrize("name", ["a\x00b.jpg", "evil\nerror: fake.jpg", "tab\there.jpg"])
def test_a_file_name_with_a_control_character_is_named_and_refused(sample_split, name):
    data = read_json(sample_split)
    data["images"][0]["file_name"] = name
    write_json(sample_split, data)
    line = expect_one_error(sample_split, f"images[id={data['images'][0]['id']}]", "file_name", "control character")
    assert repr(name) in line and "\n" not in line


def test_check_data_names_an_image_over_the_pixel_limit(sample_split):
    """The pixel limit holds in check-data too, from the header, with the file and field named."""
    data = read_json(sample_split)
    image = data["images"][0]
    (sample_split / image["file_name"]).unlink()
    image["file_name"] = "bomb.png"
    Image.new("1", (30000, 30000)).save(sample_split / "bomb.png", optimize=True)
    write_json(sample_split, data)
    line = expect_one_error(sample_split, f"images[id={image['id']}]", "file_name", "bomb.png", "over the limit")
    assert "\n" not in line
