"""A local directory as object store: atomic writes, HMAC-signed expiring download links."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from core.storage.base import Storage, StorageError, check_key

CHUNK = 1024 * 1024
TMP_PREFIX = ".tmp-"


def _mkstemp_in(folder: Path) -> tuple[int, str]:
    """A temporary file in ``folder``, created with its parents; retried once when a concurrent
    ``delete_prefix`` removes the (then empty) folder between the two steps."""
    for attempt in range(2):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
        except FileNotFoundError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _copy_atomic(stream: BinaryIO, target: Path) -> None:
    """Write ``stream`` to a temporary file next to ``target``, then rename it into place."""
    fd, tmp = _mkstemp_in(target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, CHUNK)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStorage(Storage):
    """Objects are files under ``root``; the API serves them at ``/v1/files/{key}`` with a signature."""

    def __init__(self, root: str | Path, *, base_url: str, signing_secret: str | None = None):
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")
        self._secret = (signing_secret or secrets.token_hex(32)).encode()

    def path_of(self, key: str) -> Path:
        """The file that holds ``key``."""
        return self.root / check_key(key)

    def put_stream(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> None:
        _copy_atomic(stream, self.path_of(key))

    def get_file(self, key: str, path: str | Path) -> None:
        source = self.path_of(key)
        if not source.is_file():
            raise StorageError(f"no object {key!r}")
        with open(source, "rb") as stream:
            _copy_atomic(stream, Path(path))

    def _scan(self, prefix: str, folders: list[Path] | None = None) -> Iterator[str]:
        """Keys under ``prefix``, walking only the deepest folder the prefix names (unsorted).

        ``jobs/j1/checkpoints/step_00`` walks ``jobs/j1/checkpoints`` and, there, only the entries
        whose names start with ``step_00``; temporary files of writes in progress are skipped. The
        folders walked below that one are appended to ``folders`` when given.
        """
        folder, slash, start = prefix.rpartition("/")
        if slash and any(part in ("", ".", "..") for part in folder.split("/")):
            return  # no key lives there (keys pass check_key)
        todo = [(self.root / folder if folder else self.root, f"{folder}/" if folder else "", start)]
        while todo:
            path, key_prefix, name_start = todo.pop()
            try:
                entries = os.scandir(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    if not entry.name.startswith(name_start):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        todo.append((Path(entry.path), f"{key_prefix}{entry.name}/", ""))
                        if folders is not None:
                            folders.append(Path(entry.path))
                    elif entry.is_file() and not entry.name.startswith(TMP_PREFIX):
                        yield key_prefix + entry.name

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._scan(prefix))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, then every folder under it and above the deleted keys
        that is left empty (the root stays)."""
        walked: list[Path] = []
        keys = sorted(self._scan(prefix, walked))
        folders = set(walked)
        for key in keys:
            path = self.path_of(key)
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in list(folders):
            folders.update(p for p in folder.parents if self.root in p.parents)
        folders.discard(self.root)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty (other keys, a write in progress) or already gone
        return len(keys)

    def url_for(self, key: str, *, expires_in: int = 3600) -> str:
        expires = int(time.time()) + expires_in
        query = urlencode({"expires": expires, "signature": self.sign(key, expires)})
        return f"{self.base_url}/v1/files/{quote(check_key(key))}?{query}"

    def sign(self, key: str, expires: int) -> str:
        """The HMAC-SHA256 of ``key`` and its expiry time."""
        return hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def verify(self, key: str, expires: int, signature: str) -> bool:
        """Whether a download link is authentic and not yet expired."""
        return expires >= time.time() and hmac.compare_digest(self.sign(key, expires).encode(), signature.encode())

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(prefix=TMP_PREFIX, dir=self.root):
                pass
        except OSError as err:
            raise StorageError(f"storage directory {self.root} is not writable: {err}") from err
