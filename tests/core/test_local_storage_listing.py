"""LocalStorage.list / delete_prefix walk only the folder a prefix names, not the whole store."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from core.storage import LocalStorage
from core.storage.local import TMP_PREFIX

KEYS = [
    "datasets/ds_1/archive.tar",
    "datasets/ds_1/manifest.json",
    "jobs/job_1/checkpoints/step_0000002/meta.json",
    "jobs/job_1/checkpoints/step_0000002/transformer/model.safetensors",
    "jobs/job_1/checkpoints/step_0000004/meta.json",
    "jobs/job_1/checkpoints/step_0000010/meta.json",
    "jobs/job_1/checkpoints/step_0001000/meta.json",
    "jobs/job_1/samples/step_0000002.png",
    "jobs/job_10/checkpoints/step_0000002/meta.json",
    "jobs/job_2/samples/step_0000002.png",
    "top.txt",
]
PREFIXES = [
    "", "jobs", "jobs/", "jobs/job_1", "jobs/job_1/", "jobs/job_1/checkpoints/step_00",
    "jobs/job_1/checkpoints/step_0000002/", "jobs/job_1/checkpoints/step_0000002/meta.json",
    "jobs/job_1/samples/step_0000002.png", "jobs/job_1/checkpoints/step_0001", "jobs/job_", "t", "missing/",
    "jobs/missing/x", "/jobs", "jobs//", "../", "jobs/../jobs/", "datasets/ds_1/archive.tar/",
]


def reference_list(root: Path, prefix: str) -> list[str]:
    """What the full-scan implementation returned."""
    keys = (p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(TMP_PREFIX))
    return sorted(k for k in keys if k.startswith(prefix))


@pytest.fixture
def store(tmp_path) -> LocalStorage:
    storage = LocalStorage(tmp_path / "store", base_url="http://testserver", signing_secret="s")
    for key in KEYS:
        storage.put_stream(key, io.BytesIO(key.encode()))
    # a write in progress, and an empty folder nobody wrote a key into
    (storage.root / "jobs/job_1/checkpoints/step_0000004" / f"{TMP_PREFIX}abc").write_bytes(b"partial")
    (storage.root / "jobs/job_1/empty").mkdir()
    return storage


@pytest.mark.parametrize("prefix", PREFIXES)
def test_listing_matches_a_full_scan(store, prefix):
    assert store.list(prefix) == reference_list(store.root, prefix)


def test_listing_examples(store):
    assert store.list("jobs/job_1/checkpoints/step_00") == [
        "jobs/job_1/checkpoints/step_0000002/meta.json",
        "jobs/job_1/checkpoints/step_0000002/transformer/model.safetensors",
        "jobs/job_1/checkpoints/step_0000004/meta.json",
        "jobs/job_1/checkpoints/step_0000010/meta.json",
        "jobs/job_1/checkpoints/step_0001000/meta.json",
    ]
    assert store.list("jobs/job_1") == [k for k in KEYS if k.startswith("jobs/job_1")]  # job_10 too
    assert "jobs/job_10/checkpoints/step_0000002/meta.json" not in store.list("jobs/job_1/")
    assert LocalStorage(store.root / "nowhere", base_url="http://x").list("") == []


def test_listing_a_small_prefix_visits_only_its_folder(store, monkeypatch):
    for i in range(200):  # unrelated trees a full scan would walk
        store.put_stream(f"datasets/ds_{i}/archive.tar", io.BytesIO(b"x"))
    scanned: list[str] = []
    entries: list[str] = []
    real_scandir = os.scandir

    class Counting:
        def __init__(self, path):
            scanned.append(os.fspath(path))
            self.it = real_scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            for entry in self.it:
                entries.append(entry.path)
                yield entry

    monkeypatch.setattr(os, "scandir", Counting)
    assert store.list("jobs/job_1/checkpoints/step_000000") == [
        "jobs/job_1/checkpoints/step_0000002/meta.json",
        "jobs/job_1/checkpoints/step_0000002/transformer/model.safetensors",
        "jobs/job_1/checkpoints/step_0000004/meta.json",
    ]
    folder = os.fspath(store.root / "jobs/job_1/checkpoints")
    assert scanned and all(path.startswith(folder) for path in scanned), scanned
    assert all(path.startswith(folder) for path in entries)
    # checkpoints/ (4 entries), step_0000002/ (2), transformer/ (1), step_0000004/ (meta + temp file)
    assert len(entries) == 9, entries


def test_delete_prefix_removes_keys_and_the_folders_it_empties(store):
    root = store.root
    assert store.delete_prefix("jobs/job_1/checkpoints/step_00000") == 4  # 0000002 (2 keys), 0000004, 0000010
    assert not (root / "jobs/job_1/checkpoints/step_0000002").exists()
    assert not (root / "jobs/job_1/checkpoints/step_0000010").exists()
    assert (root / "jobs/job_1/checkpoints/step_0000004" / f"{TMP_PREFIX}abc").exists()  # not a key
    assert store.list("jobs/job_1/checkpoints/") == ["jobs/job_1/checkpoints/step_0001000/meta.json"]

    before = {k for k in KEYS if not k.startswith("jobs/job_1/")}
    assert store.delete_prefix("jobs/job_1/") == 2
    assert not (root / "jobs/job_1/samples").exists()
    assert not (root / "jobs/job_1/checkpoints/step_0001000").exists()
    assert (root / "jobs/job_1/checkpoints/step_0000004").is_dir()  # still holds a write in progress
    assert set(store.list("")) == before  # job_10, job_2, datasets, top.txt untouched
    for key in before:
        assert (root / key).read_bytes() == key.encode()

    (root / "jobs/job_1/checkpoints/step_0000004" / f"{TMP_PREFIX}abc").unlink()
    store.put_stream("jobs/job_1/checkpoints/step_0000006/meta.json", io.BytesIO(b"{}"))
    assert store.delete_prefix("jobs/") == 3
    empty = [p for p in root.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert empty == []  # jobs/job_1/empty (empty from the start) and step_0000004 (emptied) too
    assert not (root / "jobs").exists()
    assert store.list("") == ["datasets/ds_1/archive.tar", "datasets/ds_1/manifest.json", "top.txt"]
    assert store.delete_prefix("") == 3 and root.is_dir()
