"""DICOM inputs of another modality (CT, ultrasound...) are refused before the model sees them; MR passes.

The files are real DICOM written by ITK's GDCM writer, read back through the same reader as every
front end (:func:`scripts.io.read_medical_image`) and through ``brainseg segment``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from brainseg_monai.cli import main
from scripts.io import DICOM_MODALITY_TAG, DICOM_SOP_CLASS_TAG, read_medical_image

itk = pytest.importorskip("itk")

MESSAGE = "not MR: this model segments T1 contrast MRI only"


def _pixels(shape: tuple[int, ...] = (16, 16), seed: int = 0) -> np.ndarray:
    # values 1..99: the bytes of the Modality element's tag (08 00 60 00) cannot occur in them by chance
    return np.random.default_rng(seed).integers(1, 100, shape).astype(np.int16)


def _write_dicom(path: Path, pixels: np.ndarray, modality: str | None, tags: dict[str, str] | None = None) -> Path:
    """One 2D DICOM file with ``modality`` in 0008|0060; without it when None (GDCM writes ``OT`` unless told)."""
    image = itk.image_from_array(np.ascontiguousarray(pixels, dtype=np.int16))
    meta = image.GetMetaDataDictionary()
    for key, value in {**(tags or {}), **({DICOM_MODALITY_TAG: modality} if modality is not None else {})}.items():
        meta[key] = value
    io = itk.GDCMImageIO.New()
    io.KeepOriginalUIDOn()  # keep the series UID given in ``tags``: the files of one series must share it
    itk.imwrite(image, str(path), imageio=io)
    if modality is None:
        _drop_modality(path)
    return path


def _drop_modality(path: Path) -> None:
    """Remove the Modality element GDCM always writes: a real file without the tag, as some exports are.

    ITK writes implicit VR little endian: tag (8, 0x60), a 4-byte length, the value. Group 8 has no
    group length element to correct.
    """
    data = path.read_bytes()
    assert b"1.2.840.10008.1.2\x00" in data[:400], "expected ITK's implicit VR little endian"
    at = data.find(struct.pack("<HH", 0x0008, 0x0060))
    assert at > 132
    (length,) = struct.unpack("<I", data[at + 4 : at + 8])
    path.write_bytes(data[:at] + data[at + 8 + length :])


def _write_series(folder: Path, modality: str | None, n: int = 3) -> Path:
    """``n`` 2D DICOM files of one series (shared series UID, positions along z): read as one volume."""
    folder.mkdir()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    for k in range(n):
        tags = {
            "0020|000e": series_uid,
            "0020|000d": series_uid + ".1",
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{2.0 * k}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
        }
        _write_dicom(folder / f"slice{k:03d}.dcm", _pixels(seed=k), modality, tags)
    return folder


def _header_modality(path: Path) -> str | None:
    io = itk.GDCMImageIO.New()
    io.SetFileName(str(path))
    io.ReadImageInformation()
    tags = io.GetMetaDataDictionary()
    return str(tags[DICOM_MODALITY_TAG]) if tags.HasKey(DICOM_MODALITY_TAG) else None


@pytest.mark.parametrize("modality", ["MR", "OT", None])
def test_an_mr_dicom_file_a_secondary_capture_or_one_without_modality_is_read(tmp_path: Path, modality: str | None):
    pixels = _pixels()
    path = _write_dicom(tmp_path / "slice.dcm", pixels, modality)
    assert _header_modality(path) == modality  # what the file really holds
    array, image = read_medical_image(path)
    assert array.shape == (1, 16, 16) and np.array_equal(array[0], pixels)
    assert image is not None


@pytest.mark.parametrize("modality", ["CT", "US", "CR", "PT"])
def test_a_dicom_file_of_another_modality_is_refused_naming_file_and_modality(tmp_path: Path, modality: str):
    path = _write_dicom(tmp_path / "scan.dcm", _pixels(), modality)
    assert _header_modality(path) == modality
    with pytest.raises(ValueError) as info:
        read_medical_image(path)
    assert str(info.value) == f"{path}: DICOM Modality is {modality}, {MESSAGE}"


def test_a_dicom_series_folder_is_checked_too(tmp_path: Path):
    array, _ = read_medical_image(_write_series(tmp_path / "mr", "MR"))
    assert array.shape == (3, 16, 16) and np.array_equal(array[2], _pixels(seed=2))
    assert read_medical_image(_write_series(tmp_path / "untagged", None))[0].shape == (3, 16, 16)
    ct = _write_series(tmp_path / "ct", "CT")
    with pytest.raises(ValueError, match=f"^{ct}: DICOM Modality is CT, {MESSAGE}$"):
        read_medical_image(ct)


def test_segment_reports_a_ct_dicom_on_one_line_and_writes_no_mask_for_it(tmp_path: Path, capsys):
    """``brainseg segment`` over MR and CT DICOM (a file and a series): the MR one is segmented, each CT
    one fails on one line naming it, and gets no mask."""
    # named one by one: a folder holding only .dcm files is itself read as one series
    mr_file = _write_dicom(tmp_path / "brain_mr.dcm", _pixels((64, 64)), "MR")
    ct_file = _write_dicom(tmp_path / "chest_ct.dcm", _pixels((64, 64)), "CT")
    ct_series = _write_series(tmp_path / "abdomen_ct", "CT")
    out = tmp_path / "out"
    args = [str(mr_file), str(ct_file), str(ct_series), "--output-dir", str(out), "--device", "cpu"]
    code = main(["segment", *args])  # the shipped model
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    failed = [line for line in err if line.startswith("FAILED")]
    assert sorted(failed) == sorted(f"FAILED {p}: DICOM Modality is CT, {MESSAGE}" for p in (ct_file, ct_series)), err
    assert not any("Traceback" in line for line in err)
    assert (out / "brain_mr.nii.gz").is_file()
    assert not (out / "chest_ct.nii.gz").exists() and not (out / "abdomen_ct.nii.gz").exists()


def _blank_modality(path: Path) -> None:
    """Write spaces over the Modality's value: an empty tag, as some anonymizers leave it."""
    data = path.read_bytes()
    at = data.find(struct.pack("<HH", 0x0008, 0x0060))
    (length,) = struct.unpack("<I", data[at + 4 : at + 8])
    path.write_bytes(data[: at + 8] + b" " * length + data[at + 8 + length :])


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.mark.parametrize("stripped", ["dropped", "blank", "OT"])
def test_a_ct_whose_modality_says_nothing_is_refused_by_its_sop_class(tmp_path: Path, stripped: str, capsys):
    """A CT whose Modality was removed, emptied or written as OT still says what it is in its SOP Class UID."""
    tags = {DICOM_SOP_CLASS_TAG: CT_IMAGE_STORAGE}
    path = _write_dicom(
        tmp_path / "scan.dcm", _pixels((64, 64)), {"dropped": None, "blank": "CT", "OT": "OT"}[stripped], tags
    )
    if stripped == "blank":
        _blank_modality(path)
    said = "no Modality" if stripped != "OT" else "Modality OT"
    expected = f"{path}: DICOM SOP Class UID {CT_IMAGE_STORAGE} (CT), {MESSAGE.replace('not MR', f'not MR ({said})')}"
    with pytest.raises(ValueError) as info:
        read_medical_image(path)
    assert str(info.value) == expected
    if stripped == "dropped":  # once through brainseg segment: the same reader refuses it there
        out = tmp_path / "out"
        assert main(["segment", str(path), "--output-dir", str(out), "--device", "cpu"]) == 1
        assert f"FAILED {expected}" in capsys.readouterr().err and not (out / "scan.nii.gz").exists()


@pytest.mark.parametrize("sop_class", [MR_IMAGE_STORAGE, MR_IMAGE_STORAGE + ".1", "1.2.840.10008.5.1.4.1.1.7"])
def test_an_mr_or_secondary_capture_class_without_modality_is_read(tmp_path: Path, sop_class: str):
    path = _write_dicom(tmp_path / "slice.dcm", _pixels(), None, {DICOM_SOP_CLASS_TAG: sop_class})
    assert read_medical_image(path)[0].shape == (1, 16, 16)
