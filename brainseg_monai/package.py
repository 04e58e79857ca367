"""Build a Model-Zoo-ready zip of the bundle.

The bundle is self-contained: the code its configs name lives in its own ``scripts/``
package, so ``python -m monai.bundle run --config_file configs/inference.json --bundle_root DIR``
runs from the unpacked folder with only the packages listed in ``configs/metadata.json``.

Layout of ``<name>_v<version>.zip``::

    <name>/
        LICENSE  large_files.yml  configs/  docs/  scripts/  sample_data/
        models/model.pt  models/input_reference.json  models/sequence_check.pt  (and any alternative weights present)
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

from brainseg_monai.bundle_zip import sha256_file

__all__ = [
    "BUNDLE_FILES",
    "DEFAULT_BUNDLE_NAME",
    "MAX_FILE_BYTES",
    "PackagingError",
    "package_bundle",
    "update_large_files_hash",
]

DEFAULT_BUNDLE_NAME = "brain_tumor_mri_2d_segmentation"
# Model Zoo refuses files over 25 MB; larger ones belong in large_files.yml.
MAX_FILE_BYTES = 25 * 1024 * 1024
# What the packaged bundle holds from the bundle folder (folders are copied whole).
# models/input_reference.json: the training slices' intensity statistics the input check needs (1 kB, not weights);
# models/sequence_check.pt: the input check's small sequence classifier (about 70 kB)
BUNDLE_FILES = (
    "LICENSE",
    "large_files.yml",
    "configs",
    "docs",
    "scripts",
    "sample_data",
    "models/input_reference.json",
    "models/sequence_check.pt",
)
WEIGHTS = "models/model.pt"
# Alternative weights shipped beside the default when present (each with its own large_files.yml entry).
EXTRA_WEIGHTS = ("models/model_outline.pt", "models/model_box.pt")
LARGE_FILES = "large_files.yml"
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}


class PackagingError(Exception):
    """The bundle cannot be packaged (missing weights or files, bad metadata)."""


def _set_hash(text: str, path: str, hash_val: str) -> str:
    """``large_files.yml`` text with ``hash_val`` (and ``hash_type: sha256``) set on the entry of ``path``."""
    lines = text.splitlines(keepends=True)
    entry = re.compile(r'^\s*-\s*path:\s*["\']?' + re.escape(path) + r'["\']?\s*$')
    start = next((i for i, line in enumerate(lines) if entry.match(line)), None)
    if start is None:
        raise PackagingError(f"{LARGE_FILES}: no entry with path {path!r}")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*-\s", lines[i])), len(lines))
    indent = re.match(r"^(\s*)-", lines[start]).group(1) + "  "
    values = {"hash_val": hash_val, "hash_type": "sha256"}
    found = set()
    for i in range(start + 1, end):
        key = re.match(r"^\s*(hash_val|hash_type)\s*:", lines[i])
        if key:
            lines[i] = f"{indent}{key.group(1)}: {json.dumps(values[key.group(1)])}\n"
            found.add(key.group(1))
    lines[end:end] = [f"{indent}{k}: {json.dumps(v)}\n" for k, v in values.items() if k not in found]
    return "".join(lines)


def _present_weights(bundle: Path) -> list[str]:
    return [w for w in (WEIGHTS, *EXTRA_WEIGHTS) if (bundle / w).is_file()]


def _hashed_listing(bundle: Path) -> str:
    """``large_files.yml`` with the sha256 of every weights file present in the bundle."""
    text = (bundle / LARGE_FILES).read_text(encoding="utf-8")
    for weights in _present_weights(bundle):
        text = _set_hash(text, weights, sha256_file(bundle / weights))
    return text


def update_large_files_hash(bundle_dir: str | os.PathLike) -> str:
    """Write the sha256 of each weights file (``models/model.pt``, alternatives) into ``large_files.yml``.

    Returns:
        the hash of ``models/model.pt``.

    Raises:
        PackagingError: the weights or ``large_files.yml`` are missing, or it lists no entry for a
            weights file present.
    """
    bundle = Path(bundle_dir)
    weights, listing = bundle / WEIGHTS, bundle / LARGE_FILES
    for p in (weights, listing):
        if not p.is_file():
            raise PackagingError(f"{p}: not found")
    from scripts.io import atomic_output

    text = _hashed_listing(bundle)
    with atomic_output(listing) as tmp:  # a crash never leaves a half-written large_files.yml
        Path(tmp).write_text(text, encoding="utf-8")
    return sha256_file(weights)


def _bundle_version(bundle: Path) -> str:
    meta_file = bundle / "configs" / "metadata.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PackagingError(f"{meta_file}: cannot read bundle metadata ({e})") from None
    version = meta.get("version")
    if not isinstance(version, str) or not version:
        raise PackagingError(f"{meta_file}: no 'version'")
    if version not in meta.get("changelog", {}):
        raise PackagingError(f"{meta_file}: version {version} is not listed in 'changelog'")
    return version


def _bundle_members(bundle: Path, with_weights: bool) -> list[tuple[Path, str]]:
    """(source file, path inside the bundle folder) pairs, sorted."""
    members: list[tuple[Path, str]] = []
    for name in BUNDLE_FILES:
        src = bundle / name
        if src.is_file():
            members.append((src, name))
        elif src.is_dir():
            for p in sorted(src.rglob("*")):
                rel = p.relative_to(bundle)
                if p.is_file() and not _SKIP_DIRS.intersection(rel.parts):
                    members.append((p, rel.as_posix()))
        else:
            raise PackagingError(f"{src}: missing from the bundle")
    if with_weights:
        members.extend((bundle / w, w) for w in _present_weights(bundle))
    return members


def package_bundle(
    bundle_dir: str | os.PathLike | None = None,
    output_zip: str | os.PathLike | None = None,
    *,
    name: str = DEFAULT_BUNDLE_NAME,
    allow_no_weights: bool = False,
) -> Path:
    """Zip the bundle (configs, docs, code, sample data) and its weights into one folder ``name``.

    Args:
        bundle_dir: the bundle folder (default: the shipped bundle).
        output_zip: the zip to write, or an existing folder to write ``<name>_v<version>.zip`` into
            (default: the current folder).
        name: the bundle's folder name inside the zip (Model Zoo style, ``snake_case``).
        allow_no_weights: package without ``models/model.pt`` (e.g. a config-only bundle for tests).

    Returns:
        the path of the zip written (atomically: a failed run leaves no partial zip).

    Raises:
        PackagingError: weights missing (without ``allow_no_weights``), a bundle file missing, a
            file over 25 MB, or metadata without a version listed in its changelog.
    """
    from brainseg_monai.bundle_code import default_bundle_dir
    from scripts.io import atomic_output, check_output_file

    bundle = Path(bundle_dir or default_bundle_dir()).resolve()
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise PackagingError(f"bundle name {name!r}: use letters, digits and underscores")
    version = _bundle_version(bundle)
    with_weights = (bundle / WEIGHTS).is_file()
    if not with_weights and not allow_no_weights:
        raise PackagingError(
            f"{bundle / WEIGHTS}: no trained weights; train first, copy them there, or pass --allow-no-weights"
        )
    out = Path(output_zip) if output_zip is not None else Path.cwd()
    if out.is_dir():
        out = out / f"{name}_v{version}.zip"
    try:  # it would overwrite a bundle file (the weights...) or package itself
        check_output_file(out, {"the bundle being packaged": bundle}, "--output")
    except ValueError as e:
        raise PackagingError(str(e)) from None
    members = _bundle_members(bundle, with_weights)
    for src, _ in members:
        if src.stat().st_size > MAX_FILE_BYTES:
            raise PackagingError(f"{src}: {src.stat().st_size / 2**20:.1f} MB, over Model Zoo's 25 MB limit")
    with atomic_output(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for src, arcname in members:
                if arcname == LARGE_FILES and with_weights:
                    # the packaged listing always names the hashes of the weights packaged with it
                    zf.writestr(f"{name}/{arcname}", _hashed_listing(bundle))
                else:
                    zf.write(src, f"{name}/{arcname}")
    return out
