"""Image and mask files: naming, atomic writes, medical formats through ITK.

One home for path conventions (a mask is named after its input's stem), for the rule of where a
run may write (:func:`check_output_dir`: never into, or above, what it reads), for writing files
so that a crash never leaves a truncated one behind (:func:`atomic_output`, :func:`atomic_folder`,
:func:`staged_outputs`; temporary names that say their process, so a later run removes what a
killed one left) and for the size limit, checked from the header text before any allocation.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
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
    "BUNDLE_FOLDERS",
    "atomic_folder",
    "atomic_output",
    "bundle_folders",
    "check_distinct_masks",
    "check_inference_inputs",
    "check_inputs_readable",
    "check_output_dir",
    "check_output_file",
    "image_direction",
    "image_stem",
    "is_dicom_series",
    "keep_locale",
    "is_medical_image",
    "list_images",
    "mask_output_path",
    "open_image",
    "read_grey",
    "read_medical_image",
    "remove_stale_temporaries",
    "staged_outputs",
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


#: The name of every temporary file and folder of an atomic write: ``.<name[:24]>.<8 random>~<pid><suffix>``.
#: Recognisable, and naming the process that made it, so that a later run removes the ones whose
#: process is gone (:func:`remove_stale_temporaries`): a run killed outright (SIGKILL, power loss)
#: leaves them behind, one stopped by SIGTERM or Ctrl-C removes its own.
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}~(?P<pid>[0-9]{1,10})(?:\..*)?", re.DOTALL)
_swept_folders: set[str] = set()


def _temporary(folder: Path, name: str, suffix: str = "", is_folder: bool = False) -> str:
    """A new temporary file (or folder) in ``folder`` named after ``name`` (:data:`_TEMP_NAME`).

    The first time a process writes into a folder it removes the temporary files that dead processes left there.

    Raises:
        OSError: the folder is missing or not writable (with the folder named).
    """
    key = os.path.realpath(folder)
    if key not in _swept_folders:
        _swept_folders.add(key)
        remove_stale_temporaries(folder)
    # a short prefix: the temporary name must fit where the final name fits (255 bytes)
    prefix, tag = f".{name[:24]}.", f"~{os.getpid()}"
    try:
        if is_folder:
            return tempfile.mkdtemp(prefix=prefix, suffix=tag, dir=folder)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=tag + suffix, dir=folder)
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {folder}: {e.strerror}") from None
    os.close(fd)
    return tmp


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OverflowError:
        return False  # no process has such a number
    except OSError:
        return True  # e.g. another user's process (EPERM)
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove from ``folder`` the temporary files and folders of atomic writes whose process no longer runs.

    Only names of the form :data:`_TEMP_NAME` are touched, and only when the process they name is gone:
    a run writing into the same folder at the same time keeps its own. Nothing is done on Windows
    (there ``os.kill`` would end the process it asks about).

    Returns:
        the paths removed.
    """
    if os.name == "nt":
        return []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        if match is None or _process_alive(int(match["pid"])):
            continue
        path = os.path.join(os.fspath(folder), name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Raises:
        OSError: the folder is missing or not writable (with the folder named).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)[-16:] or ".tmp"
    tmp = _temporary(target.parent, target.name, suffix)
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
    tmp = _temporary(target.parent, target.name, is_folder=True)
    try:
        with _final_names(tmp, target):
            yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        _replace_folder(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_folder(tmp: str, target: Path) -> None:
    """Put folder ``tmp`` where ``target`` is, replacing an existing ``target`` whole."""
    if target.exists():
        old = _temporary(target.parent, f"{target.name}.old", is_folder=True)
        os.replace(target, os.path.join(old, target.name))
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def staged_outputs(folder: str | os.PathLike, last: Sequence[str] = (), name: str = "staged") -> Iterator[str]:
    """Yield a hidden staging folder inside ``folder``; the files of a run appear in ``folder`` together, or not at all.

    When the block succeeds, everything the staging folder holds is moved into ``folder``: a file
    replaces the file of its name, a folder the folder of its name (whole); the names in ``last`` are
    moved at the end, so a summary written last is there only when everything else is. A failed or
    interrupted block (an exception, Ctrl-C, SIGTERM turned into one) moves nothing and removes the
    staging folder: no report that looks finished beside results that are missing.

    Args:
        folder: where the files go (created if missing).
        last: names to move after all others (e.g. the summary of an evaluation).
        name: what the staging folder is named after (``.<name>.<random>~<pid>``).

    Raises:
        OSError: ``folder`` cannot be created or written (named).
    """
    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {target}: {e.strerror}") from None
    staging = _temporary(target, name, is_folder=True)
    try:
        with _final_names(staging, target):
            yield staging
        os.chmod(staging, 0o777 & ~_umask())
        for entry in sorted(os.listdir(staging), key=lambda n: (n in last, n)):
            src = os.path.join(staging, entry)
            if os.path.isdir(src) and not os.path.islink(src):
                _replace_folder(src, target / entry)
            else:
                os.replace(src, target / entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _final_names(tmp: str, target: str | os.PathLike) -> Iterator[None]:
    """Errors of the block that name a file in the temporary folder ``tmp`` name it where it was going, in ``target``.

    ``cannot write out/.masks.x1y2~77/scan.png: No space left on device`` is said as ``cannot write
    out/masks/scan.png: ...``: the temporary folder is removed before the message is read. The errors are
    rewritten in place, along their chain of causes (a bundle run wraps a writer's error in its own).
    """
    try:
        yield
    except BaseException as error:
        final, seen = os.fspath(target), set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, OSError):
                if isinstance(current.strerror, str) and tmp in current.strerror:
                    current.strerror = current.strerror.replace(tmp, final)
                if isinstance(current.filename, str) and tmp in current.filename:
                    current.filename = current.filename.replace(tmp, final)
            current = current.__cause__ or current.__context__
        raise


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

            # zlib level 1: a mask is mostly zeros, so the file stays small (~2 KB at 640 px) and is written in
            # half the time of the default level
            Image.fromarray(np.clip(mask.astype(np.int32) * scale, 0, 255).astype(np.uint8), mode="L").save(
                tmp, format="PNG", compress_level=1
            )
        elif low.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            # NIfTI indexes (x=column, y=row); keep a third axis so viewers show one slice.
            nib.save(nib.Nifti1Image(mask.T[:, :, None].astype(np.uint8), np.eye(4)), tmp)
        else:
            raise ValueError(f"{p}: unsupported mask format (use .png, .nii or .nii.gz)")
    return p


@contextlib.contextmanager
def keep_locale() -> Iterator[None]:
    """Leave the process's locale as it was: GDCM (ITK's DICOM reader and writer) sets the C locale and leaves it.

    Left so, every later ``open()`` without an encoding in the process decodes ASCII only (a UTF-8
    README or config fails to read). Also a decorator.
    """
    import locale

    before = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        if locale.setlocale(locale.LC_ALL) != before:
            locale.setlocale(locale.LC_ALL, before)


@keep_locale()
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
            files = _series_files(p)  # one series per folder: several are refused, each named
            # Modality is a series-level attribute: the first file's header speaks for the series
            _check_dicom_modality(p, files[0])
            _check_series_size(p, files)  # the headers of every file, before ITK allocates the volume
            _check_series_geometry(p, files)  # one size, one orientation, evenly spaced: else the spacing is wrong
            warn = itk.Object.GetGlobalWarningDisplay()
            itk.Object.SetGlobalWarningDisplay(False)  # ITK's own "non uniform sampling" print: checked above
            try:
                image = itk.imread(files, itk.F)
            finally:
                itk.Object.SetGlobalWarningDisplay(warn)
        else:
            image = itk.imread(p, itk.F)
    except (RuntimeError, OSError) as e:
        # ITK's "No ImageIO is registered" says neither what the file is nor what to do
        raise ValueError(f"{p}: {_unreadable_reason(p) or f'cannot read image ({_itk_error(e)})'}") from None
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
#: DICOM SOP Class UID (0008,0016): what kind of object the file stores, whatever its Modality says.
DICOM_SOP_CLASS_TAG = "0008|0016"
#: The standard image storage classes; below it ``.4`` is MR (MR, enhanced MR...) and ``.7`` secondary capture.
STORAGE_CLASS_ROOT = "1.2.840.10008.5.1.4.1.1"
#: Storage classes read when the Modality says nothing (missing, empty or OT): MR and secondary capture.
ACCEPTED_STORAGE_CLASSES = ("4", "7")
#: Names of the commonest other storage classes, for the message that refuses them.
STORAGE_CLASS_NAMES = {
    "1": "CR", "1.1": "DX", "1.2": "MG", "2": "CT", "2.1": "enhanced CT", "3.1": "US multi-frame", "6.1": "US",
    "12.1": "XA", "20": "NM", "128": "PET",
}  # fmt: skip


def _itk_error(error: BaseException) -> str:
    """ITK's reason for refusing a file, on one line: the text after its "ITK ERROR: <object>:" (the message
    may go on over several lines, a matrix for one), else the error's last line."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    marker = text.find("ITK ERROR:")
    if marker < 0:
        return text.splitlines()[-1]
    reason = text[marker + len("ITK ERROR:") :].split(": ", 1)[-1]
    reason = " ".join(reason.split())
    if reason.startswith("Bad direction"):  # a singular direction matrix: say what that means for the file
        return f"its direction matrix is singular: an axis without a direction, or two axes along one line ({reason})"
    return reason


def _check_dicom_modality(path: str, dicom_file: str) -> None:
    """Refuse a DICOM whose Modality (0008,0060) is not MR, from its header, before any pixel is read.

    The model segments T1 contrast MRI: a CT, ultrasound or radiograph would still get a mask, and
    one that means nothing. Where the Modality says nothing (no tag, an empty one, or OT, "other",
    what secondary captures and format converters write), the SOP Class UID (0008,0016) decides: a
    standard image storage class other than MR or secondary capture (a CT whose Modality was
    stripped) is refused; MR, secondary capture, no class or a private one is accepted. Files that
    are not DICOM (NIfTI, NRRD...) are left alone.

    Args:
        path: the input as the user named it (a file or a series folder), named in the message.
        dicom_file: the file whose header is read (``path`` itself, or a series' first file).

    Raises:
        ValueError: ``"<path>: DICOM Modality is CT, not MR: this model segments T1 contrast MRI only"``, or
            ``"<path>: DICOM SOP Class UID 1.2.840.10008.5.1.4.1.1.2 (CT), not MR: ..."`` (Modality missing).
    """
    import itk

    try:
        io = itk.ImageIOFactory.CreateImageIO(dicom_file, itk.CommonEnums.IOFileMode_ReadMode)
        if io is None or io.GetNameOfClass() != "GDCMImageIO":
            return  # not DICOM: nothing to check
        io.SetFileName(dicom_file)
        io.ReadImageInformation()  # the header only: GDCM stops before the pixel data
        tags = io.GetMetaDataDictionary()
        # DICOM pads odd-length values with a space (a UID with a NUL)
        modality = str(tags[DICOM_MODALITY_TAG]).strip().upper() if tags.HasKey(DICOM_MODALITY_TAG) else ""
        sop_class = str(tags[DICOM_SOP_CLASS_TAG]).strip(" \x00") if tags.HasKey(DICOM_SOP_CLASS_TAG) else ""
    except (RuntimeError, AttributeError, TypeError):
        return  # an unreadable header: imread names the problem
    if modality and modality not in ACCEPTED_MODALITIES:
        shown = modality if modality.isprintable() and len(modality) <= 16 else repr(modality[:16])
        raise ValueError(f"{path}: DICOM Modality is {shown}, not MR: this model segments T1 contrast MRI only")
    kind = sop_class[len(STORAGE_CLASS_ROOT) + 1 :] if sop_class.startswith(STORAGE_CLASS_ROOT + ".") else ""
    if kind and kind.split(".")[0] not in ACCEPTED_STORAGE_CLASSES:
        name = STORAGE_CLASS_NAMES.get(kind, "an image storage class that is not MR")
        shown = sop_class if sop_class.isprintable() and len(sop_class) <= 64 else repr(sop_class[:64])
        said = f"Modality {modality}" if modality else "no Modality"
        raise ValueError(
            f"{path}: DICOM SOP Class UID {shown} ({name}), not MR ({said}): this model segments T1 contrast MRI only"
        )


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
    header = None
    if path.lower().endswith(tuple(_SIZE_FIELDS)):
        try:
            with open(path, encoding="latin-1") as f:
                header = f.read(65536)
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror})") from None
        for sizes in _declared_sizes(path, header):  # before ITK, which reads them into 32 bits
            problem = _size_problem(path, sizes)
            if problem:
                raise ValueError(problem)
    suffix = next((s for s in _DATA_FILE_KEYS if path.lower().endswith(s)), None)
    if suffix is not None and header is not None:
        folder = os.path.dirname(os.path.realpath(path))
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
    dims = _itk_header_dims(path)
    problem = _size_problem(path, dims) if dims else None
    if problem:
        raise ValueError(problem)


#: Header fields giving an image's size, read as text (format suffix: field, separator). ITK reads them
#: into 32-bit numbers: ``sizes: 4294967297 1 1`` passes its check as 1 x 1 x 1, then the reader
#: allocates for the real size (gigabytes from a 1 KB file).
_SIZE_FIELDS = {".nrrd": ("sizes", ":"), ".nhdr": ("sizes", ":"), ".mha": ("dimsize", "="), ".mhd": ("dimsize", "=")}
_WHOLE_NUMBERS = re.compile(r"[0-9]+(?:\s+[0-9]+)*")


def _declared_sizes(path: str, header: str) -> list[list[int]]:
    """The sizes a NRRD or MetaImage header declares (each ``sizes``/``DimSize`` line of its header).

    Raises:
        ValueError: a size field that is not a list of whole numbers (named, with its value).
    """
    field, separator = next(v for k, v in _SIZE_FIELDS.items() if path.lower().endswith(k))
    found = []
    for line in header.splitlines()[1 if separator == ":" else 0 :]:  # a NRRD's first line is its magic
        if separator == ":" and not line.strip():
            break  # the end of a NRRD header: the data follows
        key, sep, value = line.partition(separator)
        if sep and field == "dimsize" and key.strip().lower() == "elementdatafile":
            break  # the end of a MetaImage header
        if not sep or key.strip().lower() != field or value.startswith("="):  # NRRD "key:=value" pairs are not fields
            continue
        value = value.strip()
        if not _WHOLE_NUMBERS.fullmatch(value):
            shown = value[:60] if value[:60].isprintable() else repr(value[:60])
            raise ValueError(f"{path}: header field {key.strip()!r} is {shown!r}, not a list of whole numbers")
        found.append([int(n) for n in value.split()])
    return found


def _itk_header_dims(path: str) -> list[int] | None:
    """The dimensions ITK reads from a file's header (no pixel read); for a DICOM with ``NumberOfFrames``,
    ``Rows x Columns x frames`` from the tags' own text. None when ITK cannot read the header."""
    import itk

    try:
        io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
        if io is None:
            return None  # ITK cannot read it: imread names the problem
        io.SetFileName(path)
        io.ReadImageInformation()
        dims = [int(io.GetDimensions(i)) for i in range(io.GetNumberOfDimensions())]
        if io.GetNameOfClass() == "GDCMImageIO":
            tags = io.GetMetaDataDictionary()
            # Columns, Rows, NumberOfFrames (absent: one frame)
            text = [str(tags[t]).strip() if tags.HasKey(t) else "1" for t in ("0028|0011", "0028|0010", "0028|0008")]
            claimed = [int(v) for v in text if v.isascii() and v.isdigit()]
            if len(claimed) == 3 and np.prod(claimed, dtype=np.float64) > np.prod(dims, dtype=np.float64):
                dims = claimed  # whichever claims more
    except (RuntimeError, AttributeError, TypeError):
        return None  # an unreadable header: imread names the problem
    return dims


def _check_series_size(folder: str, files: Sequence[str]) -> None:
    """Refuse a DICOM series whose files' headers add up to more than :data:`MAX_PIXELS`, before any pixel is read.

    Raises:
        ValueError: ``"<folder>: DICOM series of N files, P pixels, over the limit of MAX_PIXELS"``.
    """
    total = 0
    for name in files:
        dims = _itk_header_dims(name)
        if dims is None:
            continue  # unreadable: imread names it
        total += int(np.prod(dims, dtype=np.float64))
        if total > MAX_PIXELS:
            raise ValueError(
                f"{folder}: DICOM series of {len(files)} files holds over {MAX_PIXELS} pixels (the limit), "
                f"counted from the headers ({name}: {'x'.join(map(str, dims))})"
            )


#: DICOM tags a series folder is checked with (ITK's GDCMImageIO names them so in its metadata dictionary).
_SERIES_UID, _SERIES_NUMBER, _SERIES_DESCRIPTION = "0020|000e", "0020|0011", "0008|103e"
_POSITION, _ORIENTATION = "0020|0032", "0020|0037"  # Image Position and Orientation (Patient)
#: Slices whose step along the slice normal differs from the series' usual step by more than this fraction
#: are refused: a missing slice doubles a step (100%); rounding in the headers stays far below 1%.
SLICE_STEP_TOLERANCE = 0.05


def _series_files(folder: str) -> list[str]:
    """The files of the one DICOM series in ``folder``, in ITK's slice order.

    The files are grouped by SeriesInstanceUID alone (not by ITK's "series details": their sizes and
    orientations are checked by :func:`_check_series_geometry`, which names the files at fault).

    Raises:
        ValueError: no DICOM series in the folder, or several: each named (number, description, files, UID)
            with how to segment one.
    """
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(False)
    names.SetDirectory(folder)
    uids = list(names.GetSeriesUIDs())
    if not uids:
        raise ValueError(f"{folder}: no DICOM series in this folder")
    if len(uids) == 1:
        return list(names.GetFileNames(uids[0]))
    listed = []
    for uid in uids:
        files = list(names.GetFileNames(uid))
        header = _dicom_header(files[0]) if files else {}
        number, description = header.get(_SERIES_NUMBER, ""), header.get(_SERIES_DESCRIPTION, "")
        label = f"series {number}" if number else "series"
        label += f" {description!r}" if description else ""
        first = os.path.basename(files[0]) if files else "?"
        listed.append(f"{label} ({len(files)} file(s), e.g. {first}; SeriesInstanceUID {uid})")
    raise ValueError(
        f"{folder}: holds {len(uids)} DICOM series, and a folder is read as one volume: {'; '.join(listed)}. "
        "Put the files of each series in a folder of their own and segment the folder of the series you want "
        "(several folders may be given at once)"
    )


def _dicom_header(path: str) -> dict[str, Any]:
    """The tags of one DICOM file :func:`_check_series_geometry` needs, and its size; {} when unreadable."""
    import itk

    try:
        io = itk.GDCMImageIO.New()
        io.SetFileName(path)
        io.ReadImageInformation()  # the header only
        tags = io.GetMetaDataDictionary()
        header: dict[str, Any] = {
            key: str(tags[key]).strip()
            for key in (_SERIES_NUMBER, _SERIES_DESCRIPTION, _POSITION, _ORIENTATION)
            if tags.HasKey(key)
        }
        header["size"] = (int(io.GetDimensions(0)), int(io.GetDimensions(1)))
    except (RuntimeError, AttributeError, TypeError, ValueError):
        return {}
    return header


def _numbers(text: str | None, count: int) -> np.ndarray | None:
    """A DICOM multi-value decimal string (``"0\\\\0\\\\2.5"``) as ``count`` finite floats, None when it is not one."""
    try:
        values = np.array([float(v) for v in (text or "").split("\\")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.size == count and np.isfinite(values).all() else None


def _check_series_geometry(folder: str, files: Sequence[str]) -> None:
    """Refuse a DICOM series that would make a volume with wrong geometry, from its headers.

    ITK stacks a series' slices at one spacing, the distance from the first slice to the last divided
    evenly: a series with a slice missing gets a uniform, wrong spacing (and the mask with it), and one
    whose slices differ in size cannot be stacked. So, from every file's header:

    * all slices must have one size (rows x columns);
    * where every slice has Image Position and Orientation (Patient): one orientation, no two slices at
      one position, and evenly spaced positions along the slice normal (within :data:`SLICE_STEP_TOLERANCE`
      of the usual step). A series without positions is left to ITK (nothing to check against).

    Raises:
        ValueError: naming the folder, the files at fault and what is wrong.
    """
    headers = [(os.path.basename(f), _dicom_header(f)) for f in files]
    headers = [(name, h) for name, h in headers if h]  # an unreadable header: ITK names it
    sizes: dict[tuple[int, int], list[str]] = {}
    for name, h in headers:
        sizes.setdefault(h["size"], []).append(name)
    if len(sizes) > 1:
        listed = ", ".join(
            f"{w}x{h} ({len(names)} file(s), e.g. {names[0]})"
            for (w, h), names in sorted(sizes.items(), key=lambda item: -len(item[1]))
        )
        raise ValueError(
            f"{folder}: slices of different sizes in one DICOM series: {listed}; a volume's slices must share one "
            "size: put the slices of each size in a folder of their own"
        )
    positions = [_numbers(h.get(_POSITION), 3) for _, h in headers]
    orientations = [_numbers(h.get(_ORIENTATION), 6) for _, h in headers]
    if len(headers) < 2 or any(v is None for v in positions + orientations):
        return
    first = orientations[0]
    for (name, _), orientation in zip(headers, orientations):
        if np.abs(orientation - first).max() > 1e-4:
            raise ValueError(
                f"{folder}: slices of different orientations in one DICOM series ({headers[0][0]} and {name}): "
                "it is not one volume (a localizer?): put the slices of one orientation in a folder of their own"
            )
    normal = np.cross(first[:3], first[3:])
    along = sorted(
        ((float(np.dot(position, normal)), name) for (name, _), position in zip(headers, positions)),
        key=lambda item: item[0],
    )
    steps = np.diff([d for d, _ in along])
    for k, step in enumerate(steps):
        if step < 1e-3:
            raise ValueError(
                f"{folder}: two slices at one position ({along[k][0]:g} mm along the slice normal): {along[k][1]} "
                f"and {along[k + 1][1]}; the series holds repeated slices (two acquisitions?): keep one of each"
            )
    usual = float(np.median(steps))
    uneven = [k for k, step in enumerate(steps) if abs(step - usual) > SLICE_STEP_TOLERANCE * usual]
    if uneven:
        k = uneven[0]
        more = f" (and {len(uneven) - 1} more uneven step(s))" if len(uneven) > 1 else ""
        raise ValueError(
            f"{folder}: slices are not evenly spaced: {steps[k]:g} mm between {along[k][1]} and {along[k + 1][1]}, "
            f"{usual:g} mm between the others{more}; a slice is missing? The volume's spacing would be wrong: "
            "refused. Copy the complete series again from its source"
        )


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


def image_direction(image) -> np.ndarray:
    """The 3x3 direction matrix of a 3D ITK image (LPS, one column per IJK axis); identity for a 2D one."""
    import itk

    direction = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)
    return direction if direction.shape == (3, 3) else np.eye(3)


def image_spacing(image) -> tuple[float, float, float]:
    """The voxel spacing of an ITK image along I, J and K; a 2D image's slice gets 1.0 along K."""
    spacing = [float(v) for v in image.GetSpacing()]
    return tuple((spacing + [1.0])[:3])


def write_medical_mask(mask: np.ndarray, reference, path: str | os.PathLike) -> str:
    """Write a mask with the geometry (spacing, origin, direction) of ITK image ``reference``."""
    import itk

    p = os.fspath(path)
    out = itk.image_from_array(np.ascontiguousarray(mask.astype(np.uint8)))
    out.CopyInformation(reference)
    with atomic_output(p) as tmp:
        itk.imwrite(out, tmp, compression=True)
    return p


def _dicom_and_other_images(folder: str) -> tuple[list[str], list[str]]:
    """The sorted ``.dcm`` files and other image files directly inside ``folder`` (hidden files left out)."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    dicom = [n for n in names if n.lower().endswith(".dcm")]
    others = [n for n in names if n.lower().endswith(PLAIN_IMAGE_SUFFIXES + MEDICAL_SUFFIXES[:-1])]
    return dicom, others


def is_dicom_series(folder: str | os.PathLike) -> bool:
    """True for a folder of ``.dcm`` files and no other images: one DICOM series, read as one volume."""
    p = os.fspath(folder)
    if not os.path.isdir(p):
        return False
    dicom, others = _dicom_and_other_images(p)
    return bool(dicom) and not others


def _check_not_mixed(folder: str) -> None:
    """Refuse a folder of ``.dcm`` files that holds other images too (a ``preview.jpg`` beside a series).

    It is neither a DICOM series (:func:`is_dicom_series`) nor a folder of separate images: read as the
    latter, every slice of the series would be segmented alone, without its neighbours, and the
    stray picture with them.

    Raises:
        ValueError: naming the folder and the first other images.
    """
    dicom, others = _dicom_and_other_images(folder)
    if dicom and others:
        shown = ", ".join(n if n.isprintable() else repr(n) for n in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        raise ValueError(
            f"{folder}: holds {len(dicom)} DICOM file(s) and other images ({shown}{more}); a folder of .dcm files is "
            "read as one DICOM series: move the other images out of it, or name the files to segment one by one"
        )


def list_images(
    folder: str | os.PathLike, suffixes: tuple[str, ...] = PLAIN_IMAGE_SUFFIXES, series: bool = False
) -> list[str]:
    """Sorted paths of the image files directly inside ``folder`` (JPEG/PNG/... by suffix).

    Args:
        folder: the folder.
        suffixes: which files count.
        series: DICOM series count as one input each (:func:`is_dicom_series`): ``folder``
            itself when it is one, else its sub-folders that are. A folder (or sub-folder) holding
            ``.dcm`` files and other images is refused: it is neither.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
        ValueError: with ``series``, ``folder`` or one of its sub-folders holds DICOM files and other images.
    """
    p = os.fspath(folder)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"{p}: image folder not found")
    if series:
        _check_not_mixed(p)
        if is_dicom_series(p):
            return [p]
    names = sorted(n for n in os.listdir(p) if not n.startswith("."))
    if series:
        for n in names:
            if os.path.isdir(os.path.join(p, n)):
                _check_not_mixed(os.path.join(p, n))
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


#: The bundle's own folders, read by every run: its configs, code, documents and weights. No run writes
#: into them, save a training's checkpoints into ``models/`` (``ckpt_dir``'s default, as in Model Zoo
#: bundles), where :class:`~scripts.handlers.ExistingWeightsGuard` keeps the shipped weights.
BUNDLE_FOLDERS = ("configs", "docs", "models", "scripts")


def bundle_folders(bundle_root: str | os.PathLike | None, weights: bool = True) -> dict[str, str]:
    """The bundle's own folders as inputs of :func:`check_output_dir`: ``{"the bundle's models folder": path}``.

    Args:
        bundle_root: the bundle (None: none).
        weights: include ``models/`` (False for a training's ``ckpt_dir``, which may be it).
    """
    if bundle_root is None:
        return {}
    return {
        f"the bundle's {name} folder": os.path.join(os.fspath(bundle_root), name)
        for name in BUNDLE_FOLDERS
        if weights or name != "models"
    }


def _named_inputs(inputs: Any) -> list[tuple[str | None, str]]:
    """``(what, path)`` pairs of :func:`check_output_dir`'s ``inputs``; None entries dropped."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items = inputs.items() if hasattr(inputs, "items") else ((None, i) for i in inputs)
    pairs: list[tuple[str | None, str]] = []
    for what, value in items:
        values = [value] if value is None or isinstance(value, (str, os.PathLike)) else list(value)
        pairs += [(what, os.fspath(v)) for v in values if v is not None and os.fspath(v) != ""]
    return pairs


def _output_conflict(
    output: str | os.PathLike, inputs: Sequence[tuple[str | None, str]], option: str, is_folder: bool
) -> str | None:
    out = Path(output).resolve()
    shown = os.fspath(output) if os.fspath(output).isprintable() else repr(os.fspath(output))
    resolved = [(what, item, Path(item).resolve()) for what, item in inputs]
    # first the folders it lies in (the most telling), then what it is or holds
    for what, item, src in resolved:
        # a folder it reads would pick up the outputs as inputs next time, or get them over its files
        if src in out.parents or (src == out and src.is_dir()):
            named = item if item.isprintable() else repr(item)
            where = f"{what} {named}" if what else f"the input folder of {named}"
            return f"{option} {shown}: inside {where}; {'choose another folder' if is_folder else 'write it elsewhere'}"
    for what, item, src in resolved:
        named = item if item.isprintable() else repr(item)
        if not what:
            whose = f"the input {named}"
        else:  # "the input dataset_dir D", "the bundle's models folder M"
            whose = f"{what} {named}" if what.startswith("the ") else f"the input {what} {named}"
        if src == out:
            return f"{option} {shown}: is {whose}, which the run would overwrite"
        if is_folder and out in src.parents:
            return f"{option} {shown}: holds {whose}, which the run would overwrite"
    return None


def check_output_dir(
    output_dir: str | os.PathLike, inputs: Any = (), option: str = "output_dir", bundle_root: Any = None
) -> str:
    """Refuse an output folder that could overwrite, or mix with, what a run reads: the one rule of every entry point.

    ``output_dir`` may neither lie in (or be) a folder the run reads, nor hold (or be) anything the
    run reads: an output folder inside the dataset or a split would get masks over images and pick
    them up as images next time; one above the dataset (its parent) would get files over the
    user's. Paths are compared resolved (symbolic links followed). Used by ``brainseg`` train,
    evaluate, segment, package and the split makers, and by the bundle's configs (``check_outputs``
    in ``train.json``, ``evaluate.json``; :func:`check_inference_inputs` in ``inference.json``).

    Args:
        output_dir: the folder the run writes into.
        inputs: what the run reads, files or folders: a path, a sequence of paths (None entries skipped),
            or a mapping ``{what: path or paths}`` naming each in the message (``{"dataset_dir": ...}``).
        option: how the message names the output (``"--output-dir"``, ``"output_dir"``, ``"ckpt_dir"``).
        bundle_root: the bundle run: its own folders (:data:`BUNDLE_FOLDERS`) count as inputs.

    Returns:
        ``output_dir``, unchanged (a config can check and use it in one expression).

    Raises:
        ValueError: ``"output_dir OUT: inside dataset_dir DATA; choose another folder"`` or
            ``"output_dir OUT: holds the input dataset_dir DATA, which the run would overwrite"``.
    """
    pairs = [*_named_inputs(inputs), *bundle_folders(bundle_root).items()]
    problem = _output_conflict(output_dir, pairs, option, True)
    if problem:
        raise ValueError(problem)
    return output_dir


def check_output_file(path: str | os.PathLike, inputs: Any = (), option: str = "output") -> str:
    """:func:`check_output_dir` for one output file (a zip...): it may not be, or lie inside, what the run reads.

    Raises:
        ValueError: naming the file and the input.
    """
    problem = _output_conflict(path, _named_inputs(inputs), option, False)
    if problem:
        raise ValueError(problem)
    return os.fspath(path)


def check_inference_inputs(
    folder: str | os.PathLike,
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    output_ext: str = ".png",
    volume_ext: str = ".nii.gz",
    bundle_root: str | os.PathLike | None = None,
    read: Any = None,
) -> None:
    """Refuse, before any work, an inference run over ``folder`` that would lose something.

    Args:
        folder: ``dataset_dir``.
        inputs: the images and volumes found in it.
        output_dir: where the masks go.
        output_ext: the masks' suffix for 2D images.
        volume_ext: the masks' suffix for volumes.
        bundle_root: the bundle: its own folders may not hold the outputs either.
        read: other files the run reads, ``{what: path}`` (``{"ckpt_path": ...}``).

    Raises:
        FileNotFoundError: nothing to segment in ``folder``.
        ValueError: ``output_dir`` lies inside (or is) ``folder`` or holds it (masks would overwrite inputs,
            be read as inputs next time, or land over the user's files), or lies in the bundle's folders,
            or two inputs would get one mask.
    """
    if not inputs:
        kinds = ", ".join(s.lstrip(".") for s in PLAIN_IMAGE_SUFFIXES + MEDICAL_SUFFIXES)
        raise FileNotFoundError(f"{os.fspath(folder)}: no images to segment ({kinds} files or DICOM series folders)")
    check_output_dir(output_dir, {"dataset_dir": folder, **dict(read or {})}, bundle_root=bundle_root)
    check_distinct_masks(inputs, output_ext, volume_ext)
    check_inputs_readable(inputs)


def check_inputs_readable(inputs: Sequence[str]) -> None:
    """Read every input before a run writes anything: a 2D image decoded (:func:`open_image`), a medical file's or
    DICOM series' header (size, data file, Modality, what ITK can read).

    ``python -m monai.bundle run`` segments a folder in one pass that stops at the first error: without this a
    bad file half-way left the masks of the files before it and no report. What only the pixels of a volume
    show (NaN, a fourth dimension) is still found when it is read.

    Raises:
        ValueError: the first unreadable input's problem, naming it, and the names of the others.
    """
    problems: list[tuple[str, str]] = []
    for path in inputs:
        p = os.fspath(path)
        try:
            if is_medical_image(p):
                _check_medical_readable(p)
            else:
                with open_image(p) as image:
                    image.load()
        except (ValueError, OSError) as e:
            message = str(e)
            problems.append((p, message if message.startswith(p) else f"{p}: {message}"))
    if problems:
        others = [p for p, _ in problems[1:]]
        more = f" (and {len(others)} more input(s) that cannot be read: {', '.join(others)})" if others else ""
        raise ValueError(f"{problems[0][1]}{more}; nothing was segmented")


def _check_medical_readable(path: str) -> None:
    """The header checks of :func:`read_medical_image`, without reading a voxel."""
    import itk

    if os.path.isdir(path):
        _check_dicom_modality(path, _series_files(path)[0])
        return
    _check_medical_header(path)
    _check_dicom_modality(path, path)
    io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
    try:
        if io is None:
            raise RuntimeError("No ImageIO is registered to handle the given file")
        io.SetFileName(path)
        io.ReadImageInformation()
    except RuntimeError as e:
        raise ValueError(f"{path}: {_unreadable_reason(path) or f'cannot read image ({_itk_error(e)})'}") from None


# PIL modes with several channels that are not red, green and blue.
_NOT_INTENSITY_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


def open_image(path: str | os.PathLike, **kwargs: Any):
    """Open a 2D image file with PIL, decoded, and turned the way a viewer shows it: the one opener of 2D files.

    Every reader of a JPEG/PNG/TIFF goes through here: :class:`PILImageReader` (training,
    ``monai.bundle run``, ``brainseg segment``/``evaluate``, MONAI Label, overlays), the COCO check
    (:func:`scripts.coco.validate_split` compares the annotated size with this one), true outlines
    and the tumor-free split maker. So the network, the COCO boxes and the masks written all see the
    image in the orientation a viewer shows: an EXIF ``Orientation`` (a phone or camera photo of a
    slice, a JPEG saved sideways with a tag to turn it) is applied with ``ImageOps.exif_transpose``,
    and the mask of such a file is written upright, without a tag, the way its user sees the input.

    Args:
        path: the file.
        kwargs: passed to ``PIL.Image.open`` (``formats``).

    Returns:
        The loaded ``PIL.Image`` (its mode as stored: palette and CMYK images are left to the caller).

    Raises:
        ValueError: naming the file: empty, not an image PIL can read, over :data:`MAX_PIXELS` pixels,
            several frames (a multi-page TIFF, an animated PNG or GIF: a 2D image is one page; only the
            first would be read), truncated or damaged.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = os.fspath(path)
    try:
        if os.path.getsize(name) == 0:
            raise ValueError(f"{name}: image file is empty (0 bytes)")
        im = Image.open(name, **kwargs)  # the header only: nothing decoded yet
    except Image.DecompressionBombError:
        raise ValueError(f"{name}: over the limit of {MAX_PIXELS} pixels (a decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ValueError(f"{name}: unreadable: not an image file PIL can read (corrupt or another format)") from None
    except OSError as e:  # no such file, no permission; or a damaged header ("Truncated File Read")
        why = f"cannot read ({e.strerror})" if e.errno else f"image file is unreadable or truncated ({e})"
        raise ValueError(f"{name}: {why}") from None
    too_big = _size_problem(name, im.size)
    frames = getattr(im, "n_frames", 1)
    if too_big or frames > 1:
        im.close()
        raise ValueError(
            too_big
            or (
                f"{name}: image file has {frames} frames (a 3D stack); a 2D image is expected: only its first page "
                "would be read. Save the page to segment as a file of its own, or the stack as a volume (NIfTI, NRRD)"
            )
        )
    try:
        im.load()  # PIL opens lazily: decode now so a truncated file is named
        ImageOps.exif_transpose(im, in_place=True)  # as a viewer shows it; the Orientation tag is dropped
    except Exception as e:  # noqa: BLE001 - damaged files make PIL's decoders raise struct.error & co.
        im.close()
        raise ValueError(f"{name}: image file is unreadable or truncated ({e})") from None
    return im


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
        * a multi-frame file (a multi-page TIFF, an animated PNG): refused, a 2D image is expected;
        * an EXIF ``Orientation``: applied, the image is read as a viewer shows it (:func:`open_image`);
        * a palette (``P``/``PA``) image: converted to RGB(A) so the network sees intensities,
          not palette indices; a CMYK, YCbCr, LAB or HSV image: converted to RGB, whose channels
          the grey conversion averages.

        16-bit, RGBA, grey + alpha, non-square and very large images are read as usual.
        """

        # MONAI's LoadImage falls back to its other readers (ITK, ...) when the designated one raises
        # in read(), and ITK happily reads a TIFF stack as a volume: so read() never raises, it
        # records the problem, and get_data() (not wrapped by LoadImage) reports it.

        def read(self, data, **kwargs):
            images = []
            for name in _names(data):
                try:
                    im = open_image(name, **{**self.kwargs, **kwargs})  # checked, decoded, turned upright (EXIF)
                    if im.mode in ("P", "PA"):
                        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
                    elif im.mode in _NOT_INTENSITY_MODES:
                        im = im.convert("RGB")
                except ValueError as e:
                    images.append(_Unreadable(str(e)))
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
            rgb = image[:3].float()
            # the same values as rgb.mean(dim=0): a reader's (C, H, W) view of interleaved RGB has its channels
            # next to each other in memory, where torch's reduction over dim 0 is a few times slower than two adds
            return (rgb[0:1] + rgb[1:2] + rgb[2:3]) / 3
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
