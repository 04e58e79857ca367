"""Image and mask files: naming, atomic writes, medical formats through ITK.

One home for path conventions (a mask is named after its input's stem) and for writing
files so that a crash never leaves a truncated one behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "MEDICAL_SUFFIXES",
    "PLAIN_IMAGE_SUFFIXES",
    "atomic_output",
    "image_stem",
    "is_medical_image",
    "list_images",
    "mask_output_path",
    "read_medical_image",
    "write_mask",
    "write_medical_mask",
]

PLAIN_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MEDICAL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one suffix)."""
    name = os.path.basename(os.fspath(path).rstrip("/\\"))
    for suffix in MEDICAL_SUFFIXES + PLAIN_IMAGE_SUFFIXES + (".seg.nrrd",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def mask_output_path(source: str | os.PathLike, output_dir: str | os.PathLike, ext: str = ".png") -> str:
    """Where the mask of ``source`` goes: ``output_dir/<stem of source><ext>``."""
    return os.path.join(os.fspath(output_dir), image_stem(source) + ext)


def is_medical_image(path: str | os.PathLike) -> bool:
    """True for NIfTI, NRRD, MetaImage, DICOM files and DICOM series folders (read with ITK)."""
    p = os.fspath(path)
    return os.path.isdir(p) or p.lower().endswith(MEDICAL_SUFFIXES)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Raises:
        OSError: the folder is missing or not writable (with the folder named).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {target.parent}: {e.strerror}") from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_mask(mask: np.ndarray, path: str | os.PathLike, scale: int = 255) -> str:
    """Write a 2D (H, W) mask atomically: PNG as 0/``scale`` (uint8), NIfTI as label values.

    Args:
        mask: label mask in numpy (row, column) order.
        path: ``.png``, ``.nii`` or ``.nii.gz``.
        scale: PNG value of foreground (labels are multiplied, clipped to 255).

    Raises:
        ValueError: ``mask`` is not 2D or the suffix is unsupported.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: a mask must be 2D, got shape {mask.shape}")
    p = os.fspath(path)
    low = p.lower()
    with atomic_output(p) as tmp:
        if low.endswith(".png"):
            from PIL import Image

            Image.fromarray(np.clip(mask.astype(np.int32) * scale, 0, 255).astype(np.uint8), mode="L").save(
                tmp, format="PNG"
            )
        elif low.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            # NIfTI indexes (x=column, y=row); keep a third axis so viewers show one slice.
            nib.save(nib.Nifti1Image(mask.T[:, :, None].astype(np.uint8), np.eye(4)), tmp)
        else:
            raise ValueError(f"{p}: unsupported mask format (use .png, .nii or .nii.gz)")
    return p


def read_medical_image(path: str | os.PathLike):
    """Read NIfTI/NRRD/MetaImage/DICOM (a file or a series folder) with ITK.

    Returns:
        ``(array, itk_image)``: the array in ITK's numpy order ((z,) y, x) as float32, and the
        ITK image whose geometry a mask is written with.

    Raises:
        ValueError: the file cannot be read or is not 2D/3D scalar.
    """
    import itk

    p = os.fspath(path)
    try:
        if os.path.isdir(p):
            names = itk.GDCMSeriesFileNames.New(Directory=p)
            uids = names.GetSeriesUIDs()
            if not uids:
                raise ValueError(f"{p}: no DICOM series in this folder")
            image = itk.imread(list(names.GetFileNames(uids[0])), itk.F)
        else:
            image = itk.imread(p, itk.F)
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"{p}: cannot read image ({first})") from None
    array = itk.array_from_image(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"{p}: expected a 2D or 3D scalar image, got array of shape {array.shape}")
    return array.astype(np.float32, copy=False), image


def write_medical_mask(mask: np.ndarray, reference, path: str | os.PathLike) -> str:
    """Write a mask with the geometry (spacing, origin, direction) of ITK image ``reference``."""
    import itk

    p = os.fspath(path)
    out = itk.image_from_array(np.ascontiguousarray(mask.astype(np.uint8)))
    out.CopyInformation(reference)
    with atomic_output(p) as tmp:
        itk.imwrite(out, tmp, compression=True)
    return p


def list_images(folder: str | os.PathLike, suffixes: tuple[str, ...] = PLAIN_IMAGE_SUFFIXES) -> list[str]:
    """Sorted paths of the image files directly inside ``folder`` (JPEG/PNG/... by suffix).

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
    """
    p = os.fspath(folder)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"{p}: image folder not found")
    return sorted(
        os.path.join(p, name) for name in os.listdir(p) if name.lower().endswith(suffixes) and not name.startswith(".")
    )
