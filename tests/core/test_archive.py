"""Safe extraction: zip-slip, links, file count, unpacked size and decompression ratio."""

from __future__ import annotations

import io
import zipfile

import pytest

from core.datasets.archive import Limits, extract
from core.errors import UploadRejected

LIMITS = Limits(max_files=20, max_extracted_bytes=1024**2, max_ratio=10)


def run(data: bytes, dest, limits: Limits = LIMITS) -> list[str]:
    return extract(io.BytesIO(data), dest, limits)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_extracts_regular_files_and_skips_junk(archives, tmp_path, kind):
    files = {"cats/a.png": b"1", "dogs/b.png": b"22", "__MACOSX/._a.png": b"x", "cats/.DS_Store": b"x"}
    names = run(getattr(archives, kind)(files), tmp_path)
    assert sorted(names) == ["cats/a.png", "dogs/b.png"]
    assert (tmp_path / "dogs/b.png").read_bytes() == b"22"


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "C:/evil.png"])
def test_rejects_paths_escaping_the_archive(archives, tmp_path, kind, name):
    with pytest.raises(UploadRejected) as err:
        run(getattr(archives, kind)({"ok/a.png": b"1", name: b"2"}), tmp_path / "out")
    assert err.value.file == name
    assert not (tmp_path / "evil.png").exists()


def test_rejects_zip_symlink(archives, tmp_path):
    with pytest.raises(UploadRejected, match="link") as err:
        run(archives.zip({"a/1.png": b"1"}, symlinks={"a/link.png": "/etc/passwd"}), tmp_path)
    assert err.value.file == "a/link.png"


@pytest.mark.parametrize("hard", [False, True])
def test_rejects_tar_links(archives, tmp_path, hard):
    with pytest.raises(UploadRejected, match="link") as err:
        run(archives.tar({"a/1.png": b"1"}, links={"a/link.png": "/etc/passwd"}, hard=hard), tmp_path)
    assert err.value.file == "a/link.png"


def test_rejects_too_many_files(archives, tmp_path):
    files = {f"c/{i}.png": b"1" for i in range(21)}
    with pytest.raises(UploadRejected, match="more than 20 files") as err:
        run(archives.zip(files), tmp_path)
    assert err.value.too_large


def test_rejects_zip_bomb_by_ratio(archives, tmp_path):
    bomb = archives.zip({"c/zeros.png": b"\0" * (900 * 1024)})  # ~1 KiB packed, 900 KiB unpacked
    with pytest.raises(UploadRejected, match="decompression ratio") as err:
        run(bomb, tmp_path)
    assert err.value.file == "c/zeros.png" and err.value.too_large


def test_rejects_total_unpacked_size(archives, tmp_path):
    data = archives.tar({"c/a.bin": b"\0" * (700 * 1024), "c/b.bin": b"\0" * (700 * 1024)}, gz=False)
    with pytest.raises(UploadRejected, match="more than 1048576 bytes") as err:
        run(data, tmp_path, Limits(20, 1024**2, 1000))
    assert err.value.file == "c/b.bin"


def test_zip_that_lies_about_its_size_is_stopped(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("c/a.bin", b"\0" * (2 * 1024**2))
    raw = bytearray(out.getvalue())
    # Patch the declared uncompressed size (central directory) down to 10 bytes.
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(UploadRejected) as err:
        run(bytes(raw), tmp_path, Limits(20, 1024**2, 1000))
    assert err.value.file == "c/a.bin"


def test_rejects_garbage(tmp_path):
    with pytest.raises(UploadRejected, match="not a readable zip or tar"):
        run(b"this is not an archive" * 10, tmp_path)
