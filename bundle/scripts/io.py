"""Image and mask files: naming, atomic writes, medical formats through ITK.

One home for path conventions (a mask is named after its input's stem) and for writing
files so that a crash never leaves a truncated one behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [  # noqa: F822 - PILImageReader is built on first use (__getattr__)
    "DICOM_MODALITY_TAG",
    "MAX_PIXELS",
    "MEDICAL_SUFFIXES",
    "PLAIN_IMAGE_SUFFIXES",
    "PILImageReader",
    "atomic_folder",
    "atomic_output",
    "check_distinct_masks",
    "check_inference_inputs",
    "image_stem",
    "is_dicom_series",
    "is_medical_image",
    "list_images",
    "mask_output_path",
    "read_grey",
    "read_medical_image",
    "to_grey",
    "write_mask",
    "write_medical_mask",
]

PLAIN_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: The one size limit of every reader, checked from the header before any pixel is decoded:
#: pixels of a 2D image or voxels of a volume (a 4000x4000 slice is 16 M, 512x512x300 is 79 M).
MAX_PIXELS = 100_000_000
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
    suffix = "".join(target.suffixes)[-16:] or ".tmp"
    try:
        # a short prefix: the temporary name must fit where the final name fits (255 bytes)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:24]}.", suffix=suffix, dir=target.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {target.parent}: {e.strerror}") from None
    os.close(fd)
    try:
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
            os.replace(tmp, target)
        except OSError as e:
            if e.errno is None or str(target) in str(e):
                raise
            # e.g. ENOSPC from the writer names the temporary file at best: name the target
            raise OSError(e.errno, f"cannot write {target}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    A failed block leaves ``path`` as it was (absent, or the earlier run's folder) and no
    temporary folder: a run that fails half-way leaves no half-filled folder of results.

    Raises:
        OSError: the parent folder is missing or not writable (with the folder named).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = tempfile.mkdtemp(prefix=f".{target.name[:24]}.", dir=target.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {target.parent}: {e.strerror}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if target.exists():
            old = tempfile.mkdtemp(prefix=f".{target.name[:24]}.old.", dir=target.parent)
            os.replace(target, os.path.join(old, target.name))
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


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
        ValueError: the file cannot be read or is not 2D/3D scalar, or it is a DICOM whose Modality
            is not MR (:func:`_check_dicom_modality`).
    """
    import itk

    p = os.fspath(path)
    if not os.path.isdir(p):
        _check_medical_header(p)  # before ITK reads a pixel
        _check_dicom_modality(p, p)
    try:
        if os.path.isdir(p):
            names = itk.GDCMSeriesFileNames.New(Directory=p)
            uids = names.GetSeriesUIDs()
            if not uids:
                raise ValueError(f"{p}: no DICOM series in this folder")
            files = list(names.GetFileNames(uids[0]))
            # Modality is a series-level attribute: the first file's header speaks for the series
            _check_dicom_modality(p, files[0])
            image = itk.imread(files, itk.F)
        else:
            image = itk.imread(p, itk.F)
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        # ITK's "No ImageIO is registered" says neither what the file is nor what to do
        raise ValueError(f"{p}: {_unreadable_reason(p) or f'cannot read image ({first})'}") from None
    array = itk.array_from_image(image)
    if p.lower().endswith((".nii", ".nii.gz")):
        stored = _nifti_shape(p)  # ITK reads a dimension of length 0 as 1: a volume that holds nothing
        if 0 in stored:
            raise ValueError(f"{p}: image has a dimension of length 0 (shape {stored}): nothing to segment")
    if array.size == 0:
        raise ValueError(f"{p}: image has a dimension of length 0 (shape {array.shape}): nothing to segment")
    if array.ndim not in (2, 3):
        raise ValueError(_dimension_problem(p, array.shape))
    bad = array.size - int(np.isfinite(array).sum())
    if not bad and p.lower().endswith((".nii", ".nii.gz")):
        bad = _nifti_non_finite(p)  # ITK's NIfTI reader turns NaN into 0: look at the stored values
    if bad:
        raise ValueError(f"{p}: image contains {bad} NaN or infinite value(s)")
    return array.astype(np.float32, copy=False), image


