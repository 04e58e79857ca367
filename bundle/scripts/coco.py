"""Reading and validating Roboflow/COCO brain tumor splits with pycocotools.

A *split* is a folder holding images and ``_annotations.coco.json`` (Roboflow's export
layout); a *dataset root* holds split folders ``train/``, ``valid/`` and optionally ``test/``.

``validate_split`` lists every problem of a split, one :class:`DataProblem` each;
``coco_to_datalist`` turns a valid split into MONAI datalist records whose ``label`` holds
the image's annotations, rasterized later by
:class:`scripts.transforms.CocoAnnotationsToMaskd`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import short_repr as _short
from .io import PLAIN_IMAGE_SUFFIXES, open_image

__all__ = [
    "ANNOTATION_FILE",
    "CocoDataError",
    "DataProblem",
    "TooLongInteger",
    "build_coco",
    "coco_to_datalist",
    "json_int",
    "load_coco_json",
    "rasterize_annotations",
    "bundle_max_label",
    "resolve_category_map",
    "split_dir",
    "validate_split",
]

ANNOTATION_FILE = "_annotations.coco.json"
#: Annotation files larger than this are refused unread (the full dataset's train file is 1.5 MB).
MAX_ANNOTATION_BYTES = 256 * 2**20
TUMOR = "tumor"
# Coordinates may touch the image border; allow float rounding, nothing more.
_EDGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DataProblem:
    """One problem found in a COCO split.

    Args:
        severity: ``"error"`` (training must not start) or ``"warning"``.
        file: the file the problem is in (the JSON or an image).
        where: the JSON element, e.g. ``images[id=3]`` or ``annotations[id=7]``.
        field: the field at fault, e.g. ``bbox`` or ``file_name``.
        message: what is wrong.
    """

    severity: str
    file: str
    where: str
    field: str
    message: str

    def __str__(self) -> str:
        location = ".".join(p for p in (self.where, self.field) if p)
        return (
            f"{self.severity}: {self.file}: {location}: {self.message}"
            if location
            else (f"{self.severity}: {self.file}: {self.message}")
        )


class CocoDataError(ValueError):
    """A COCO split has errors; ``problems`` lists all of them, ``str()`` gives one line each."""

    def __init__(self, problems: Sequence[DataProblem]):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__("\n".join(str(p) for p in errors) or "invalid COCO data")


def split_dir(dataset_dir: str | os.PathLike, split: str) -> str:
    """The folder of ``split`` (``train``, ``valid``, ``test``) under a Roboflow dataset root."""
    return os.path.join(os.fspath(dataset_dir), split)


class TooLongInteger:
    """A JSON integer with more digits than Python converts (``sys.get_int_max_str_digits()``, 4300 by default).

    ``json.loads`` would fail on the whole file with "Exceeds the limit (4300 digits) for integer string
    conversion", naming neither the field nor the file; :func:`json_int` keeps such a number as this
    marker instead, which is no ``int``, so the field's check names it: ``images[3].id: must be an integer,
    got an integer of 100000 digits``.
    """

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits} digits"


#: Integers longer than this are kept as :class:`TooLongInteger` (no id, size or count needs more digits).
MAX_INTEGER_DIGITS = 4000


def json_int(text: str) -> int | TooLongInteger:
    """``parse_int`` for ``json.loads``: an ``int``, or a :class:`TooLongInteger` past :data:`MAX_INTEGER_DIGITS`."""
    digits = len(text.lstrip("-"))
    return TooLongInteger(digits) if digits > MAX_INTEGER_DIGITS else int(text)


def load_coco_json(json_path: str | os.PathLike) -> dict[str, Any]:
    """Load a COCO annotation file, raising :class:`CocoDataError` when it cannot be parsed."""
    path = os.fspath(json_path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it changes nothing for a regular file
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # /dev/zero, a FIFO...: would never end
                raise CocoDataError([DataProblem("error", path, "", "", "not a regular file")])
            raw = f.read(MAX_ANNOTATION_BYTES + 1)  # bounded, whatever the file claims
        if len(raw) > MAX_ANNOTATION_BYTES:
            raise CocoDataError(
                [DataProblem("error", path, "", "", f"larger than {MAX_ANNOTATION_BYTES // 2**20} MiB: refused")]
            )
        # a byte-order mark (Windows tools) is not an error; an integer too long for Python to convert is kept as
        # a TooLongInteger, which the checks then report by field like any other value that is not a usable number
        data = json.loads(raw.decode("utf-8-sig"), parse_int=json_int)
    except FileNotFoundError:
        raise CocoDataError([DataProblem("error", path, "", "", "annotation file not found")]) from None
    except UnicodeDecodeError as e:
        raise CocoDataError([DataProblem("error", path, "", "", f"not UTF-8 text ({e.reason})")]) from None
    except json.JSONDecodeError as e:
        raise CocoDataError(
            [
                DataProblem(
                    "error", path, "", "", f"malformed or truncated JSON at line {e.lineno} column {e.colno}: {e.msg}"
                )
            ]
        ) from None
    except OSError as e:
        raise CocoDataError([DataProblem("error", path, "", "", f"cannot read: {e.strerror}")]) from None
    except RecursionError:
        raise CocoDataError([DataProblem("error", path, "", "", "JSON nested too deeply to be COCO data")]) from None
    if not isinstance(data, dict):
        raise CocoDataError(
            [DataProblem("error", path, "", "", f"top level must be an object, not {type(data).__name__}")]
        )
    return data


def build_coco(data: Mapping[str, Any]):
    """A ``pycocotools.coco.COCO`` index over already-loaded (and validated) COCO data."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dict(data)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def resolve_category_map(
    categories: Sequence[Mapping[str, Any]], category_map: Mapping[str | int, int] | None = None
) -> dict[int, int]:
    """Map COCO category ids to label values.

    Args:
        categories: the split's ``categories``.
        category_map: keys are category ids or names, values the label (0 drops the category).
            ``None`` maps every category named "Tumor" or whose supercategory is "Tumor" to 1.

    Raises:
        ValueError: a key names no category, or a label is not a non-negative integer.
    """
    if category_map is None:
        return {
            int(c["id"]): 1
            for c in categories
            if str(c.get("name", "")).lower() == TUMOR or str(c.get("supercategory", "")).lower() == TUMOR
        }
    by_name: dict[str, list[int]] = {}
    for c in categories:
        by_name.setdefault(str(c.get("name")), []).append(int(c["id"]))
    ids = {int(c["id"]) for c in categories}
    resolved: dict[int, int] = {}
    for key, label in category_map.items():
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise ValueError(f"category_map[{_short(key)}]: label must be a non-negative integer, got {_short(label)}")
        number = key if isinstance(key, int) else (int(key) if isinstance(key, str) and _is_id_text(key) else None)
        if isinstance(key, int) or (number is not None and number in ids and key not in by_name):
            if int(key) not in ids:
                raise ValueError(f"category_map: no category with id {key}")
            resolved[int(key)] = label
        elif key in by_name:
            resolved.update({i: label for i in by_name[key]})
        else:
            raise ValueError(f"category_map: no category named or numbered {_short(key)}")
    return {k: v for k, v in resolved.items() if v > 0}


