"""Layout recognition and image checks on extracted datasets."""

from __future__ import annotations

import json

import pytest

from core.datasets.inspection import inspect
from core.errors import UploadRejected


def write(root, files: dict[str, bytes]) -> list[str]:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return list(files)


def test_class_folders_give_classes_counts_and_sizes(archives, tmp_path):
    files = archives.class_folders(classes=3, per_class=2)
    files["class_2/big.png"] = archives.png(size=(32, 24))
    info = inspect(tmp_path, write(tmp_path, files))
    assert info.layout == "class_folders"
    assert info.classes == ["class_0", "class_1", "class_2"]
    assert info.stats["images_per_class"] == {"class_0": 2, "class_1": 2, "class_2": 3}
    assert (info.stats["min_width"], info.stats["max_width"], info.stats["max_height"]) == (16, 32, 24)
    assert {"file_name": "class_2/big.png", "label": 2} in info.entries


def test_a_wrapping_folder_is_stripped(archives, tmp_path):
    files = {f"flowers/{k}": v for k, v in archives.class_folders(classes=2, per_class=1).items()}
    info = inspect(tmp_path, write(tmp_path, files))
    assert info.classes == ["class_0", "class_1"] and info.stats["root"] == "flowers/"


def test_single_class_folder_is_kept(archives, tmp_path):
    info = inspect(tmp_path, write(tmp_path, {"cat/a.png": archives.png(), "cat/b.png": archives.png()}))
    assert info.classes == ["cat"]


def test_metadata_jsonl_with_conditioning(archives, tmp_path):
    info = inspect(tmp_path, write(tmp_path, archives.captioned(n=4, conditioning=True)))
    assert info.layout == "metadata" and info.classes is None and len(info.entries) == 4
    assert info.stats["conditioning"] is True
    assert info.entries[0] == {
        "file_name": "images/0.png",
        "text": "a photo number 0",
        "conditioning_file_name": "conditioning/0.png",
    }


def test_unreadable_image_is_named(archives, tmp_path):
    files = archives.class_folders()
    files["class_1/broken.png"] = b"\x89PNG not really"
    with pytest.raises(UploadRejected, match="not a readable image") as err:
        inspect(tmp_path, write(tmp_path, files))
    assert err.value.file == "class_1/broken.png"


def test_loose_file_in_class_layout_is_named(archives, tmp_path):
    files = archives.class_folders()
    files["README.png"] = archives.png()
    with pytest.raises(UploadRejected, match="class folder") as err:
        inspect(tmp_path, write(tmp_path, files))
    assert err.value.file == "README.png"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"text": "x"}), "file_name"),
        (json.dumps({"file_name": "images/0.png"}), "text"),
        (json.dumps({"file_name": "images/missing.png", "text": "x"}), "not in the archive"),
    ],
)
def test_bad_metadata_line_is_named(archives, tmp_path, line, message):
    files = archives.captioned(n=1)
    files["metadata.jsonl"] += b"\n" + line.encode()
    with pytest.raises(UploadRejected, match=message) as err:
        inspect(tmp_path, write(tmp_path, files))
    assert err.value.file == "metadata.jsonl:2"
