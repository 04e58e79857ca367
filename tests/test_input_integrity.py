"""Inputs that used to give silent wrong results are read right or refused by name.

Every case is a real file written here: COCO splits whose records share a file or hold 100,000-digit
integers, DICOM series written by ITK's GDCM writer (a missing slice, two series in one folder, slices
of two sizes), JPEGs with an EXIF orientation written by PIL, multi-page TIFFs and symbolic links among
true outlines; each goes through the one reader every front end uses and through the ``brainseg`` CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from brainseg_monai.cli import main
from conftest import SAMPLE_OUTLINES, SAMPLE_SPLIT
from scripts.io import MEDICAL_SUFFIXES, PLAIN_IMAGE_SUFFIXES, list_images, open_image, read_grey, read_medical_image

itk = pytest.importorskip("itk")

ANNOTATIONS = "_annotations.coco.json"
HUGE = "9" * 100_000  # Python converts at most 4300 digits: "Exceeds the limit (4300 digits)"


def _json(split: Path) -> dict:
    return json.loads((split / ANNOTATIONS).read_text())


def _write_json(split: Path, data: dict) -> None:
    (split / ANNOTATIONS).write_text(json.dumps(data))


# -- COCO ----------------------------------------------------------------------------------


def test_two_images_with_one_file_name_are_an_error_naming_both_ids(sample_split, capsys):
    data = _json(sample_split)
    first, second = data["images"][0], data["images"][1]
    second["file_name"] = first["file_name"]  # its own annotations now point at the first image's pixels
    _write_json(sample_split, data)
    assert main(["check-data", str(sample_split)]) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "two images with one file" in line)
    assert f"images[id={second['id']}].file_name" in line and f"images[id={first['id']}]" in line
    assert repr(first["file_name"]) in line
    # evaluate refuses the split before anything is written: no mis-scored table
    out = sample_split.parent / "out"
    assert main(["evaluate", str(sample_split), "--output-dir", str(out)]) == 1
    assert "two images with one file" in capsys.readouterr().err
    assert not out.exists()


def test_an_integer_of_100000_digits_in_the_coco_json_is_named_by_its_field(sample_split, capsys):
    data = _json(sample_split)
    image_id = data["images"][0]["id"]
    data["images"][0]["width"] = "<width>"
    data["annotations"][0]["id"] = "<id>"
    text = json.dumps(data).replace('"<width>"', HUGE).replace('"<id>"', f"-{HUGE}")
    (sample_split / ANNOTATIONS).write_text(text)  # JSON allows any number of digits
    assert main(["check-data", str(sample_split)]) == 1
    err = capsys.readouterr().err
    assert "Exceeds the limit" not in err and HUGE[:200] not in err
    assert f"images[id={image_id}].width: must be a positive integer, got an integer of 100000 digits" in err
    assert "].id: must be an integer, got an integer of 100000 digits" in err


def test_cli_options_of_100000_digits_get_a_short_message_naming_the_option(sample_split, capsys):
    for option in ("--epochs", "--batch-size"):
        command = "train" if option == "--epochs" else "segment"
        required = ["--dataset-dir", "x"] if command == "train" else ["x.png"]
        with pytest.raises(SystemExit) as stop:
            main([command, *required, "--output-dir", "out", option, HUGE])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}: a number of 100000 digits: too large" in err and len(err) < 2000
    assert main(["check-data", str(sample_split), "--category-map", f'{{"Tumor": {HUGE}}}']) == 1
    err = capsys.readouterr().err
    assert "--category-map: the label of 'Tumor' has 100000 digits: labels are 0 or 1" in err and len(err) < 500
    assert main(["check-data", str(sample_split), "--category-map", f'{{"{HUGE}": 1}}']) == 1
    err = capsys.readouterr().err
    assert "no category named or numbered '9999" in err and "(100002 characters)" in err and len(err) < 2000


# -- DICOM series --------------------------------------------------------------------------


def _write_series(folder: Path, uid: str, positions, sizes=None, number: str = "3", description: str = "T1 post"):
    """Axial MR slices of one series written by ITK's GDCM writer, at ``positions`` (mm along z)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, z in enumerate(positions):
        shape = sizes[k] if sizes else (16, 16)
        pixels = np.random.default_rng(k).integers(1, 100, shape).astype(np.int16)
        image = itk.image_from_array(np.ascontiguousarray(pixels))
        meta = image.GetMetaDataDictionary()
        tags = {
            "0008|0060": "MR",
            "0020|000e": uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|0011": number,
            "0008|103e": description,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
        }
        for key, value in tags.items():
            meta[key] = value
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()  # the files of one series share the UID given
        itk.imwrite(image, str(folder / f"{uid[-4:]}_{k:03d}.dcm"), imageio=io)
    return folder