def _is_id_text(text: str) -> bool:
    """Digits that can be a category id (a 64-bit integer): longer ones are names, never converted."""
    return text.isdigit() and len(text) <= 19


def _suggested_map(data: Mapping[str, Any], annotated: set[int]) -> str:
    """A category map giving the annotated categories label 1: by name, or by id where names would not do.

    Keys made of digits are read as category ids, so a category named "0" can only be named by its id.
    """
    names = {c.get("id"): c.get("name") for c in data["categories"] if isinstance(c, dict)}
    chosen = [names.get(i) for i in sorted(annotated, key=str)]
    by_name = all(isinstance(n, str) and n and not n.isdigit() for n in chosen)  # a name maps every category so named
    keys = chosen if by_name else [str(i) for i in sorted(annotated, key=str)]
    return json.dumps(dict.fromkeys(keys, 1))


def bundle_max_label(bundle_dir: str | os.PathLike) -> int | None:
    """The largest label a bundle's network can output (``out_channels - 1`` of its ``network_def``).

    Read from ``configs/inference.json`` as JSON (no MONAI import): None when it is not a plain number.
    """
    try:
        with open(os.path.join(os.fspath(bundle_dir), "configs", "inference.json"), encoding="utf-8") as f:
            channels = json.load(f)["network_def"]["out_channels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return channels - 1 if isinstance(channels, int) and not isinstance(channels, bool) and channels > 0 else None


def _id_problem(value: Any) -> str | None:
    """Why an image or annotation id cannot be used, or None: an integer that fits in 64 bits."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"must be an integer, got {_short(value)}"
    if not -(2**63) <= value < 2**63:
        return f"{_short(value)} does not fit in 64 bits (pycocotools and the datalist need it to)"
    return None


def _is_number(v: Any) -> bool:
    """A finite int or float that a float can hold (JSON allows integers like 10**400, which it cannot)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _has_id(ids: Any, value: Any) -> bool:
    """``value in ids`` for any JSON value: a list or an object is unhashable, so never an id."""
    return not isinstance(value, (list, dict)) and value in ids


def _is_positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _safe_image_path(root: Path, file_name: str) -> Path | None:
    """The image's path inside ``root``, or None if ``file_name`` is absolute or escapes it."""
    if os.path.isabs(file_name) or file_name.startswith(("/", "\\")) or (len(file_name) > 1 and file_name[1] == ":"):
        return None
    real_root = _real_folder(os.fspath(root))
    real = os.path.realpath(os.path.join(real_root, file_name))
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return Path(real)


@functools.lru_cache(maxsize=64)
def _real_folder(folder: str) -> str:
    """``os.path.realpath`` of a split folder, once per folder (a split may list 50,000 images)."""
    return os.path.realpath(folder)


def _check_image_file(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(problem, (height, width)) of an image file, as every reader reads it (:func:`scripts.io.open_image`).

    The file is decoded fully, so truncation is found; its size is the one a viewer shows (after its EXIF
    orientation), the size the annotations are drawn on and the masks written at.
    """
    if not path.is_file():
        return "image file is missing", None
    try:
        with open_image(path) as im:
            return None, (im.height, im.width)
    except ValueError as e:
        return str(e).removeprefix(f"{path}: "), None


def _turned_by_exif(path: Path) -> bool:
    """Whether the file's EXIF orientation swaps its width and height (Orientation 5 to 8: a quarter turn)."""
    try:
        with Image.open(path) as im:  # the header: the tag as stored, before open_image applies it
            return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except (OSError, ValueError, SyntaxError):
        return False


def _check_polygon(poly: Any, height: int, width: int) -> str | None:
    if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
        return "polygon must be a list of finite numbers"
    if len(poly) % 2:
        return f"polygon has an odd number of coordinates ({len(poly)})"
    if len(poly) < 6:
        return f"polygon needs at least 3 points, has {len(poly) // 2}"
    xs, ys = np.asarray(poly[0::2], float), np.asarray(poly[1::2], float)
    if (
        xs.min() < -_EDGE_TOLERANCE
        or ys.min() < -_EDGE_TOLERANCE
        or xs.max() > width + _EDGE_TOLERANCE
        or (ys.max() > height + _EDGE_TOLERANCE)
    ):
        return f"polygon lies outside the {width}x{height} image"
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    if area <= 0:
        return "polygon has zero area"
    return None


def _check_segmentation(seg: Any, height: int, width: int) -> str | None:
    if isinstance(seg, list):
        if not seg:
            return None  # empty list: fall back to bbox
        for k, poly in enumerate(seg):
            problem = _check_polygon(poly, height, width)
            if problem:
                return f"polygon {k}: {problem}" if len(seg) > 1 else problem
        return None
    if isinstance(seg, dict):
        size = seg.get("size")
        if "counts" not in seg or not (isinstance(size, list) and len(size) == 2):
            return "RLE needs 'counts' and 'size' [height, width]"
        if list(size) != [height, width]:
            return f"RLE size {size} differs from the image's [{height}, {width}]"
        counts = seg["counts"]
        if isinstance(counts, str):
            # pycocotools decodes a string whose runs do not cover the image from uninitialised
            # memory: read the runs here first, as its rleFrString does
            counts = _compressed_rle_counts(counts)
            if counts is None:
                return "RLE counts: not a valid compressed RLE string"
        elif not isinstance(counts, list):
            return f"RLE counts must be a list of run lengths or a compressed string, not {type(counts).__name__}"
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "RLE counts must be non-negative integers"
        if sum(counts) != height * width:
            return f"RLE counts sum to {sum(counts)}, not {height}*{width}={height * width} pixels"
        return None
    return f"must be a list of polygons or an RLE object, not {type(seg).__name__}"


def _compressed_rle_counts(text: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``), None if malformed."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                return None  # the last number is cut off
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                return None  # outside the 64 characters the encoding uses
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _check_bbox(bbox: Any, height: int, width: int) -> str | None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"must be [x, y, width, height] of finite numbers, got {json.dumps(bbox, default=repr)[:80]}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"non-positive size {w}x{h}"
    if (
        x < -_EDGE_TOLERANCE
        or y < -_EDGE_TOLERANCE
        or x + w > width + _EDGE_TOLERANCE
        or y + h > height + _EDGE_TOLERANCE
    ):
        return f"box [{x}, {y}, {w}, {h}] lies outside the {width}x{height} image"
    return None


def validate_split(
    split_path: str | os.PathLike,
    category_map: Mapping[str | int, int] | None = None,
    check_files: bool = True,
    max_label: int | None = None,
) -> list[DataProblem]:
    """Every problem of a COCO split, errors and warnings, one entry each.

    Hand-written rather than a JSON schema: most checks are semantic (ids that exist and are
    unique, boxes inside the image, RLE lengths against ``size``, files on disk), and each
    problem is reported once, named by record and field, as ``check-data`` lists them.

    Args:
        split_path: the split folder holding images and ``_annotations.coco.json``.
        category_map: as in :func:`resolve_category_map`; a bad map is reported as an error.
        check_files: also open every image (missing, empty, unreadable, size mismatch) and
            warn about image files the JSON does not list.
        max_label: the largest label the model can learn (its output channels minus one, see
            :func:`bundle_max_label`); a map to a larger label is an error.

    Returns:
        The problems; the split is usable when none has severity ``"error"``.
    """
    root = Path(split_path)
    if not root.is_dir():
        return [DataProblem("error", str(root), "", "", "split folder not found")]
    json_path = root / ANNOTATION_FILE
    jfile = str(json_path)
    try:
        data = load_coco_json(json_path)
    except CocoDataError as e:
        return e.problems
    problems: list[DataProblem] = []

    def err(where: str, field: str, message: str, file: str = jfile, severity: str = "error") -> None:
        problems.append(DataProblem(severity, file, where, field, message))

    for key in ("images", "annotations", "categories"):
        if key not in data:
            err("", key, "missing top-level key")
        elif not isinstance(data[key], list):
            err("", key, f"must be a list, not {type(data[key]).__name__}")
    if problems:
        return problems

    # categories
    category_ids: set[int] = set()
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            err(f"categories[{k}]", "id", "category must be an object with an integer id")
            continue
        if cat["id"] in category_ids:
            err(f"categories[id={cat['id']}]", "id", "duplicate category id")
        category_ids.add(cat["id"])
    labels: dict[int, int] | None = None
    try:
        labels = resolve_category_map(
            [c for c in data["categories"] if isinstance(c, dict) and _id_problem(c.get("id")) is None], category_map
        )
    except (ValueError, TypeError) as e:
        err("", "categories", str(e))
    if labels and max_label is not None:
        too_big = {k: v for k, v in labels.items() if v > max_label}
        if too_big:
            classes = "background and tumor" if max_label == 1 else f"labels 0..{max_label}"
            err(
                "",
                "categories",
                f"the category map gives label(s) {sorted(set(too_big.values()))} (category ids "
                f"{sorted(too_big)}), but the model learns {classes} only: use labels up to {max_label}",
            )

    # images
    images: dict[int, dict] = {}
    listed_files: set[Path] = set()
    file_owner: dict[Path, Any] = {}  # the image id that listed each file first
    checked: dict[Path, tuple[str | None, tuple[int, int] | None]] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            err(f"images[{k}]", "", f"must be an object, not {type(im).__name__}")
            continue
        iid = im.get("id")
        problem = _id_problem(iid)
        if problem:
            err(f"images[{k}]", "id", problem)
            continue
        where = f"images[id={iid}]"
        if iid in images:
            err(where, "id", "duplicate image id")
            continue
        ok = True
        for field in ("height", "width"):
            if not _is_positive_int(im.get(field)):
                err(where, field, f"must be a positive integer, got {_short(im.get(field))}")
                ok = False
        file_name = im.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            err(where, "file_name", f"must be a non-empty string, got {_short(file_name)}")
            images[iid] = {}
            continue
        if not file_name.isprintable():  # a NUL byte, a newline...: no file is named so, and it would break lines
            err(where, "file_name", f"{file_name!r} holds a control character: refused")
            images[iid] = {}
            continue
        path = _safe_image_path(root, file_name)
        if path is None:
            err(where, "file_name", f"{file_name!r} is absolute or escapes the split folder: refused")
            images[iid] = {}
            continue
        listed_files.add(path)
        if path in file_owner:
            # two records of one file: the evaluation would score one image's prediction against the other's
            # annotations (or count it twice), and training would learn one slice under two labels
            err(
                where,
                "file_name",
                f"{file_name!r} is also the file of images[id={file_owner[path]}]: two images with one file "
                f"(images {file_owner[path]} and {iid}); give each its own file, or merge the two records into one",
            )
            images[iid] = {}
            continue
        file_owner[path] = iid
        images[iid] = im if ok else {}
        if check_files:
            if path not in checked:
                checked[path] = _check_image_file(path)
            problem, size = checked[path]
            if problem:
                err(where, "file_name", f"{file_name}: {problem}", file=jfile)
            elif ok and size != (im["height"], im["width"]):
                err(
                    where,
                    "height/width",
                    f"JSON says {im['width']}x{im['height']} but {file_name} is {size[1]}x{size[0]}"
                    + (
                        " as shown (its EXIF orientation turns it a quarter): annotations are read on the image "
                        "as a viewer shows it"
                        if _turned_by_exif(path)
                        else ""
                    ),
                )

    # annotations
    annotation_ids: set[int] = set()
    annotated_categories: set[int] = set()
    category_counts: dict[int, int] = {}
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            err(f"annotations[{k}]", "", f"must be an object, not {type(ann).__name__}")
            continue
        aid = ann.get("id")
        problem = _id_problem(aid)
        if problem:
            err(f"annotations[{k}]", "id", problem)
            continue
        where = f"annotations[id={aid}]"
        if aid in annotation_ids:
            err(where, "id", "duplicate annotation id")
        annotation_ids.add(aid)
        iid = ann.get("image_id")
        if not _has_id(images, iid):
            err(where, "image_id", f"no image with id {_short(iid)}")
            continue
        if not _has_id(category_ids, ann.get("category_id")):
            err(where, "category_id", f"no category with id {_short(ann.get('category_id'))}")
        else:
            annotated_categories.add(ann["category_id"])
            category_counts[ann["category_id"]] = category_counts.get(ann["category_id"], 0) + 1
        im = images[iid]
        if not im:
            continue  # the image itself is broken and already reported
        h, w = im["height"], im["width"]
        seg = ann.get("segmentation")
        has_seg = seg not in (None, [], {})
        if "bbox" in ann or not has_seg:
            problem = _check_bbox(ann.get("bbox"), h, w)
            if problem:
                err(where, "bbox", problem)
        if has_seg:
            problem = _check_segmentation(seg, h, w)
            if problem:
                err(where, "segmentation", problem)

    if labels is not None and annotated_categories and not annotated_categories & set(labels):
        # e.g. categories named "glioma": every mask would be empty and a model would learn nothing
        names = sorted({str(c.get("name")) for c in data["categories"] if c.get("id") in annotated_categories})
        hint = "categories named 'Tumor' or under the supercategory 'Tumor'" if category_map is None else "the map"
        err(
            "",
            "categories",
            f"no annotation's category maps to a tumor label (the annotations use {', '.join(map(repr, names))}; "
            f"{hint} gave none of them one): give a category map, e.g. {_suggested_map(data, annotated_categories)}",
        )

    if labels is not None and annotated_categories & set(labels):
        dropped = {c: n for c, n in category_counts.items() if c not in labels}
        if dropped:
            names = {c.get("id"): str(c.get("name")) for c in data["categories"] if isinstance(c, dict)}
            listed = ", ".join(
                f"{names.get(c, c)!r} ({n})" for c, n in sorted(dropped.items(), key=lambda x: str(x[0]))
            )
            err(
                "",
                "categories",
                f"{sum(dropped.values())} of {sum(category_counts.values())} annotations have a category that maps to "
                f"no tumor label and become background: {listed}",
                severity="warning",
            )
    if not images:
        err("", "images", "the split has no images: nothing to train, validate or evaluate on")

    if check_files:
        for path in sorted(root.iterdir()):
            if path.suffix.lower() in PLAIN_IMAGE_SUFFIXES and path.resolve() not in listed_files:
                err(
                    "",
                    "",
                    f"image file {path.name} is not listed in {ANNOTATION_FILE}",
                    file=str(path),
                    severity="warning",
                )
    return problems


def _annotation_label(ann: Mapping[str, Any], labels: Mapping[int, int]) -> int:
    return labels.get(int(ann["category_id"]), 0)


def rasterize_annotations(annotations: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """A (height, width) uint8 label mask from COCO annotations, with pycocotools.

    Each annotation is drawn from its ``segmentation`` (polygons or RLE) or, when that is
    absent, from its ``bbox``; its value is ``annotation["label"]`` (default 1). Later
    annotations overwrite earlier ones where they overlap. No annotation: an empty mask.
    """
    from pycocotools import mask as mask_utils

    mask = np.zeros((height, width), dtype=np.uint8)
    for ann in annotations:
        seg = ann.get("segmentation")
        if isinstance(seg, dict) and seg:  # an empty dict, like an empty list, falls back to the bbox
            rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg.get("counts"), list) else seg
        else:
            polygons = seg if seg else None
            if polygons is None:
                x, y, w, h = (float(v) for v in ann["bbox"])
                polygons = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width))
        drawn = mask_utils.decode(rle).astype(bool)
        mask[drawn] = int(ann.get("label", 1))
    return mask


