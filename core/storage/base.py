"""The storage interface. Keys are ``/``-separated; a write becomes visible only when complete."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO


class StorageError(Exception):
    """A storage operation failed (transient or misconfiguration)."""


class Storage(ABC):
    """Put, get, list and delete objects, and hand out time-limited download URLs."""

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> None:
        """Store everything read from ``stream`` under ``key``."""

    def put_file(self, key: str, path: str | Path, *, content_type: str | None = None) -> None:
        """Store the local file ``path`` under ``key``."""
        with open(path, "rb") as stream:
            self.put_stream(key, stream, content_type=content_type)

    @abstractmethod
    def get_file(self, key: str, path: str | Path) -> None:
        """Download ``key`` to the local file ``path`` (atomically)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted."""

    def download_prefix(self, prefix: str, dest: str | Path) -> list[str]:
        """Download every key under ``prefix`` into the folder ``dest`` (keys relative to the prefix
        become paths under it); return the keys, none when nothing is stored there."""
        keys = [key for key in self.list(prefix) if not key.endswith("/")]  # skip S3 "folder" markers
        for key in keys:
            relative = key[len(prefix):]
            if any(part in ("", ".", "..") for part in relative.split("/")):
                raise StorageError(f"refusing to download {key!r}: its name leaves the folder")
            self.get_file(key, Path(dest) / relative)
        return keys

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; return how many."""

    @abstractmethod
    def url_for(self, key: str, *, expires_in: int = 3600) -> str:
        """A URL that downloads ``key`` without credentials until it expires."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``StorageError`` unless the store is reachable and writable."""


def check_key(key: str) -> str:
    """Reject keys that are empty, absolute or climb out with ``..``."""
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid storage key {key!r}")
    return key
