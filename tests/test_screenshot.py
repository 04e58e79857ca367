"""The extension's screenshot script (slicer_extension/Screenshots/render_screenshot.py) draws the real result.

The script segments a sample slice with the module's Lib on a slicer-core MRML scene and renders
it with VTK off-screen. Here its PNG is read back and compared, pixel by pixel, with the mask and
probability the Lib gives for the same slice: the segment's color must lie on the mask (placed
where :func:`placement` says, not flipped or transposed) and the grey image must be the JPEG.
"""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the screenshot")

from conftest import BUNDLE, REPO, SAMPLE_SPLIT  # noqa: E402

SCRIPT = REPO / "slicer_extension" / "Screenshots" / "render_screenshot.py"
MODULE_DIR = REPO / "slicer_extension" / "BrainTumorSegmentation"
#: Not the script's default: a large tumor low in the picture, so a flip or transpose shows.
SAMPLE = SAMPLE_SPLIT / "212_jpg.rf.8fd556ac96c6b0e7bd92aca9002c11cd.jpg"
#: Tolerance on colors read back (8-bit rounding of 0.9, 0.3, 0.2 and of the blend).
COLOR_TOLERANCE = 4


@pytest.fixture(scope="module")
def script():
    """The script as a module (its folder is not a package)."""
    spec = importlib.util.spec_from_file_location("render_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def expected():
    """The Lib's own mask, probability and segment color for SAMPLE (as Slicer loads the JPEG)."""
    if not (BUNDLE / "models" / "model.pt").is_file():
        pytest.skip("the shipped weights bundle/models/model.pt are missing")
    from PIL import Image

    for folder in (MODULE_DIR, MODULE_DIR / "Testing" / "Python"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import scene_checks
    import slicer
    from BrainTumorSegmentationLib import SEGMENT_COLOR, probability_node_of, segment_mask_array, segment_volume

    with Image.open(SAMPLE) as pil:
        rgb = np.asarray(pil.convert("RGB"))
    scene = slicer.vtkMRMLScene()  # held here: a node does not keep its scene alive
    volume = scene_checks.add_vector_volume(scene, rgb, SAMPLE.stem)
    segmentation = segment_volume(volume, bundle_dir=BUNDLE, force_cpu=True, output_probability=True)
    mask = segment_mask_array(segmentation)[0].astype(bool)
    probability = slicer.util.arrayFromVolume(probability_node_of(segmentation))[0]
    assert mask.any(), "the shipped model should find the tumor on this sample"
    return {"grey": rgb.mean(axis=-1), "mask": mask, "probability": probability, "color": SEGMENT_COLOR}


@pytest.fixture(scope="module")
def picture(script, expected, tmp_path_factory):
    """The screenshot of SAMPLE, rendered by ``main`` into a temporary folder, as an (H, W, 3) array."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("screenshot")
    assert script.main([str(folder / "shot.png"), "--image", str(SAMPLE), "--bundle", str(BUNDLE)]) == 0
    assert [p.name for p in folder.iterdir()] == ["shot.png"], "a temporary file was left beside the PNG"
    with Image.open(folder / "shot.png") as pil:
        assert pil.format == "PNG"
        return np.asarray(pil.convert("RGB")).astype(int)


def _at_pixel_centers(picture: np.ndarray, place, shape: tuple[int, int]) -> np.ndarray:
    """The picture's color at the center of every slice pixel (j, i), placed as ``place`` says."""
    rows = (place.y0 + (np.arange(shape[0]) + 0.5) * place.scale).astype(int)
    cols = (place.x0 + (np.arange(shape[1]) + 0.5) * place.scale).astype(int)
    return picture[rows[:, None], cols[None, :]]


def test_picture_size(script, picture):
    assert picture.shape == (script.WINDOW_SIZE[1], script.WINDOW_SIZE[0], 3)


def test_segment_color_lies_on_the_mask(script, expected, picture):
    """Fill and outline in the segment's color where the Lib's mask is, and nowhere else on the image."""
    from scipy import ndimage

    mask = expected["mask"]
    place = script.placement((mask.shape[1], mask.shape[0]), view=0)
    color = np.round(np.array(expected["color"]) * 255)

    # The outline is drawn in the segment's color itself: its bounding box is the mask's
    width = int(place.scale * mask.shape[1])
    height = int(place.scale * mask.shape[0])
    image = picture[int(place.y0) : int(place.y0) + height, int(place.x0) : int(place.x0) + width]
    ys, xs = np.nonzero(np.all(np.abs(image - color) <= COLOR_TOLERANCE, axis=-1))
    assert len(ys) > 50, "no outline pixels in the segment's color"
    js, is_ = np.nonzero(mask)
    box = np.array([xs.min(), xs.max() + 1, ys.min(), ys.max() + 1])
    expected_box = np.array([is_.min(), is_.max() + 1, js.min(), js.max() + 1]) * place.scale
    assert np.allclose(box, expected_box, atol=script.OUTLINE_WIDTH + 2), f"outline box {box} != mask's {expected_box}"

    # The fill: each pixel well inside the mask is tinted to the segment's color; outside, grey
    samples = _at_pixel_centers(picture, place, mask.shape)
    red_excess = samples[..., 0] - samples[..., 1]  # 0 on the grey MRI
    tint = (color[0] - color[1]) * script.FILL_OPACITY
    inside = ndimage.binary_erosion(mask, iterations=3)
    outside = ~ndimage.binary_dilation(mask, iterations=3)
    assert np.mean(np.abs(red_excess[inside] - tint) <= COLOR_TOLERANCE) > 0.99, "the fill does not cover the mask"
    assert np.mean(red_excess[outside] <= COLOR_TOLERANCE) > 0.999, "segment color outside the mask"


def test_image_is_the_slice_as_loaded(script, expected, picture):
    """Away from the overlay, the picture is the JPEG's grey, not flipped or transposed."""
    from scipy import ndimage

    grey, mask = expected["grey"], expected["mask"]
    samples = _at_pixel_centers(picture, script.placement((grey.shape[1], grey.shape[0]), view=0), grey.shape)
    keep = ~ndimage.binary_dilation(mask, iterations=3)
    shown = samples.mean(axis=-1)

    def correlation(reference: np.ndarray) -> float:
        return float(np.corrcoef(shown[keep], reference[keep])[0, 1])

    assert correlation(grey) > 0.95
    for name, other in (("upside down", grey[::-1]), ("mirrored", grey[:, ::-1]), ("transposed", grey.T)):
        assert correlation(other) < correlation(grey) - 0.3, f"the picture looks {name}"


def test_probability_view(script, expected, picture):
    """The right view shows the probability in heat colors where the model is sure, and grey where it is not."""
    probability = expected["probability"]
    samples = _at_pixel_centers(picture, script.placement(probability.shape[::-1], view=1), probability.shape)
    sure, none = probability > 0.95, probability < 0.01
    assert sure.sum() > 100 and none.sum() > 100
    assert np.mean(samples[sure][:, 0] - samples[sure][:, 2] > 80) > 0.99, "no heat color where the tumor is sure"
    assert np.mean(np.ptp(samples[none], axis=-1) <= COLOR_TOLERANCE) > 0.99, "heat color where the model sees none"


def test_missing_output_folder(script, tmp_path, capsys):
    """No folder is created and nothing written: main stops before the model, write_png refuses too."""
    missing = tmp_path / "no such folder"
    with pytest.raises(SystemExit) as stop:
        script.main([str(missing / "shot.png"), "--image", str(SAMPLE)])
    assert stop.value.code == 2
    assert f"output folder {missing} does not exist" in capsys.readouterr().err
    import vtk

    with pytest.raises(FileNotFoundError, match=re.escape(f"output folder {missing} does not exist")):
        script.write_png(vtk.vtkImageData(), missing / "shot.png")
    assert list(tmp_path.iterdir()) == []