UID_A, UID_B = "1.2.826.0.1.3680043.2.1125.1.1111", "1.2.826.0.1.3680043.2.1125.1.2222"


@pytest.fixture
def series(tmp_path) -> dict[str, Path]:
    root = tmp_path / "dicom"
    return {
        "complete": _write_series(root / "complete", UID_A, [0, 2.5, 5, 7.5]),
        "gap": _write_series(root / "gap", UID_A, [0, 2, 4, 8, 10]),  # the slice at 6 mm is missing
        "repeated": _write_series(root / "repeated", UID_A, [0, 2, 2, 4]),
        "mixed": _write_series(root / "mixed", UID_A, [0, 2, 4], sizes=[(16, 16), (16, 16), (32, 32)]),
        "two": _write_series(
            _write_series(root / "two", UID_A, [0, 2, 4]), UID_B, [0, 3, 6, 9], number="5", description="FLAIR"
        ),
    }


def test_a_complete_series_is_read_with_its_spacing(series):
    array, image = read_medical_image(series["complete"])
    assert array.shape == (4, 16, 16)
    assert tuple(image.GetSpacing())[2] == pytest.approx(2.5)


def test_a_series_with_a_missing_slice_is_refused_naming_the_gap(series):
    with pytest.raises(ValueError) as refused:
        read_medical_image(series["gap"])
    message = str(refused.value)
    assert message.startswith(f"{series['gap']}: slices are not evenly spaced: 4 mm between 1111_002.dcm and ")
    assert "1111_003.dcm, 2 mm between the others; a slice is missing?" in message
    assert "spacing would be wrong" in message
    with pytest.raises(ValueError, match="two slices at one position .2 mm along the slice normal.: 1111_001.dcm"):
        read_medical_image(series["repeated"])


