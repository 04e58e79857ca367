"""Unpack a bundle zip only when it is the one expected, and only inside the target folder.

A MONAI bundle is code: its configs are evaluated (``$`` expressions, ``_target_``) and
``brainseg`` imports what they name. So a zip is checked against the sha256 its publisher
gave *before* it is opened, and no member may land outside the target folder ("zip slip":
``../x``, absolute paths, drive letters, symbolic links). Extraction goes to a temporary
folder beside the target and is renamed onto it at the end, so a refused or failed unpack
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

__all__ = [
    "BundleZipError",
    "MAX_MEMBERS",
    "MAX_UNPACKED_BYTES",
    "check_member_count",
    "check_members",
    "sha256_file",
    "unpack_bundle",
]

# Refuse zips that would unpack to more than this (a zip bomb); a bundle is tens of MB.
MAX_UNPACKED_BYTES = 4 * 1024**3
# Refuse zips with more members than this, counted from the zip's end record before its directory is read
# (each member costs memory to list and a file to write); a bundle has a few hundred.
MAX_MEMBERS = 10_000
# the smallest central directory entry: a zip's directory of N bytes lists at most N // 46 members
_MIN_DIRECTORY_ENTRY = 46
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class BundleZipError(ValueError):
    """The zip is not the expected one, is unsafe to unpack, or is not a bundle."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\x00" in name:
        return "has a NUL character in its name"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "climbs out of the target folder ('..')"
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type; 0 when the zip records none
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    return None


def check_member_count(checked: str | os.PathLike, zip_path: str | os.PathLike = "") -> None:
    """Refuse a zip of more than :data:`MAX_MEMBERS` members from its end record, before ``ZipFile`` lists them.

    The record's member count and the size of its central directory both bound the listing; a file
    that has no such record is left to ``ZipFile`` to refuse.

    Raises:
        BundleZipError: naming the zip and the count.
    """
    with open(checked, "rb") as f:
        try:
            end = zipfile._EndRecData(f)  # the end-of-central-directory record, zip64 included
        except (AttributeError, OSError, ValueError, struct.error, zipfile.BadZipFile):
            return  # no readable end record: ZipFile refuses the file
    if not end:
        return
    entries, size = getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4), getattr(zipfile, "_ECD_SIZE", 5)
    count, directory = int(end[entries]), int(end[size])
    if count > MAX_MEMBERS:
        said = f"has {count} members"
    elif directory // _MIN_DIRECTORY_ENTRY > MAX_MEMBERS:  # an end record that under-counts: the directory's size
        said = f"has a member directory of {directory} bytes (room for {directory // _MIN_DIRECTORY_ENTRY} members)"
    else:
        return
    raise BundleZipError(f"{zip_path or checked}: {said}, over the limit of {MAX_MEMBERS}: refused, nothing unpacked")


def check_members(zf: zipfile.ZipFile, zip_path: str | os.PathLike = "") -> None:
    """Refuse the whole zip if any member would land outside the target folder, it has too many or it is too large.

    Raises:
        BundleZipError: naming the first unsafe member.
    """
    if len(zf.infolist()) > MAX_MEMBERS:
        raise BundleZipError(
            f"{zip_path}: has {len(zf.infolist())} members, over the limit of {MAX_MEMBERS}: refused, nothing unpacked"
        )
    total = 0
    for info in zf.infolist():
        problem = _member_problem(info)
        if problem:
            raise BundleZipError(f"{zip_path}: member {info.filename!r} {problem}: refused, nothing unpacked")
        total += info.file_size
    if total > MAX_UNPACKED_BYTES:
        raise BundleZipError(
            f"{zip_path}: would unpack to {_size(total)}, over the limit of {_size(MAX_UNPACKED_BYTES)}: refused, "
            "nothing unpacked"
        )


