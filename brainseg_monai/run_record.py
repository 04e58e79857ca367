"""What a training run learns from, kept in its folder: a resumed run must go on with the same data.

``brainseg train`` and ``brainseg train --recipe`` write ``<output-dir>/training_data.json`` when a run
starts: the dataset folder, the two split names, the category map and the sha256 of each split's
``_annotations.coco.json``. A ``--resume`` (and every rerun of a recipe, which reuses the stages
done) compares the data it is given with that record and refuses, naming each difference, when
they differ: resuming a run on another dataset would silently mix two trainings into one model.
The same annotations in a moved dataset folder are the same data. To go on with changed data
anyway, delete the record (the refusal says where it is); a run folder made before the record
existed gets one from the data given when it is resumed, and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DATA_RECORD", "RunDataError", "check_training_data", "training_data", "write_training_data"]

#: The record's name in a run folder (``brainseg train --output-dir``, the recipe's output folder).
DATA_RECORD = "training_data.json"


class RunDataError(ValueError):
    """The data given differs from the data the run folder's training learned from (one line)."""


def training_data(
    dataset_dir: str | os.PathLike, train_split: str, val_split: str, category_map: Mapping[str | int, int] | None
) -> dict[str, Any]:
    """The record of what a run learns from: paths, split names, category map, annotation hashes."""
    from scripts.coco import ANNOTATION_FILE, split_dir

    dataset = os.path.abspath(os.fspath(dataset_dir))
    annotations = {}
    for split in (train_split, val_split):
        path = Path(split_dir(dataset, split)) / ANNOTATION_FILE
        annotations[split] = _sha256(path) if path.is_file() else None
    return {
        "dataset_dir": dataset,
        "train_split": train_split,
        "val_split": val_split,
        "category_map": _normal_map(category_map),
        "annotations_sha256": annotations,
    }


def write_training_data(run_dir: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write the record into ``run_dir`` (atomically); returns its path."""
    from scripts.io import atomic_output

    path = Path(run_dir) / DATA_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(dict(data), f, indent=2)
        f.write("\n")
    return path


def check_training_data(run_dir: str | os.PathLike, data: Mapping[str, Any], action: str = "--resume") -> str | None:
    """Compare the data given with the run folder's record; write the record where there is none.

    Args:
        run_dir: the run folder.
        data: :func:`training_data` of the data given now.
        action: what is being done, for the message (``"--resume"``, ``"the recipe"``).

    Returns:
        A note to show when the folder had no record (one is written now from ``data``), else None.

    Raises:
        RunDataError: the record names other data: each difference, and the ways on.
    """
    path = Path(run_dir) / DATA_RECORD
    if not path.is_file():
        write_training_data(run_dir, data)
        return (
            f"note: {run_dir} has no record of the data it was trained on (a run made before brainseg kept one): "
            f"recorded the data given now in {path}"
        )
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise RunDataError(f"{path}: unreadable record of the run's data ({e}); delete it to record the data given now")
    differences = _differences(recorded, data)
    if not differences:
        return None
    raise RunDataError(
        f"{run_dir}: {action} with other data than the run was trained on: {'; '.join(differences)}. Give the run's "
        f"data, or train into another --output-dir (or delete {path} to go on with the data given now)"
    )


def _differences(recorded: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    said = []
    for key, name in (("train_split", "training split"), ("val_split", "validation split")):
        if recorded.get(key) != data.get(key):
            said.append(f"{name} {data.get(key)!r} (the run's: {recorded.get(key)!r})")
    if _normal_map(recorded.get("category_map")) != data.get("category_map"):
        now, then = _shown_map(data.get("category_map")), _shown_map(recorded.get("category_map"))
        said.append(f"category map {now} (the run's: {then})")
    old, new = recorded.get("annotations_sha256") or {}, data.get("annotations_sha256") or {}
    moved_only = all(old.get(split) == new.get(split) for split in new) and bool(new)
    if recorded.get("dataset_dir") != data.get("dataset_dir") and not moved_only:
        said.append(f"dataset {data.get('dataset_dir')} (the run's: {recorded.get('dataset_dir')})")
    elif recorded.get("dataset_dir") == data.get("dataset_dir"):
        changed = [split for split in new if split in old and old[split] != new[split]]
        if changed:
            said.append(f"the annotations of {', '.join(changed)} changed since the run began")
    return said


def _normal_map(category_map: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    """A category map as JSON keeps it: keys as text, sorted; None for the default (Tumor -> 1)."""
    if category_map is None:
        return None
    return {str(k): category_map[k] for k in sorted(category_map, key=str)}


def _shown_map(category_map: Mapping[str, Any] | None) -> str:
    return "the default (Tumor -> 1)" if category_map is None else json.dumps(category_map)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