def test_a_series_folder_with_a_stray_picture_is_refused_not_cut_into_single_slices(series, tmp_path, capsys):
    """A preview.jpg beside a series' .dcm files made the folder a folder of separate images: each slice was
    segmented alone, without its neighbours. Refused where brainseg and monai.bundle run list their inputs, given
    as the folder or as a sub-folder, before anything is written."""
    folder = series["complete"]
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], folder / "preview.jpg")
    expected = (
        f"{folder}: holds 4 DICOM file(s) and other images (preview.jpg); a folder of .dcm files is read as one "
        "DICOM series: move the other images out of it, or name the files to segment one by one"
    )
    out = tmp_path / "out"
    for given in (folder, folder.parent):
        assert main(["segment", str(given), "--output-dir", str(out)]) == 1
        assert capsys.readouterr().err.strip() == f"brainseg segment: error: {expected}"
    assert not out.exists()
    for suffixes in (MEDICAL_SUFFIXES, PLAIN_IMAGE_SUFFIXES + MEDICAL_SUFFIXES):  # monai.bundle run's lists, brainseg's
        with pytest.raises(ValueError) as refused:
            list_images(folder, suffixes, series=True)
        assert str(refused.value) == expected
    (folder / "preview.jpg").unlink()
    assert main(["segment", str(folder), "--output-dir", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["complete.nii.gz", "complete_slices.csv", "tumor_report.csv"]


def test_a_folder_of_two_series_is_refused_listing_both(series):
    with pytest.raises(ValueError) as refused:
        read_medical_image(series["two"])
    message = str(refused.value)
    assert f"{series['two']}: holds 2 DICOM series, and a folder is read as one volume" in message
    assert f"series 3 'T1 post' (3 file(s), e.g. 1111_000.dcm; SeriesInstanceUID {UID_A})" in message
    assert f"series 5 'FLAIR' (4 file(s), e.g. 2222_000.dcm; SeriesInstanceUID {UID_B})" in message
    assert "in a folder of their own" in message


def test_slices_of_two_sizes_in_one_series_are_refused_by_size_and_file(series):
    with pytest.raises(ValueError) as refused:
        read_medical_image(series["mixed"])
    assert str(refused.value).startswith(
        f"{series['mixed']}: slices of different sizes in one DICOM series: 16x16 (2 file(s), e.g. 1111_000.dcm), "
        "32x32 (1 file(s), e.g. 1111_002.dcm)"
    )


def test_segment_refuses_each_bad_series_and_segments_the_good_one(series, tmp_path, capsys):
    out = tmp_path / "masks"
    folders = [series[name] for name in ("complete", "gap", "two", "mixed")]
    assert main(["segment", *map(str, folders), "--output-dir", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {series['gap']}: slices are not evenly spaced" in err
    assert f"FAILED {series['two']}: holds 2 DICOM series" in err
    assert f"FAILED {series['mixed']}: slices of different sizes in one DICOM series" in err
    assert "Traceback" not in err and "Non uniform sampling" not in err
    mask = itk.imread(str(out / "complete.nii.gz"))
    assert tuple(mask.GetSpacing())[2] == pytest.approx(2.5)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["complete.nii.gz"]


# -- EXIF orientation ----------------------------------------------------------------------


def _sideways_jpeg(path: Path, upright: Image.Image, orientation: int = 6) -> None:
    """``upright`` stored a quarter turn off, with the EXIF Orientation that turns it back (as a camera writes)."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # Orientation 6: a viewer turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=95)


def test_exif_orientation_is_applied_by_the_reader_and_the_mask_is_written_as_shown(tmp_path, capsys):
    source = sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]
    upright = Image.open(source).convert("L").crop((0, 0, 640, 480))  # not square: a turn changes the size
    photo = tmp_path / "photo.jpg"
    _sideways_jpeg(photo, upright)
    with Image.open(photo) as raw:
        assert raw.size == (480, 640) and raw.getexif()[0x0112] == 6
        shown = ImageOps.exif_transpose(raw)  # what a viewer shows
    assert shown.size == (640, 480)
    reference = tmp_path / "shown.png"
    shown.save(reference)  # the same pixels, upright, without a tag
    grey = read_grey(photo)
    assert grey.shape == (480, 640)
    np.testing.assert_array_equal(grey, read_grey(reference))
    out = tmp_path / "masks"
    assert main(["segment", str(photo), str(reference), "--output-dir", str(out), "--device", "cpu"]) == 0
    with Image.open(out / "photo.png") as mask, Image.open(out / "shown.png") as upright_mask:
        assert mask.size == (640, 480) and not mask.getexif()
        assert np.asarray(mask).any()  # a tumor is drawn, so its place tells the orientation
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(upright_mask))


def test_check_data_compares_the_annotated_size_with_the_size_shown(sample_split, capsys):
    data = _json(sample_split)
    record = data["images"][0]
    _sideways_jpeg(sample_split / record["file_name"], Image.open(sample_split / record["file_name"]).convert("L"))
    assert main(["check-data", str(sample_split)]) == 0  # 640x640 either way: the size shown is the JSON's
    capsys.readouterr()
    name = "wide.jpg"
    _sideways_jpeg(sample_split / name, Image.new("L", (64, 32), 90))
    data["images"].append({"id": 99991, "file_name": name, "height": 64, "width": 32})  # the stored size, not shown
    _write_json(sample_split, data)
    assert main(["check-data", str(sample_split)]) == 1
    err = capsys.readouterr().err
    assert (
        "images[id=99991].height/width: JSON says 32x64 but wide.jpg is 64x32 as shown (its EXIF orientation turns "
        "it a quarter)"
    ) in err


# -- multi-page files and outlines ---------------------------------------------------------


def _two_pages(path: Path, fmt: str = "TIFF") -> None:
    first = Image.new("L", (64, 64), 0)
    second = Image.new("L", (64, 64), 255)
    first.save(path, format=fmt, save_all=True, append_images=[second])


def test_a_multi_page_tiff_is_refused_by_every_reader_never_read_on_page_one(tmp_path, sample_split, capsys):
    stack = tmp_path / "stack.tif"
    _two_pages(stack)
    for read in (read_grey, open_image):
        with pytest.raises(ValueError, match=f"{stack}: image file has 2 frames .a 3D stack.; a 2D image is expected"):
            read(stack)
    outline = tmp_path / "outline.png"  # a TIFF under an outline's name: PIL goes by the content
    _two_pages(outline)
    from scripts.metrics.pixel import load_outline

    with pytest.raises(ValueError, match="has 2 frames"):
        load_outline(outline)
    animated = tmp_path / "animated.png"  # an animated PNG: frames too
    _two_pages(animated, "PNG")
    with pytest.raises(ValueError, match="has 2 frames"):
        read_grey(animated)
    out = tmp_path / "masks"
    assert main(["segment", str(stack), "--output-dir", str(out), "--device", "cpu"]) == 1
    assert f"FAILED {stack}: image file has 2 frames (a 3D stack); a 2D image is expected" in capsys.readouterr().err


def test_evaluate_refuses_a_symbolic_link_among_the_outlines_before_any_work(tmp_path, capsys):
    outlines = tmp_path / "outlines"
    shutil.copytree(SAMPLE_OUTLINES, outlines)
    victim = next(outlines.glob("*.png"))
    victim.unlink()
    victim.symlink_to("/dev/zero")  # followed, it would be read forever
    out = tmp_path / "out"
    args = ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--outlines", str(outlines), "--device", "cpu"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"brainseg evaluate: error: {victim}: outline is a symbolic link: refused" in err
    assert "Traceback" not in err and not (out / "metrics_summary.json").exists()
    from scripts.metrics.pixel import load_outline

    with pytest.raises(ValueError, match="outline is a symbolic link"):
        load_outline(victim)
