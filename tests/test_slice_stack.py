"""The MONAI Label stages of the bundle (``configs/monailabel.json`` layered on ``inference.json``), without a server.

The server itself is tested over HTTP in test_monailabel_app.py, in MONAI Label's own environment;
these run in the project's, on every CI run.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from conftest import BUNDLE, SAMPLE_SPLIT, write_volume


@pytest.fixture(scope="module")
def stages():
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "inference.json"), str(BUNDLE / "configs" / "monailabel.json")])
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = __import__("torch").device("cpu")
    scripts = parser.get_parsed_content("bundle_scripts")
    return {
        "pre": parser.get_parsed_content("pre_transforms"),
        "inferer": parser.get_parsed_content("slice_stack_inferer"),
        "post": parser.get_parsed_content("post_transforms"),
        "predictor": parser.get_parsed_content("slice_predictor"),
        "scripts": scripts,
    }


def _run(stages, path, slice_index=None):
    data = {"image": str(path)}
    for t in stages["pre"]:
        data = t(data)
    # as the app calls it
    data["pred"] = stages["inferer"](data["image"], slice_index, data["image_direction"], data["image_spacing"])
    for t in stages["post"]:
        data = t(data)
    return data


def test_monai_bundle_run_config_is_unchanged_by_the_layer():
    """inference.json alone has none of MONAI Label's keys: ``monai.bundle run`` never sees them."""
    alone = ConfigParser()
    alone.read_config(str(BUNDLE / "configs" / "inference.json"))
    layer = ConfigParser.load_config_file(str(BUNDLE / "configs" / "monailabel.json"))
    assert not set(layer) & set(alone.config)
    assert {"pre_transforms", "post_transforms", "slice_stack_inferer"} <= set(layer)


def test_a_volume_gets_the_slice_loop_mask_with_its_geometry(stages, tmp_path):
    import itk

    grey = np.stack(
        [np.asarray(Image.open(f).convert("L"), np.float32) for f in sorted(SAMPLE_SPLIT.glob("*.jpg"))[:2]]
    )
    tilted = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    write_volume(tmp_path / "case.nii.gz", grey, [0.5, 0.6, 4.0], [12.5, -20.0, 7.0], tilted)
    data = _run(stages, tmp_path / "case.nii.gz")
    assert data["image_ndim"] == 3 and data["pred"].shape == grey.shape
    expected = stages["scripts"].volumes.segment_medical_file(
        stages["predictor"], tmp_path / "case.nii.gz", tmp_path / "expected.nii.gz"
    )
    assert np.array_equal(data["pred"], expected.mask)
    # the direction's rows run right to left: both cut the planes transposed, rows front to back
    assert np.allclose(data["image_direction"], tilted) and (expected.slice_axis, expected.transposed) == ("K", True)
    written = stages["scripts"].slice_stack.write_slice_stack_mask(
        data["pred"], data["image_geometry"], tmp_path / "mask.nrrd"
    )
    mask, reference = itk.imread(written), itk.imread(str(tmp_path / "case.nii.gz"))
    assert np.array_equal(itk.array_from_image(mask), expected.mask)
    assert np.allclose(mask.GetSpacing(), reference.GetSpacing())
    assert np.allclose(mask.GetOrigin(), reference.GetOrigin())
    assert np.allclose(itk.array_from_matrix(mask.GetDirection()), tilted)

    one = _run(stages, tmp_path / "case.nii.gz", slice_index=1)["pred"]
    assert np.array_equal(one[1], expected.mask[1]) and not one[0].any()

    # with the per-slice report: the rows segment_medical_file wrote beside its mask, and one row for one slice
    loaded = stages["pre"][0]({"image": str(tmp_path / "case.nii.gz")})
    stack, direction, spacing = loaded["image"], loaded["image_direction"], loaded["image_spacing"]
    assert np.allclose(spacing, [0.5, 0.6, 4.0]), "rectangular pixels: given square to the network, as the file's"
    mask, rows = stages["inferer"].segment(stack, None, direction, spacing)
    assert np.array_equal(mask, expected.mask)
    with open(expected.slice_report_path, newline="", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert [{k: str(row[k]) for k in written[0]} for row in rows] == written and len(rows) == 2
    _, one_row = stages["inferer"].segment(stack, 1, direction, spacing)
    assert len(one_row) == 1 and one_row[0]["slice"] == 1


def test_a_jpeg_gets_the_predictor_mask_as_a_2d_label_image(stages, tmp_path):
    source = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]
    shutil.copy(source, tmp_path / "slice.jpg")
    data = _run(stages, tmp_path / "slice.jpg")
    from scripts.predictor import BundlePredictor

    expected = BundlePredictor(BUNDLE, device="cpu").predict_file(source)  # monai.bundle run's loader
    assert data["image_ndim"] == 2 and data["image_geometry"] is None
    assert np.array_equal(data["pred"], expected) and expected.any()
    png = stages["scripts"].slice_stack.write_slice_stack_mask(data["pred"], None, tmp_path / "mask.png")
    assert np.array_equal(np.asarray(Image.open(png)), expected)  # label values (1), not 255


