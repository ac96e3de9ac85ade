"""Dataset uploads: layouts, stored objects, limits and unsafe archives (no rows, no objects left)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from sqlalchemy import func, select

from core.tables import Dataset


def nothing_left(db, storage) -> None:
    """A rejected upload leaves no row and no object."""
    assert db.scalar(select(func.count()).select_from(Dataset)) == 0
    assert storage.list("") == []


def test_class_folder_zip_is_validated_and_stored(upload, archives, storage, tmp_path):
    response = upload(archives.zip(archives.class_folders(classes=2, per_class=3)), name="pets")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("ds_") and body["name"] == "pets"
    assert (body["layout"], body["num_images"], body["num_classes"]) == ("class_folders", 6, 2)
    assert body["classes"] == ["class_0", "class_1"]
    assert body["stats"]["images_per_class"] == {"class_0": 3, "class_1": 3}
    assert storage.list(f"datasets/{body['id']}/") == [
        f"datasets/{body['id']}/data.tar",
        f"datasets/{body['id']}/manifest.json",
        f"datasets/{body['id']}/thumbnails.png",  # the dashboard's thumbnail strip
    ]
    storage.get_file(f"datasets/{body['id']}/data.tar", tmp_path / "data.tar")
    with tarfile.open(tmp_path / "data.tar") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sorted(names) == [
        "class_0/img_0.png",
        "class_0/img_1.png",
        "class_0/img_2.png",
        "class_1/img_0.png",
        "class_1/img_1.png",
        "class_1/img_2.png",
        "manifest.json",
    ]
    assert manifest["layout"] == "class_folders" and len(manifest["entries"]) == 6


def test_captioned_data_is_normalised_once_for_the_library(upload, archives, storage, tmp_path):
    """Core writes the metadata.jsonl the library reads: stripped paths, known fields, no blank lines."""
    from models.captions import scan_caption_folder

    files = archives.captioned(n=2, conditioning=True)
    rows = [json.loads(line) for line in files.pop("metadata.jsonl").decode().splitlines()]
    files["metadata.jsonl"] = ("\n\n".join(json.dumps({**r, "aesthetic": 5}) for r in rows) + "\n").encode()
    response = upload(archives.zip({f"pairs/{name}": data for name, data in files.items()}))
    assert response.status_code == 201, response.text
    storage.get_file(f"datasets/{response.json()['id']}/data.tar", tmp_path / "data.tar")
    with tarfile.open(tmp_path / "data.tar") as tar:
        tar.extractall(tmp_path / "files", filter="data")
    lines = (tmp_path / "files" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows  # the upload's extra field and blank line are gone
    folder = scan_caption_folder(tmp_path / "files", resolution=16)
    assert folder.captions == ["a photo number 0", "a photo number 1"]
    assert [c.name for c in folder.controls] == ["0.png", "1.png"]


def test_captioned_tar_with_conditioning(upload, archives):
    response = upload(archives.tar(archives.captioned(n=3, conditioning=True)), filename="pairs.tar.gz")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["layout"], body["num_images"], body["classes"]) == ("metadata", 3, None)
    assert body["stats"]["conditioning"] is True


@pytest.mark.parametrize(
    ("build", "status", "file"),
    [
        (
            lambda a: a.zip({**a.class_folders(), "../../etc/cron.d/x.png": b"1"}),
            422,
            "../../etc/cron.d/x.png",
        ),
        (lambda a: a.tar({**a.class_folders(), "/etc/passwd": b"1"}), 422, "/etc/passwd"),
        (lambda a: a.zip(a.class_folders(), symlinks={"class_0/l.png": "/etc/passwd"}), 422, "class_0/l.png"),
        (
            lambda a: a.tar(a.class_folders(), links={"class_0/h.png": "class_0/img_0.png"}, hard=True),
            422,
            "class_0/h.png",
        ),
        (lambda a: a.zip({**a.class_folders(), "class_1/bad.png": b"not an image"}), 422, "class_1/bad.png"),
        (
            lambda a: a.zip({**a.class_folders(), "class_1/zeros.png": b"\0" * 3_000_000}),
            413,
            "class_1/zeros.png",
        ),
        (lambda a: a.zip({f"c/{i}.png": a.png() for i in range(51)}), 413, "c/50.png"),
        (  # one image listed 3 times: a 31 KB archive once became 300,000 examples this way
            lambda a: a.zip({"i.png": a.png(), "metadata.jsonl": b'{"file_name": "i.png", "text": "a"}\n' * 3}),
            422,
            "metadata.jsonl:2",
        ),
    ],
    ids=["zip-slip", "absolute", "zip-symlink", "tar-hardlink", "bad-image", "zip-bomb", "too-many-files",
         "repeated-metadata-line"],
)
def test_rejected_upload_names_the_file_and_leaves_nothing(
    upload, archives, db, storage, settings, build, status, file
):
    response = upload(build(archives))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["errors"][0]["file"] == file and file in body["detail"]
    assert str(settings.cache_dir) not in response.text and "/tmp" not in response.text  # no server paths
    nothing_left(db, storage)


def test_upload_over_the_size_limit_is_413(upload, db, storage):
    response = upload(b"\0" * (3 * 1024**2), filename="huge.zip")
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    nothing_left(db, storage)


def test_chunked_upload_over_the_limit_is_413(client, auth, db, storage):
    boundary = "xyz"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'.encode()

    def body():
        yield head
        for _ in range(40):
            yield b"\0" * (128 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**auth, "content-type": f"multipart/form-data; boundary={boundary}"}
    response = client.post("/v1/datasets", headers=headers, content=body())
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    nothing_left(db, storage)


def test_missing_file_field_is_named(client, auth):
    response = client.post("/v1/datasets", headers=auth, data={"name": "x"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "file"


def test_not_an_archive(upload, db, storage):
    response = upload(io.BytesIO(b"hello" * 100).getvalue(), filename="notes.txt")
    assert response.status_code == 422 and "zip or tar" in response.json()["detail"]
    nothing_left(db, storage)


def test_get_list_delete_and_tenants(client, auth, other_auth, dataset, storage):
    dataset_id = dataset["id"]
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth).json() == dataset
    assert [d["id"] for d in client.get("/v1/datasets", headers=auth).json()["data"]] == [dataset_id]
    assert client.get(f"/v1/datasets/{dataset_id}", headers=other_auth).status_code == 404
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=other_auth).status_code == 404
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 404
    assert storage.list("datasets/") == []


def test_idempotent_upload(upload, archives, db, storage):
    data = archives.zip(archives.class_folders())
    first = upload(data, headers={"Idempotency-Key": "u1"}).json()
    again = upload(data, headers={"Idempotency-Key": "u1"})
    assert again.status_code == 201 and again.json()["id"] == first["id"]
    assert db.scalar(select(func.count()).select_from(Dataset)) == 1
    assert len(storage.list("datasets/")) == 3  # data.tar, manifest.json, thumbnails.png of one dataset
    other = upload(archives.zip(archives.class_folders(classes=3)), headers={"Idempotency-Key": "u1"})
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``x``height`` but whose pixel data is a few bytes: decoding it
    would allocate width*height*3 bytes before finding out."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_over_the_pixel_bound_is_refused_from_its_header(upload, archives, db, storage):
    """The issue's image bomb: a tiny file declaring 12000x12000 is refused before it is decoded."""
    files = {**archives.class_folders(), "class_1/bomb.png": _png_header_only(12000, 12000)}
    response = upload(archives.zip(files))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["file"] == "class_1/bomb.png"
    assert "12000x12000 = 144000000 pixels" in body["detail"] and "DIFFTUNE_MAX_IMAGE_PIXELS" in body["detail"]
    assert storage.list("datasets/") == []


def test_validations_at_once_are_bounded(client, auth, archives, app):
    """With every validation slot taken, the next upload waits, then gets 503 with Retry-After."""
    from api.uploads import ValidationSlots

    app.state.validation_slots = slots = ValidationSlots(1, wait=0.2)
    with slots.slot():
        response = client.post("/v1/datasets", headers=auth,
                               files={"file": ("d.zip", archives.zip(archives.class_folders()))})
    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    assert "being validated" in response.json()["detail"]
    ok = client.post("/v1/datasets", headers=auth, files={"file": ("d.zip", archives.zip(archives.class_folders()))})
    assert ok.status_code == 201
