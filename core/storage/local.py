"""A local directory as object store: atomic writes, HMAC-signed expiring download links."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from core.storage.base import Storage, StorageError, check_key

CHUNK = 1024 * 1024
TMP_PREFIX = ".tmp-"


def _copy_atomic(stream: BinaryIO, target: Path) -> None:
    """Write ``stream`` to a temporary file next to ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
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

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(TMP_PREFIX)
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.path_of(key).unlink(missing_ok=True)
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
        return expires >= time.time() and hmac.compare_digest(self.sign(key, expires), signature)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(prefix=TMP_PREFIX, dir=self.root):
                pass
        except OSError as err:
            raise StorageError(f"storage directory {self.root} is not writable: {err}") from err