def _size(n: int) -> str:
    """Bytes as a person reads them: ``4.0 GiB``, ``1.91 MiB``."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def _bundle_root(folder: Path) -> Path:
    """The folder holding ``configs/``: ``folder`` itself or its single top-level folder."""
    if (folder / "configs").is_dir():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir() and (p / "configs").is_dir()]
    if len(subdirs) == 1:
        return subdirs[0]
    raise BundleZipError("no configs/ folder at the top of the zip: not a MONAI bundle")


def unpack_bundle(zip_path: str | os.PathLike, dest: str | os.PathLike, sha256: str) -> Path:
    """Check ``zip_path`` against ``sha256``, then unpack it into ``dest``.

    Args:
        zip_path: the bundle zip (as ``brainseg package`` or the Model Zoo makes it).
        dest: the folder to create (it may exist if empty).
        sha256: the expected hex sha256 of the zip file (64 hex digits).

    Returns:
        The bundle folder inside ``dest`` (the one holding ``configs/``).

    Raises:
        BundleZipError: bad ``sha256`` argument, hash mismatch, unsafe member, not a zip,
            not a bundle, or ``dest`` is not empty.
        FileNotFoundError: no file at ``zip_path``.
    """
    src, target = Path(zip_path), Path(dest)
    expected = (sha256 or "").strip().lower()
    if not _HEX64.fullmatch(expected):
        raise BundleZipError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: bundle zip not found")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BundleZipError(f"{target}: already exists and is not an empty folder")
    with tempfile.TemporaryDirectory(prefix="brainseg_zip_") as private:  # 0700: only this user
        # Hash the bytes while copying them to a private file, then unpack that copy: whatever
        # happens to the path afterwards, what is unpacked is what was checked.
        checked = Path(private) / "bundle.zip"
        try:
            actual = _copy_and_hash(src, checked)
        except OSError as e:
            if e.filename and os.path.abspath(e.filename) == os.path.abspath(src):
                raise BundleZipError(f"{src}: cannot read ({e.strerror})") from None
            raise BundleZipError(
                f"{src}: cannot copy it to check its sha256 in the system's temporary folder ({e.strerror}); "
                "free space there or point TMPDIR at another folder"
            ) from None
        if actual != expected:
            raise BundleZipError(f"{src}: sha256 is {actual}, not the expected {expected}: refused, nothing unpacked")
        return _unpack_checked(checked, src, target)


def _copy_and_hash(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` in chunks; the hex sha256 of the bytes copied."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()


def _unpack_checked(checked: Path, src: Path, target: Path) -> Path:
    """Unpack the checked copy of ``src`` into ``target`` (atomically: a temporary folder renamed)."""
    check_member_count(checked, src)
    try:
        zf = zipfile.ZipFile(checked)
    except zipfile.BadZipFile as e:
        raise BundleZipError(f"{src}: not a zip file ({e})") from None
    from scripts.io import atomic_folder

    with zf:
        check_members(zf, src)
        # the temporary folder is named after this process: one a killed unpack leaves, a later run removes
        with atomic_folder(target) as tmp:
            _extract(zf, Path(tmp), src)
            try:
                inner = _bundle_root(Path(tmp)).relative_to(tmp)
            except BundleZipError as e:
                raise BundleZipError(f"{src}: {e}") from None
    return target / inner


def _extract(zf: zipfile.ZipFile, folder: Path, src: Path | str = "the zip") -> None:
    """Write every member of ``zf`` under ``folder`` (a temporary folder).

    Every failure names the user's zip ``src`` and the member, never ``folder``: a damaged member (a bad
    CRC, a truncated stream), a member whose name is taken by a file, a full disk.

    Raises:
        BundleZipError: ``"<zip>: member 'configs/x.json': cannot unpack (<why>): refused, nothing unpacked"``.
    """
    import zlib

    base = folder.resolve()
    written = 0
    for info in zf.infolist():
        path = (base / info.filename.replace("\\", "/")).resolve()
        if path != base and base not in path.parents:  # belt and braces after check_members
            raise BundleZipError(f"{src}: member {info.filename!r} would land outside the target folder: refused")
        try:
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin, open(path, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    written += len(chunk)
                    if written > MAX_UNPACKED_BYTES:
                        raise BundleZipError(
                            f"{src}: unpacks to more than {_size(MAX_UNPACKED_BYTES)}: refused, nothing unpacked"
                        )
                    fout.write(chunk)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError) as e:  # NotImplementedError: a method
            # OSError's own text names the temporary path: say only why
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            raise BundleZipError(
                f"{src}: member {info.filename!r}: cannot unpack ({why}): refused, nothing unpacked"
            ) from None