def coco_to_datalist(
    split_path: str | os.PathLike,
    category_map: Mapping[str | int, int] | None = None,
    validate: bool = True,
    max_label: int | None = None,
) -> list[dict[str, Any]]:
    """MONAI datalist records of a COCO split, one per image, images without annotation kept.

    Each record is ``{"image": path, "label": {"height", "width", "annotations"}, "image_id": id}``
    where each annotation keeps ``segmentation``, ``bbox`` and its mapped ``label``;
    :class:`scripts.transforms.CocoAnnotationsToMaskd` turns ``label`` into a mask.

    Args:
        split_path: the split folder holding images and ``_annotations.coco.json``.
        category_map: as in :func:`resolve_category_map`.
        validate: run :func:`validate_split` first and refuse a split with errors.
        max_label: as in :func:`validate_split` (the training config passes its network's).

    Raises:
        CocoDataError: the split has errors; one line per problem.
    """
    root = Path(split_path)
    if validate:
        problems = validate_split(root, category_map, max_label=max_label)
        if any(p.severity == "error" for p in problems):
            raise CocoDataError(problems)
    data = load_coco_json(root / ANNOTATION_FILE)
    labels = resolve_category_map(data["categories"], category_map)
    coco = build_coco(data)
    records = []
    for iid in sorted(coco.imgs):
        im = coco.imgs[iid]
        path = _safe_image_path(root, im["file_name"])
        if path is None:  # also when validate=False: never read outside the split
            raise CocoDataError(
                [
                    DataProblem(
                        "error",
                        str(root / ANNOTATION_FILE),
                        f"images[id={iid}]",
                        "file_name",
                        "escapes the split folder: refused",
                    )
                ]
            )
        anns = []
        for ann in coco.imgToAnns.get(iid, []):
            label = _annotation_label(ann, labels)
            if label:
                anns.append({"segmentation": ann.get("segmentation"), "bbox": ann.get("bbox"), "label": label})
        records.append(
            {
                "image": str(path),
                "label": {"height": int(im["height"]), "width": int(im["width"]), "annotations": anns},
                "image_id": int(iid),
            }
        )
    return records
