"""Extract a zip or tar safely: no ``..``, absolute paths or links, bounded size, count and ratio."""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from core.errors import UploadRejected

CHUNK = 1024 * 1024
RATIO_FLOOR = 64 * 1024  # ratios are measured against at least this many packed bytes
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class Limits:
    """What one upload may expand to."""

    max_files: int
    max_extracted_bytes: int
    max_ratio: float
    max_image_pixels: int | None = None  # checked from each image's header, before it is decoded


@dataclass
class Member:
    """One regular file of an archive, with a way to read it."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]


def check_name(name: str) -> str:
    """A member name made safe and relative, or ``UploadRejected`` naming it."""
    if "\x00" in name or "\\" in name:
        raise UploadRejected("path contains a backslash or NUL byte", file=name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UploadRejected("absolute paths are not allowed", file=name)
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise UploadRejected("paths with '..' are not allowed", file=name)
    return "/".join(p for p in parts if p != ".")


def is_junk(name: str) -> bool:
    """Files that archivers add and users never meant to upload."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1] in JUNK_NAMES or parts[-1].startswith("._")


def _zip_members(archive: zipfile.ZipFile) -> Iterator[Member]:
    for info in archive.infolist():
        if info.is_dir():
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadRejected("symbolic links are not allowed", file=info.filename)
        if info.flag_bits & 0x1:
            raise UploadRejected("encrypted entries are not supported", file=info.filename)
        yield Member(info.filename, info.file_size, lambda info=info: archive.open(info))


def _tar_members(archive: tarfile.TarFile) -> Iterator[Member]:
    for info in archive:
        if info.isdir():
            continue
        if info.issym() or info.islnk():
            raise UploadRejected("links are not allowed", file=info.name)
        if not info.isfile():
            raise UploadRejected("only regular files are allowed", file=info.name)
        yield Member(info.name, info.size, lambda info=info: archive.extractfile(info))


def _copy_bounded(source: IO[bytes], target: Path, budget: int, name: str) -> int:
    """Copy at most ``budget`` bytes; more means the archive lied about a size (a bomb)."""
    written = 0
    with open(target, "xb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > budget:
                raise UploadRejected("unpacks to more than the allowed size", file=name, too_large=True)
            out.write(chunk)
    return written


def extract(stream: BinaryIO, dest: Path, limits: Limits) -> list[str]:
    """Unpack the zip or tar ``stream`` into ``dest``; return the relative paths written."""
    stream.seek(0, 2)
    packed = max(stream.tell(), RATIO_FLOOR)
    stream.seek(0)
    budget = min(limits.max_extracted_bytes, int(packed * limits.max_ratio))
    if zipfile.is_zipfile(stream):
        stream.seek(0)
        with zipfile.ZipFile(stream) as archive:
            return _extract_members(_zip_members(archive), dest, limits, budget)
    stream.seek(0)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            return _extract_members(_tar_members(archive), dest, limits, budget)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UploadRejected(f"not a readable zip or tar archive ({err})") from None


def _extract_members(members: Iterator[Member], dest: Path, limits: Limits, budget: int) -> list[str]:
    names: list[str] = []
    total = 0
    for member in members:
        name = check_name(member.name)
        if is_junk(name) or not name:
            continue
        if len(names) >= limits.max_files:
            raise UploadRejected(
                f"archive holds more than {limits.max_files} files", file=name, too_large=True
            )
        if total + member.size > budget:
            raise UploadRejected(_size_message(total + member.size, limits), file=name, too_large=True)
        target = dest / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with member.open() as source:
                total += _copy_bounded(source, target, budget - total, name)
        except FileExistsError:
            raise UploadRejected("duplicate path in archive", file=name) from None
        except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
            raise UploadRejected(f"cannot unpack ({err})", file=name) from None
        names.append(name)
    return names


def _size_message(size: int, limits: Limits) -> str:
    if size > limits.max_extracted_bytes:
        return f"archive unpacks to more than {limits.max_extracted_bytes} bytes"
    return f"archive exceeds the decompression ratio limit of {limits.max_ratio:g}"
