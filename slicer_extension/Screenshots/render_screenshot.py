"""Render the extension's screenshot (``BrainTumorSegmentation_1.png``) from a real result, with VTK off-screen.

No 3D Slicer is needed: a sample slice of the bundle is put into a real MRML scene of the PyPI
package ``slicer-core`` as Slicer loads a JPEG (an RGB vector volume, IJK-to-RAS diag(-1, -1, 1)),
segmented by the module's Qt-free Lib (``segment_volume`` with the shipped ``models/model.pt``, on
the CPU), and the result is drawn with VTK the way Slicer's slice views draw it: the MRI in the
axial ("Red") orientation, the "Brain tumor" segment as a translucent fill plus its outline in the
segment's color, and beside it the tumor probability map the module can also output.

Usage (from the repository root)::

    .venv/bin/python slicer_extension/Screenshots/render_screenshot.py [--image JPG] [OUTPUT.png]

Off-screen rendering works headless: without a ``$DISPLAY`` the script asks VTK for its EGL
window (``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``) unless that variable is already set.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODULE_DIR = REPO / "slicer_extension" / "BrainTumorSegmentation"
BUNDLE = REPO / "bundle"
DEFAULT_IMAGE = BUNDLE / "sample_data" / "valid" / "117_jpg.rf.7d291e1e873dd34f36663ee9056c583a.jpg"
DEFAULT_OUTPUT = HERE / "BrainTumorSegmentation_1.png"

#: The module's title (``self.parent.title`` in BrainTumorSegmentation.py).
MODULE_TITLE = "Brain Tumor Segmentation"
#: Picture size in pixels; it holds two side-by-side views (segmentation, probability).
WINDOW_SIZE = (1200, 800)
#: Empty pixels kept between the image and the left/right (or top/bottom) edge of its view.
IMAGE_MARGIN = 20
#: Slicer's slice view background and annotation text colors.
BACKGROUND = (0.0, 0.0, 0.0)
TEXT_COLOR = (0.92, 0.92, 0.92)
DIM_TEXT_COLOR = (0.65, 0.65, 0.65)
#: Slicer's default 2D fill opacity of a segment; the outline is opaque.
FILL_OPACITY = 0.5
OUTLINE_WIDTH = 2.0


@dataclass(frozen=True)
class Placement:
    """Where the image lies in the picture: pixel (i, j) of the slice covers picture columns
    ``x0 + i * scale .. x0 + (i + 1) * scale`` and rows (from the top) ``y0 + j * scale ..``.
    """

    x0: float
    y0: float
    scale: float


def placement(image_size: tuple[int, int], view: int = 0, window_size: tuple[int, int] = WINDOW_SIZE) -> Placement:
    """The image's place in view ``view`` (0 = left, 1 = right): fitted, centered, ``IMAGE_MARGIN`` kept.

    Args:
        image_size: ``(columns, rows)`` of the slice.
        view: which of the two side-by-side views.
        window_size: the picture's ``(width, height)``.
    """
    view_w, view_h = window_size[0] / 2, window_size[1]
    scale = min((view_w - 2 * IMAGE_MARGIN) / image_size[0], (view_h - 2 * IMAGE_MARGIN) / image_size[1])
    return Placement(
        x0=view * view_w + (view_w - scale * image_size[0]) / 2, y0=(view_h - scale * image_size[1]) / 2, scale=scale
    )


# --------------------------------------------------------------------------------------
# The result, through the Lib
# --------------------------------------------------------------------------------------


@dataclass
class Result:
    """What the module shows after a run: input volume, segmentation, probability and texts."""

    scene: Any  # held: a node does not keep its scene alive
    volume: Any
    segmentation: Any
    probability: Any
    mask: Any  # (k, j, i) uint8, segment_mask_array
    summary: str
    model: str


def segment_sample(image_path: str | os.PathLike, bundle_dir: str | os.PathLike = BUNDLE) -> Result:
    """Load a JPEG/PNG slice into a new MRML scene as Slicer does and segment it with the Lib.

    Args:
        image_path: the slice (e.g. one of ``bundle/sample_data/valid/*.jpg``).
        bundle_dir: the MONAI bundle whose ``models/model.pt`` segments it (on the CPU).
    """
    import numpy as np
    from PIL import Image

    for folder in (MODULE_DIR, MODULE_DIR / "Testing" / "Python"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import scene_checks  # the tests' scene helpers: a JPEG as Slicer's reader makes it
    import slicer
    from BrainTumorSegmentationLib import (
        SEGMENT_NAME,
        bundle_info,
        probability_node_of,
        segment_mask_array,
        segment_volume,
        tumor_slice_summary,
        unusual_slice_note,
    )

    with Image.open(image_path) as pil:
        rgb = np.asarray(pil.convert("RGB"))
    scene = slicer.vtkMRMLScene()
    volume = scene_checks.add_vector_volume(scene, rgb, Path(image_path).stem)
    segmentation = segment_volume(volume, bundle_dir=bundle_dir, force_cpu=True, output_probability=True)
    mask = segment_mask_array(segmentation)
    return Result(
        scene=scene,
        volume=volume,
        segmentation=segmentation,
        probability=probability_node_of(segmentation),
        mask=mask,
        summary=f"{SEGMENT_NAME}: {tumor_slice_summary(mask)}{unusual_slice_note(segmentation)}",
        model=bundle_info(bundle_dir)["label"],
    )


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _use_headless_window() -> None:
    """Without an X display, VTK's default X window warns and falls back to EGL: ask for EGL directly."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def _ijk_to_ras(volume_node: Any) -> Any:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix


def _image_layer(image: Any, ijk_to_ras: Any, layer: int, lookup_table: Any = None, linear: bool = True) -> Any:
    """An image placed in RAS by its IJK-to-RAS matrix, as a layer of a ``vtkImageStack``."""
    import vtk

    mapper = vtk.vtkImageSliceMapper()
    mapper.SetInputData(image)
    mapper.BorderOn()  # show the edge pixels whole, as Slicer does
    layer_slice = vtk.vtkImageSlice()
    layer_slice.SetMapper(mapper)
    layer_slice.SetUserMatrix(ijk_to_ras)
    prop = layer_slice.GetProperty()
    prop.SetLayerNumber(layer)
    if linear:
        prop.SetInterpolationTypeToLinear()
    else:
        prop.SetInterpolationTypeToNearest()
    if lookup_table is not None:
        prop.SetLookupTable(lookup_table)
        prop.UseLookupTableScalarRangeOn()
    return layer_slice


def _mask_image(mask: Any) -> Any:
    """The ``(k, j, i)`` mask as a vtkImageData on the volume's IJK grid (origin 0, spacing 1)."""
    import numpy as np
    import vtk
    import vtk.util.numpy_support as vtk_np

    arr = np.ascontiguousarray(mask, dtype=np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
    image.GetPointData().SetScalars(vtk_np.numpy_to_vtk(arr.ravel(), deep=True))
    return image


def _text(renderer: Any, text: str, x: float, y: float, size: int, **style: Any) -> None:
    """A text at normalized viewport position (x, y); ``style``: bold, color, right, top."""
    import vtk

    actor = vtk.vtkTextActor()
    actor.SetInput(text)
    actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    actor.GetPositionCoordinate().SetValue(x, y)
    prop = actor.GetTextProperty()
    prop.SetFontFamilyToArial()
    prop.SetFontSize(size)
    prop.SetBold(style.get("bold", False))
    prop.SetColor(style.get("color", TEXT_COLOR))
    prop.SetLineSpacing(1.25)
    if style.get("right"):
        prop.SetJustificationToRight()
    if style.get("top"):
        prop.SetVerticalJustificationToTop()
    renderer.AddViewProp(actor)


def _slice_view(
    window: Any,
    view: int,
    volume: Any,
    layers: Sequence[Any],
    image_size: tuple[int, int],
    window_size: tuple[int, int],
) -> tuple[Any, Placement]:
    """A renderer like Slicer's axial ("Red") slice view, with the image fitted to :func:`placement`.

    Slicer's axial view looks from below (radiological convention): screen right is patient
    left (-x in RAS), screen up is anterior (+y). A JPEG's IJK-to-RAS diag(-1, -1, 1) thus shows
    the picture as the file has it.
    """
    import vtk

    renderer = vtk.vtkRenderer()
    renderer.SetViewport(view / 2, 0.0, (view + 1) / 2, 1.0)
    renderer.SetBackground(*BACKGROUND)
    stack = vtk.vtkImageStack()
    for layer in layers:
        stack.AddImage(layer)
    stack.SetActiveLayer(0)
    renderer.AddViewProp(stack)
    window.AddRenderer(renderer)

    place = placement(image_size, view, window_size)
    spacing = volume.GetSpacing()
    camera = renderer.GetActiveCamera()
    camera.ParallelProjectionOn()
    center = _ijk_to_ras(volume).MultiplyPoint([(image_size[0] - 1) / 2, (image_size[1] - 1) / 2, 0.0, 1.0])[:3]
    camera.SetFocalPoint(*center)
    camera.SetPosition(center[0], center[1], center[2] - 500.0)  # from inferior, looking superior
    camera.SetViewUp(0.0, 1.0, 0.0)
    camera.SetParallelScale(window_size[1] / place.scale * abs(spacing[1]) / 2)
    renderer.ResetCameraClippingRange()
    return renderer, place


def render(result: Result, window_size: tuple[int, int] = WINDOW_SIZE) -> Any:
    """Draw the result off-screen; return the picture as an RGB vtkImageData (row 0 at the bottom).

    Left view: the MRI with the segment as a translucent fill and an outline in ``SEGMENT_COLOR``;
    right view: the MRI with the tumor probability as a heat overlay and its color bar.
    """
    import vtk

    from BrainTumorSegmentationLib import SEGMENT_COLOR

    _use_headless_window()
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)  # exact colors: the segment's outline is drawn in SEGMENT_COLOR itself
    window.SetSize(*window_size)

    volume, ijk_to_ras = result.volume, _ijk_to_ras(result.volume)
    dims = volume.GetImageData().GetDimensions()
    image_size = (dims[0], dims[1])

    # Left: segmentation (labelmap fill with nearest-neighbour pixels, as Slicer shows a labelmap)
    fill = vtk.vtkLookupTable()
    fill.SetNumberOfTableValues(2)
    fill.SetTableRange(0, 1)
    fill.SetTableValue(0, 0.0, 0.0, 0.0, 0.0)
    fill.SetTableValue(1, *SEGMENT_COLOR, FILL_OPACITY)
    mask_image = _mask_image(result.mask)
    left, _ = _slice_view(
        window,
        0,
        volume,
        [
            _image_layer(volume.GetImageData(), ijk_to_ras, 0),
            _image_layer(mask_image, ijk_to_ras, 1, fill, linear=False),
        ],
        image_size,
        window_size,
    )
    outline = vtk.vtkFlyingEdges2D()  # the 0.5 iso-line of the 0/1 mask: the segment's outline
    outline.SetInputData(mask_image)
    outline.SetValue(0, 0.5)
    outline_mapper = vtk.vtkPolyDataMapper()
    outline_mapper.SetInputConnection(outline.GetOutputPort())
    outline_mapper.ScalarVisibilityOff()
    outline_actor = vtk.vtkActor()
    outline_actor.SetMapper(outline_mapper)
    to_world = vtk.vtkTransform()
    to_world.PostMultiply()
    to_world.Concatenate(ijk_to_ras)
    to_world.Translate(0.0, 0.0, -1.0)  # 1 mm towards the camera: in front of the image plane
    outline_actor.SetUserTransform(to_world)
    prop = outline_actor.GetProperty()
    prop.SetColor(*SEGMENT_COLOR)
    prop.SetLineWidth(OUTLINE_WIDTH)
    prop.LightingOff()
    left.AddActor(outline_actor)
    left.ResetCameraClippingRange()

    # Right: probability (0..1) over the MRI, transparent where the model sees nothing
    heat = vtk.vtkLookupTable()
    heat.SetTableRange(0.0, 1.0)
    heat.SetHueRange(0.0, 0.16)  # red to yellow
    heat.SetSaturationRange(1.0, 0.9)
    heat.SetValueRange(0.85, 1.0)
    heat.SetAlphaRange(0.0, 0.7)
    heat.SetRampToSCurve()  # keep the faint background probabilities from tinting the brain
    heat.Build()
    right, _ = _slice_view(
        window,
        1,
        volume,
        [
            _image_layer(volume.GetImageData(), ijk_to_ras, 0),
            _image_layer(result.probability.GetImageData(), _ijk_to_ras(result.probability), 1, heat),
        ],
        image_size,
        window_size,
    )
    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(heat)
    bar.SetOrientationToHorizontal()
    bar.SetNumberOfLabels(3)
    bar.SetLabelFormat("%.1f")
    bar.UnconstrainedFontSizeOn()
    bar.SetBarRatio(0.4)
    bar.SetTextPositionToPrecedeScalarBar()  # labels under the bar
    labels = bar.GetLabelTextProperty()
    labels.SetFontFamilyToArial()
    labels.SetFontSize(13)
    labels.SetColor(*DIM_TEXT_COLOR)
    labels.ShadowOff()
    labels.ItalicOff()
    labels.BoldOff()
    bar.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    bar.GetPositionCoordinate().SetValue(0.55, 0.895)
    bar.SetWidth(0.41)
    bar.SetHeight(0.075)
    right.AddViewProp(bar)

    # Annotations in the margins above and below the images, where Slicer writes its corner texts
    # (B: background volume, F: foreground volume)
    top, bottom = 0.975, 0.03
    _text(left, MODULE_TITLE, 0.035, top, 24, bold=True, top=True)
    _text(left, result.model, 0.035, top - 0.045, 15, color=DIM_TEXT_COLOR, top=True)
    _text(left, result.summary, 0.035, bottom + 0.035, 18, bold=True)
    _text(left, f"B: {volume.GetName()}", 0.035, bottom, 13, color=DIM_TEXT_COLOR)
    _text(right, "Tumor probability", 0.52, 0.955, 15, color=DIM_TEXT_COLOR, right=True, top=True)
    _text(right, f"F: {result.probability.GetName()}", 0.035, bottom + 0.035, 13, color=DIM_TEXT_COLOR)
    _text(right, f"B: {volume.GetName()}", 0.035, bottom, 13, color=DIM_TEXT_COLOR)

    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    picture = vtk.vtkImageData()
    picture.DeepCopy(grab.GetOutput())
    window.Finalize()
    return picture


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def write_png(picture: Any, path: str | os.PathLike) -> str:
    """Write ``picture`` to ``path`` atomically (the bundle's ``atomic_output``: a temporary file beside it).

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist (it is not created).
        OSError: the PNG could not be written.
    """
    import vtk
    from BrainTumorSegmentationLib.inference import bundle_module

    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):  # atomic_output would make it: a mistyped folder should not appear
        raise FileNotFoundError(f"output folder {folder} does not exist; create it first")
    with bundle_module("io", str(BUNDLE)).atomic_output(target) as tmp:
        writer = vtk.vtkPNGWriter()
        writer.SetCompressionLevel(9)
        writer.SetInputData(picture)
        writer.SetFileName(tmp)
        writer.Write()
        if writer.GetErrorCode() or os.path.getsize(tmp) == 0:
            raise OSError(f"cannot write {target}: the PNG writer failed (error code {writer.GetErrorCode()})")
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "output", nargs="?", default=str(DEFAULT_OUTPUT), help=f"PNG to write (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--image",
        default=str(DEFAULT_IMAGE),
        help="slice to segment (default: the bundle's sample %(default)s, where the model finds a tumor)",
    )
    parser.add_argument(
        "--bundle", default=str(BUNDLE), help="MONAI bundle with models/model.pt (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Segment the sample, render the screenshot and write it; return the exit status (0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):  # say so before the model runs, not after
        parser.error(f"output folder {folder} does not exist; create it first")
    if not os.path.isfile(args.image):
        parser.error(f"image {args.image} does not exist")
    result = segment_sample(args.image, args.bundle)
    written = write_png(render(result), args.output)
    print(f"{written}: {os.path.getsize(written)} bytes; {result.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