#: DICOM Modality (0008,0060), as ITK's GDCMImageIO names it in its metadata dictionary.
DICOM_MODALITY_TAG = "0008|0060"
#: Modalities read: MR, and OT ("other"), what secondary captures and converters (ITK's own writer among
#: them) put on MR slices saved as DICOM; every other (CT, US, CR, PT...) is refused.
ACCEPTED_MODALITIES = ("MR", "OT")


def _check_dicom_modality(path: str, dicom_file: str) -> None:
    """Refuse a DICOM whose Modality (0008,0060) is not MR, from its header, before any pixel is read.

    The model segments T1 contrast MRI: a CT, ultrasound or radiograph would still get a mask, and
    one that means nothing. A file without the tag (or with it empty), or with OT ("other", what
    secondary captures and format converters write), is accepted: neither says anything against MR.
    Files that are not DICOM (NIfTI, NRRD...) are left alone.

    Args:
        path: the input as the user named it (a file or a series folder), named in the message.
        dicom_file: the file whose header is read (``path`` itself, or a series' first file).

    Raises:
        ValueError: ``"<path>: DICOM Modality is CT, not MR: this model segments T1 contrast MRI only"``.
    """
    import itk

    try:
        io = itk.ImageIOFactory.CreateImageIO(dicom_file, itk.CommonEnums.IOFileMode_ReadMode)
        if io is None or io.GetNameOfClass() != "GDCMImageIO":
            return  # not DICOM: nothing to check
        io.SetFileName(dicom_file)
        io.ReadImageInformation()  # the header only: GDCM stops before the pixel data
        tags = io.GetMetaDataDictionary()
        if not tags.HasKey(DICOM_MODALITY_TAG):
            return
        modality = str(tags[DICOM_MODALITY_TAG]).strip().upper()  # DICOM pads odd-length values with a space
    except (RuntimeError, AttributeError, TypeError):
        return  # an unreadable header: imread names the problem
    if modality and modality not in ACCEPTED_MODALITIES:
        shown = modality if modality.isprintable() and len(modality) <= 16 else repr(modality[:16])
        raise ValueError(f"{path}: DICOM Modality is {shown}, not MR: this model segments T1 contrast MRI only")


def _size_problem(name: str, dims) -> str | None:
    """Why an image of these dimensions is refused (over :data:`MAX_PIXELS`), or None."""
    count = int(np.prod([int(d) for d in dims], dtype=np.float64))
    if count > MAX_PIXELS:
        return f"{name}: {'x'.join(str(int(d)) for d in dims)} = {count} pixels, over the limit of {MAX_PIXELS}"
    return None


# keys of a detached header that name the file holding the voxels
_DATA_FILE_KEYS = {".mhd": ("elementdatafile",), ".nhdr": ("data file", "datafile")}


def _check_medical_header(path: str) -> None:
    """Refuse, from the header alone, a file too large to read or whose voxels live outside its folder.

    A MetaImage ``.mhd`` (``ElementDataFile``) or NRRD ``.nhdr`` (``data file``) header may name
    any file on the machine (``/etc/...``, ``/dev/zero``): the data file must be a regular file in
    the header's own folder (or below it).

    Raises:
        ValueError: naming the file and the problem.
    """
    import itk

    suffix = next((s for s in _DATA_FILE_KEYS if path.lower().endswith(s)), None)
    if suffix is not None:
        folder = os.path.dirname(os.path.realpath(path))
        try:
            with open(path, encoding="latin-1") as f:
                header = f.read(65536)
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror})") from None
        for line in header.splitlines():
            key, sep, value = line.partition(":" if suffix == ".nhdr" else "=")
            if not sep or key.strip().lower() not in _DATA_FILE_KEYS[suffix]:
                continue
            value = value.strip()
            if suffix == ".mhd" and value.upper() == "LOCAL":
                continue
            if value.upper().startswith("LIST") or "%" in value:
                raise ValueError(f"{path}: data file {value!r}: lists and patterns of data files are not supported")
            target = os.path.realpath(os.path.join(folder, value))
            if os.path.commonpath([folder, target]) != folder:
                raise ValueError(f"{path}: data file {value!r} lies outside the header's folder: refused")
            if not os.path.isfile(target):
                raise ValueError(f"{path}: data file {value!r} is not a regular file in the header's folder")
    try:
        io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
        if io is None:
            return  # ITK cannot read it: imread below says so
        io.SetFileName(path)
        io.ReadImageInformation()
        dims = [io.GetDimensions(i) for i in range(io.GetNumberOfDimensions())]
    except (RuntimeError, AttributeError):
        return  # an unreadable header: imread below names the problem
    problem = _size_problem(path, dims)
    if problem:
        raise ValueError(problem)