@pytest.mark.parametrize(
    "name, ndim, message", [("mask.exe", 2, "unsupported mask format"), ("mask.png", 3, "a 3D mask cannot be a PNG")]
)
def test_a_mask_it_cannot_write_is_refused_and_nothing_is_written(stages, tmp_path, name, ndim, message):
    mask = np.zeros((2, 8, 8) if ndim == 3 else (8, 8), np.uint8)
    with pytest.raises(ValueError, match=message) as caught:
        stages["scripts"].slice_stack.write_slice_stack_mask(mask, None, tmp_path / name)
    assert name in str(caught.value) and list(tmp_path.iterdir()) == []


def test_a_slice_index_that_is_no_slice_is_refused(stages):
    stack = np.zeros((2, 16, 16), np.float32)
    for bad, message in ((2, "is not a slice of this image"), (-1, "is not a slice"), ("1", "expected a slice number")):
        with pytest.raises(ValueError, match=f"slice_index: .*{message}"):
            stages["inferer"](stack, bad)


class _Threshold:
    """A stand-in slice predictor: a tumor where a pixel is at least 100, a possible tumor at 50 to 99."""

    def predict_arrays(self, images, with_probability=False, batch_size=8, details=False):
        from scripts.predictor import TumorPrediction

        out = []
        for image in images:
            grey = np.asarray(image, np.float32)
            tumor, possible = grey >= 100, (grey >= 50) & (grey < 100)
            component = [{"bbox": [0.0, 0.0, 1.0, 1.0], "area": 1, "confidence": 0.9}]
            out.append(
                TumorPrediction(
                    tumor.astype(np.uint8), grey / 255, 0.9 if tumor.any() else 0.0,
                    component if tumor.any() else [], possible_mask=possible.astype(np.uint8),
                    possible_components=component if possible.any() else [],
                )
            )  # fmt: skip
        return out


@pytest.mark.parametrize("name", ["one.nii.gz", "one.nrrd"])
def test_a_one_slice_volume_comes_back_a_volume_and_a_2d_image_2d(tmp_path, name):
    """MONAI Label's stages as monailabel.json wires them (the inferer with a stand-in predictor, no model)."""
    import itk

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "inference.json"), str(BUNDLE / "configs" / "monailabel.json")])
    parser["bundle_root"] = str(BUNDLE)
    parser["tumor_label"], parser["possible_tumor_label"] = 5, 9
    scripts = parser.get_parsed_content("bundle_scripts")
    pre, post = parser.get_parsed_content("pre_transforms"), parser.get_parsed_content("post_transforms")
    inferer = scripts.slice_stack.SliceStackInferer(_Threshold())

    def run(path):
        data = {"image": str(path)}
        for t in pre:
            data = t(data)
        data["pred"] = inferer(data["image"])
        for t in post:
            data = t(data)
        return data

    grey = np.zeros((1, 6, 8), np.float32)
    grey[0, 2, 3], grey[0, 4, 6] = 150.0, 70.0
    tilted = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    write_volume(tmp_path / name, grey, [0.5, 0.6, 4.0], [12.5, -20.0, 7.0], tilted)
    data = run(tmp_path / name)
    expected = np.zeros((1, 6, 8), np.uint8)
    expected[0, 2, 3], expected[0, 4, 6] = 5, 9
    assert data["image_ndim"] == 3 and data["pred"].shape == (1, 6, 8) and np.array_equal(data["pred"], expected)
    written = scripts.slice_stack.write_slice_stack_mask(data["pred"], data["image_geometry"], tmp_path / "m.nrrd")
    mask = itk.imread(written)
    assert itk.array_from_image(mask).shape == (1, 6, 8) and np.allclose(mask.GetSpacing(), [0.5, 0.6, 4.0])
    assert np.allclose(itk.array_from_matrix(mask.GetDirection()), tilted)

    # the same pixels as a 2D image: a 2D mask
    write_volume(tmp_path / "flat.nrrd", grey[0], [0.5, 0.6], [12.5, -20.0], np.eye(2))
    flat = run(tmp_path / "flat.nrrd")
    assert flat["image_ndim"] == 2 and np.array_equal(flat["pred"], expected[0])


