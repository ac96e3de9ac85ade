"""The HTTP layer: authentication, retries, problem+json errors, pages, streamed uploads and downloads."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from difftune_client.errors import ApiConnectionError, error_from, retry_after

T = TypeVar("T", bound=BaseModel)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})
CHUNK = 1024 * 1024

UploadProgress = Callable[[int, int], None]
"""``progress(bytes_sent, total_bytes)`` of an upload."""
DownloadProgress = Callable[[str, int, "int | None"], None]
"""``progress(path, bytes_received, total_bytes_or_None)`` of each downloaded file."""


class Body:
    """A request body made again for every attempt (a streamed upload can be sent twice)."""

    def __init__(self, headers: Mapping[str, str], chunks: Callable[[], Iterable[bytes]]):
        self.headers, self.chunks = dict(headers), chunks


class Core:
    """What the resources share: the API's ``httpx.Client``, the key, the retry policy."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout,
        max_retries: int,
        max_retry_wait: float,
        http: httpx.Client | None,
        download_http: httpx.Client | None,
        user_agent: str,
    ):
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.max_retry_wait = max_retries, max_retry_wait
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._owns_http = http is None
        self.http = http if http is not None else httpx.Client(timeout=self.timeout)
        self._download_http = download_http
        self._owns_download_http = False
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": user_agent,
                        "Accept": "application/json"}
        self.sleep: Callable[[float], None] = time.sleep

    # --- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self.http.close()
        if self._owns_download_http and self._download_http is not None:
            self._download_http.close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def backoff(self, attempt: int) -> float:
        return min(0.5 * 2**attempt, 8.0)

    def _wait_for(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``'s request, or None to give up."""
        wait = retry_after(response)
        wait = self.backoff(attempt) if wait is None else wait
        return wait if wait <= self.max_retry_wait else None

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        body: Body | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        retries: int | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send a request to the API, retrying what is safe to retry; raise an ``ApiError`` on 4xx/5xx.

        Retried (at most ``retries`` times): connection failures and 502/503/504 of idempotent
        requests (GET, DELETE, or a POST with an ``Idempotency-Key``), and 429 of any request (the
        service refuses it before doing anything), waiting for ``Retry-After`` when given.
        """
        all_headers = {**self.headers, **(headers or {})}
        idempotent = method in IDEMPOTENT_METHODS or "Idempotency-Key" in all_headers
        retries = self.max_retries if retries is None else retries
        params = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(retries + 1):
            last = attempt == retries
            request = self.http.build_request(
                method, self.url(path), params=params, json=json, timeout=timeout or self.timeout,
                headers={**all_headers, **(body.headers if body else {})},
                content=body.chunks() if body else None)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as err:
                if idempotent and not last:
                    self.sleep(self.backoff(attempt))
                    continue
                raise ApiConnectionError(f"cannot reach the service at {self.base_url} ({method} {path}: "
                                         f"{type(err).__name__}: {err}); is DIFFTUNE_BASE_URL right?") from err
            if response.status_code in RETRY_STATUSES and not last and (idempotent or response.status_code == 429):
                wait = self._wait_for(response, attempt)
                if wait is not None:
                    response.close()
                    self.sleep(wait)
                    continue
            if response.status_code >= 400:
                response.read()
                response.close()
                raise error_from(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.send(method, path, **kwargs)
        return response.json() if response.content else None

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        response = self.send(method, path, stream=True, **kwargs)
        try:
            yield response
        finally:
            response.close()

    # --- pages -----------------------------------------------------------------------------------

    def pages(self, path: str, model: type[T], params: Mapping[str, Any] | None = None) -> Paginated[T]:
        return Paginated(self, path, model, dict(params or {}))

    # --- uploads ---------------------------------------------------------------------------------

    @staticmethod
    def multipart(fields: Mapping[str, str | None], file: Path, filename: str, content_type: str,
                  progress: UploadProgress | None) -> Body:
        """A streamed ``multipart/form-data`` body of ``fields`` and ``file`` (as the ``file`` field),
        with a Content-Length, calling ``progress(sent, total)`` as the file's bytes are read."""
        boundary = secrets.token_hex(16)
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{quote(name)}"\r\n\r\n'.encode()
            + value.encode() + b"\r\n" for name, value in fields.items() if value is not None)
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quote(filename)}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = file.stat().st_size

        def chunks() -> Iterator[bytes]:
            yield head
            sent = 0
            if progress:
                progress(0, size)
            with open(file, "rb") as stream:
                while sent < size and (chunk := stream.read(min(CHUNK, size - sent))):
                    sent += len(chunk)
                    yield chunk
                    if progress:
                        progress(sent, size)
            if sent != size:
                raise ApiConnectionError(f"{file} changed while it was being uploaded")
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + size + len(tail))}
        return Body(headers, chunks)

    # --- downloads -------------------------------------------------------------------------------

    @property
    def download_http(self) -> httpx.Client:
        """A plain client for links to other hosts (S3): it never carries the API key."""
        if self._download_http is None:
            self._download_http = httpx.Client(timeout=self.timeout, follow_redirects=True)
            self._owns_download_http = True
        return self._download_http

    def _client_for(self, url: str) -> httpx.Client:
        """The API's client for the service's own signed links (``/v1/files/…``), else the plain one."""
        own, other = urlsplit(self.base_url), urlsplit(url)
        same = (own.scheme, own.hostname, own.port) == (other.scheme, other.hostname, other.port)
        return self.http if same else self.download_http

    def download(self, url: str, dest: Path, *, name: str, progress: DownloadProgress | None = None) -> Path:
        """Stream ``url`` to ``dest`` through a hidden temporary name renamed at the end (a reader
        never sees half a file); retried from the start after a dropped connection or a 5xx."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        http = self._client_for(url)
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                with http.stream("GET", url, headers={"User-Agent": self.headers["User-Agent"]},
                                 timeout=self.timeout) as response:
                    if response.status_code in RETRY_STATUSES and not last:
                        wait = self._wait_for(response, attempt)
                        if wait is not None:
                            self.sleep(wait)
                            continue
                    if response.status_code >= 400:
                        response.read()
                        raise error_from(response)
                    total = int(response.headers["content-length"]) if response.headers.get(
                        "content-length", "").isdigit() else None
                    received = 0
                    if progress:
                        progress(name, 0, total)
                    with open(part, "wb") as out:
                        for chunk in response.iter_bytes(CHUNK):
                            out.write(chunk)
                            received += len(chunk)
                            if progress:
                                progress(name, received, total)
                    if total is not None and received != total:
                        raise httpx.ReadError(f"got {received} of {total} bytes")
                os.replace(part, dest)
                return dest
            except httpx.TransportError as err:
                part.unlink(missing_ok=True)
                if last:
                    raise ApiConnectionError(f"download of {name} failed: {type(err).__name__}: {err}") from err
                self.sleep(self.backoff(attempt))
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def quote(value: str) -> str:
    """A multipart header parameter value (as browsers escape it)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Paginated(Generic[T]):
    """Every item of a list endpoint, following ``after`` across pages as it is iterated.

    The first page is fetched at once, so a bad request (an unknown id, an invalid filter) raises
    where the list is asked for; the next pages are fetched as iteration reaches them.
    """

    def __init__(self, core: Core, path: str, model: type[T], params: dict[str, Any]):
        self._core, self._path, self._model, self._params = core, path, model, params
        self._first = self._fetch(params.get("after"))

    def _fetch(self, after: str | None) -> dict[str, Any]:
        return self._core.json("GET", self._path, params={**self._params, "after": after})

    def __iter__(self) -> Iterator[T]:
        page = self._first
        while True:
            items = page.get("data") or []
            for item in items:
                yield self._model.model_validate(item)
            if not page.get("has_more") or not items or "id" not in items[-1]:
                return
            page = self._fetch(items[-1]["id"])

    def first_page(self) -> list[T]:
        """Only the items of the first page."""
        return [self._model.model_validate(item) for item in self._first.get("data") or []]

    @property
    def has_more(self) -> bool:
        """Whether the first page said there are more."""
        return bool(self._first.get("has_more"))

    def to_list(self) -> list[T]:
        """Every item, all pages fetched."""
        return list(self)