def _nifti_shape(path: str) -> tuple[int, ...]:
    """The shape a NIfTI file's header declares."""
    import nibabel as nib

    return tuple(int(n) for n in nib.load(path).shape)


def _nifti_non_finite(path: str) -> int:
    """How many stored voxels of a floating-point NIfTI file are NaN or infinite."""
    import nibabel as nib

    image = nib.load(path)
    if image.get_data_dtype().kind != "f":
        return 0
    data = np.asanyarray(image.dataobj)
    return int(data.size - np.isfinite(data).sum())


def _unreadable_reason(path: str) -> str | None:
    """What a file ITK cannot read is and what to do about it, from its first bytes; None when unknown.

    ITK answers a NIfTI-2 file and a truncated DICOM alike: "No ImageIO is registered to handle the
    given file", which names neither.
    """
    import gzip
    import struct

    if os.path.isdir(path):
        return None
    try:
        with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as f:
            head = f.read(132)
    except (OSError, EOFError):  # a broken gzip stream is an OSError too
        head = b""
    # NIfTI-2: sizeof_hdr 540 (either byte order) and the magic "n+2" (one file) or "ni2" (header and image apart)
    if len(head) >= 8 and 540 in struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4]):
        if head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return (
                "NIfTI-2 is not supported: save it as NIfTI-1 (e.g. nibabel: "
                "nib.save(nib.Nifti1Image.from_image(nib.load(path)), 'image.nii.gz'))"
            )
    if head[128:132] == b"DICM" or path.lower().endswith(".dcm"):
        return "not a readable DICOM file (truncated or damaged): copy or export it again from its source"
    return None


def _dimension_problem(path: str, shape: Sequence[int]) -> str:
    """Why an image that is not 2D or 3D is refused, with its size in the file's own axis order (x, y, z, t)."""
    size = [int(n) for n in reversed(shape)]  # ITK's numpy order is the file's reversed: (t, z, y, x)
    shown = " x ".join(map(str, size))
    if len(size) <= 4:
        shown = f"{', '.join('xyzt'[: len(size)])} = {shown}"
    if len(size) == 4:
        return (
            f"{path}: a 4D image ({shown}: {size[3]} volumes): only a 2D or 3D image can be segmented; pick one "
            "volume, e.g. the first time point, into a file of its own (for NIfTI with nibabel: "
            "nib.save(nib.load(path).slicer[..., 0], 'first.nii.gz'))"
        )
    return f"{path}: a {len(size)}D image ({shown}): only a 2D or 3D scalar image can be segmented"


def write_medical_mask(mask: np.ndarray, reference, path: str | os.PathLike) -> str:
    """Write a mask with the geometry (spacing, origin, direction) of ITK image ``reference``."""
    import itk

    p = os.fspath(path)
    out = itk.image_from_array(np.ascontiguousarray(mask.astype(np.uint8)))
    out.CopyInformation(reference)
    with atomic_output(p) as tmp:
        itk.imwrite(out, tmp, compression=True)
    return p


def is_dicom_series(folder: str | os.PathLike) -> bool:
    """True for a folder of ``.dcm`` files and no other images: one DICOM series, read as one volume."""
    p = os.fspath(folder)
    if not os.path.isdir(p):
        return False
    names = [n.lower() for n in os.listdir(p) if not n.startswith(".")]
    return any(n.endswith(".dcm") for n in names) and not any(
        n.endswith(PLAIN_IMAGE_SUFFIXES + MEDICAL_SUFFIXES[:-1]) for n in names
    )


def list_images(
    folder: str | os.PathLike, suffixes: tuple[str, ...] = PLAIN_IMAGE_SUFFIXES, series: bool = False
) -> list[str]:
    """Sorted paths of the image files directly inside ``folder`` (JPEG/PNG/... by suffix).

    Args:
        folder: the folder.
        suffixes: which files count.
        series: DICOM series count as one input each (:func:`is_dicom_series`): ``folder``
            itself when it is one, else its sub-folders that are.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
    """
    p = os.fspath(folder)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"{p}: image folder not found")
    if series and is_dicom_series(p):
        return [p]
    names = sorted(n for n in os.listdir(p) if not n.startswith("."))
    return [
        os.path.join(p, n)
        for n in names
        if (n.lower().endswith(suffixes) and not (series and os.path.isdir(os.path.join(p, n))))
        or (series and is_dicom_series(os.path.join(p, n)))
    ]