def test_a_sagittal_volume_is_cut_into_its_axial_slices_whole_or_one_slice_at_a_time():
    """The stack of a volume stored sagittally (K right to left, J foot to head, I front to back): slice k is
    its k-th axial slice, whole or with ``slice_index``, as ``monai.bundle run`` cuts it."""
    from scripts.slice_stack import SliceStackInferer

    axial = np.zeros((4, 6, 8), np.float32)  # (k, j, i): foot to head, front to back, right to left
    axial[1, 2, 3], axial[2, 2:4, 3], axial[3, 5, 7] = 150.0, 150.0, 70.0
    sagittal = np.ascontiguousarray(np.transpose(axial, (2, 0, 1)))  # (8, 4, 6)
    direction = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # I front to back, J foot to head, K right to left
    inferer = SliceStackInferer(_Threshold())
    expected, expected_rows = inferer.segment(axial)
    whole, rows = inferer.segment(sagittal, None, direction)
    assert np.array_equal(whole, np.transpose(expected, (2, 0, 1))) and rows == expected_rows and len(rows) == 4
    for k in range(4):
        one, one_rows = inferer.segment(sagittal, k, direction)
        assert np.array_equal(one[:, k, :], whole[:, k, :]) and not np.delete(one, k, axis=1).any()
        assert one_rows == [{**expected_rows[k], "slice": k}]
    with pytest.raises(ValueError, match=r"slice_index: 4 is not a slice of this image \(0 to 3\)"):
        inferer(sagittal, 4, direction)


def test_thick_sagittal_slices_are_given_square_pixels_whole_or_one_slice_at_a_time():
    """Sagittal slices 3 mm apart (K right to left), 1 mm in their plane: the axial slices' columns are 3 mm
    apart, so the predictor gets them three times wider, whole or with ``slice_index``."""
    from scripts.slice_stack import SliceStackInferer

    axial = np.zeros((4, 6, 8), np.float32)
    axial[1, 2, 3], axial[2, 2:4, 3], axial[3, 5, 7] = 150.0, 150.0, 70.0
    sagittal = np.ascontiguousarray(np.transpose(axial, (2, 0, 1)))
    direction = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    seen: list = []

    class Recording(_Threshold):
        def predict_arrays(self, images, **kwargs):
            seen.extend(np.shape(image) for image in images)
            return super().predict_arrays(images, **kwargs)

    inferer = SliceStackInferer(Recording())
    expected, expected_rows = inferer.segment(axial)
    whole, rows = inferer.segment(sagittal, None, direction, (1.0, 1.0, 3.0))
    assert set(seen[4:]) == {(6, 24)}
    assert np.array_equal(whole, np.transpose(expected, (2, 0, 1))), "each voxel: the result at its centre"
    assert [r["verdict"] for r in rows] == [r["verdict"] for r in expected_rows]
    for k in range(4):
        one, _ = inferer.segment(sagittal, k, direction, (1.0, 1.0, 3.0))
        assert np.array_equal(one[:, k, :], whole[:, k, :]) and not np.delete(one, k, axis=1).any()
    assert set(seen[8:]) == {(6, 24)}
    with pytest.raises(ValueError, match="spacing"):
        inferer.segment(sagittal, 1, direction, (1.0, -1.0, 3.0))