def check_distinct_masks(inputs: Sequence[str], output_ext: str = ".png", volume_ext: str = ".nii.gz") -> None:
    """Refuse inputs whose masks would share a name (``a/scan.jpg`` and ``b/scan.png``): one would be lost.

    Raises:
        ValueError: naming both inputs and the mask.
    """
    seen: dict[str, str] = {}
    for path in inputs:
        target = mask_output_path(path, ".", volume_ext if is_medical_image(path) else output_ext)
        if target in seen:
            first, second = (p if p.isprintable() else repr(p) for p in (seen[target], path))
            raise ValueError(
                f"{first} and {second}: both would be written to {os.path.basename(target)}; "
                "segment them into different output folders"
            )
        seen[target] = path


def check_inference_inputs(
    folder: str | os.PathLike,
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    output_ext: str = ".png",
    volume_ext: str = ".nii.gz",
) -> None:
    """Refuse, before any work, an inference run over ``folder`` that would lose something.

    Raises:
        FileNotFoundError: nothing to segment in ``folder``.
        ValueError: ``output_dir`` is ``folder`` or lies inside it (masks would overwrite inputs, or be
            read as inputs next time), or two inputs would get one mask.
    """
    if not inputs:
        kinds = ", ".join(s.lstrip(".") for s in PLAIN_IMAGE_SUFFIXES + MEDICAL_SUFFIXES)
        raise FileNotFoundError(f"{os.fspath(folder)}: no images to segment ({kinds} files or DICOM series folders)")
    out, src = Path(output_dir).resolve(), Path(folder).resolve()
    if out == src or src in out.parents:
        raise ValueError(
            f"output_dir {os.fspath(output_dir)}: inside dataset_dir {os.fspath(folder)}; the masks would overwrite "
            "or mix with the inputs: choose another folder"
        )
    check_distinct_masks(inputs, output_ext, volume_ext)


# PIL modes with several channels that are not red, green and blue.
_NOT_INTENSITY_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


@functools.lru_cache(maxsize=None)
def _reader_class() -> type:
    """:class:`PILImageReader`, built on first use: importing MONAI takes seconds, and the
    CLI's ``check-data`` and ``--help`` use this module without reading an image."""
    from monai.data import PILReader

    class PILImageReader(PILReader):
        """MONAI's ``PILReader`` that refuses what it would otherwise get silently wrong.

        The bundle's ``load_image`` uses it (``"reader": "scripts.io.PILImageReader"``), so
        training, ``monai.bundle run`` inference and the CLI read images alike:

        * an empty file, or one PIL cannot identify: ``ValueError`` naming the file;
        * a truncated file (PIL opens lazily, so plain ``PILReader`` fails later with a bare
          ``struct.error``): decoded here, ``ValueError`` naming the file;
        * a multi-frame file (a TIFF stack is a 3D volume): refused, a 2D image is expected;
        * a palette (``P``/``PA``) image: converted to RGB(A) so the network sees intensities,
          not palette indices; a CMYK, YCbCr, LAB or HSV image: converted to RGB, whose channels
          the grey conversion averages.

        16-bit, RGBA, grey + alpha, non-square and very large images are read as usual.
        """

        # MONAI's LoadImage falls back to its other readers (ITK, ...) when the designated one raises
        # in read(), and ITK happily reads a TIFF stack as a volume: so read() never raises, it
        # records the problem, and get_data() (not wrapped by LoadImage) reports it.

        def read(self, data, **kwargs):
            from PIL import Image, UnidentifiedImageError

            images = []
            for name in _names(data):
                try:
                    if os.path.getsize(name) == 0:
                        images.append(_Unreadable(f"{name}: image file is empty (0 bytes)"))
                        continue
                    im = Image.open(name, **{**self.kwargs, **kwargs})  # the header only: nothing decoded yet
                except Image.DecompressionBombError:
                    images.append(_Unreadable(f"{name}: over the limit of {MAX_PIXELS} pixels (a decompression bomb?)"))
                    continue
                except UnidentifiedImageError:
                    images.append(_Unreadable(f"{name}: not an image file PIL can read (corrupt or another format)"))
                    continue
                except OSError as e:  # no such file, no permission; or a damaged header ("Truncated File Read")
                    why = f"cannot read ({e.strerror})" if e.errno else f"image file is unreadable or truncated ({e})"
                    images.append(_Unreadable(f"{name}: {why}"))
                    continue
                too_big = _size_problem(name, im.size)
                if too_big:
                    im.close()
                    images.append(_Unreadable(too_big))
                    continue
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    im.close()
                    images.append(_Unreadable(f"{name}: has {frames} frames (a 3D stack); a 2D image is expected"))
                    continue
                try:
                    im.load()  # PIL opens lazily: decode now so a truncated file is named
                    if im.mode in ("P", "PA"):
                        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
                    elif im.mode in _NOT_INTENSITY_MODES:
                        im = im.convert("RGB")
                except Exception as e:  # noqa: BLE001 - damaged files make PIL's decoders raise struct.error & co.
                    images.append(_Unreadable(f"{name}: image file is unreadable or truncated ({e})"))
                    continue
                if callable(self.converter):
                    im = self.converter(im)
                images.append(im)
            return images if len(images) > 1 else images[0]

        def get_data(self, img):
            images = img if isinstance(img, (list, tuple)) else [img]
            for im in images:
                if isinstance(im, _Unreadable):
                    raise ValueError(im.message)
            data, meta = super().get_data(img)
            arr = np.asarray(data)
            if not arr.flags.writeable:  # PIL hands out read-only buffers; torch warns about them
                data = arr = np.array(arr)
            if arr.dtype.kind == "f":  # a float TIFF can hold NaN or inf: it would give an empty mask, silently
                bad = int(arr.size - np.isfinite(arr).sum())
                if bad:
                    name = getattr(images[0], "filename", None) or meta.get("filename_or_obj", "image")
                    raise ValueError(f"{name}: image contains {bad} NaN or infinite value(s)")
            return data, meta

    PILImageReader.__qualname__ = "PILImageReader"
    PILImageReader.__module__ = __name__
    return PILImageReader


def __getattr__(name: str) -> Any:
    if name == "PILImageReader":  # "reader": "scripts.io.PILImageReader" in the configs, imports alike
        return _reader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_grey(image, name: str = "image"):
    """One channel from a channel-first 2D image ``(C, H, W)``: the grey the network sees.

    1 channel: kept. 2 (grey + alpha): the grey channel. 3 or 4 (RGB, RGBA): the mean of R, G
    and B, alpha dropped (MRI slices are often stored as RGB with R = G = B). The one grey
    conversion of the bundle and the application: the model's input
    (:class:`~scripts.transforms.ToGrayscaled`) and the overlays (:func:`read_grey`) use it.

    Args:
        image: a numpy array or torch tensor ``(C, H, W)``.
        name: what to call the image in an error.

    Returns:
        ``(1, H, W)``, float32 when averaged, of the input's kind (array or tensor).

    Raises:
        ValueError: not ``(C, H, W)``, or a channel count other than 1 to 4.
    """
    if image.ndim != 3:
        raise ValueError(f"{name}: expected a 2D image, got array of shape {tuple(image.shape)}")
    channels = image.shape[0]
    if channels in (3, 4):
        if hasattr(image, "float"):  # a torch tensor (MetaTensor keeps its metadata)
            return image[:3].float().mean(dim=0, keepdim=True)
        return np.asarray(image[:3], dtype=np.float32).mean(axis=0, keepdims=True)
    if channels == 2:
        return image[:1]
    if channels != 1:
        raise ValueError(f"{name}: expected 1, 3 or 4 channels (grey, RGB, RGBA), got {channels}")
    return image


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """A 2D image file as the network sees it before scaling: read by :class:`PILImageReader`, then :func:`to_grey`.

    Returns:
        ``(H, W)`` float32, rows first.

    Raises:
        ValueError: a file :class:`PILImageReader` refuses (naming it).
    """
    reader = _reader_class()(reverse_indexing=False)
    data, _ = reader.get_data(reader.read(os.fspath(path)))
    arr = np.asarray(data)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)  # (H, W, C) -> (C, H, W)
    return np.asarray(to_grey(arr, os.fspath(path))[0], dtype=np.float32)


class _Unreadable:
    """A file :class:`PILImageReader` could not read, and why."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _names(data) -> list[str]:
    if isinstance(data, (str, os.PathLike)):
        return [os.fspath(data)]
    return [os.fspath(d) for d in data]
