"""Fetching a file over HTTP(S) so that a bad connection costs time, never a broken file.

`Fetcher(base_url).get(dest)` streams `base_url + dest.name` into `dest.name + ".part"` and
renames it into place only when the length matches what the server announced (and, when given,
its SHA-256 starts with the published prefix). A dropped connection or a transient server
error is retried with backoff, resuming with an HTTP Range request from the last byte written;
a later run resumes the same `.part` file. A try that receives less than 64 KiB in a read-timeout
window (a server trickling a byte at a time) ends as a stall and is retried. Every failure ends as a `DownloadError` with a
one-line message naming the URL. The dataset (`download`) and the ImageNet weights (`models`)
both come through here, and a file is checked against a published hash
(`storage.atomic.sha256_file`).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import requests
import urllib3
from tqdm.auto import tqdm

from skinlib.layout import DataError
from skinlib.storage.atomic import sha256_file

# (connect, read) seconds: a stalled server fails fast instead of hanging a notebook cell.
TIMEOUT = (15.0, 60.0)
RETRIES = 5  # resumes after a dropped connection before giving up
BACKOFF = 2.0  # seconds before the first retry, doubled each time
CHUNK = 1 << 16
# The progress deadline: within each read-timeout window a download must receive at least this
# much (64 KiB a minute by default), else the try ends as a stall and is retried, resuming.
MIN_BYTES_PER_WINDOW = CHUNK
# HTTP statuses worth retrying: S3 answers these under load and they pass.
TRANSIENT_STATUS = {500, 502, 503, 504}


class DownloadError(DataError):
    """A download, checksum or archive problem; the message is one line naming the file or URL.

    A DataError, so `python -m skinlib` reports it as one line like any other bad-data error.
    """


class DownloadTimeout(DownloadError):
    """The last try got no answer within `seconds` (the connect or the read timeout)."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


class _Dropped(Exception):
    """The connection ended early or the server had a transient failure: retry, resuming."""


class Fetcher:
    """Streams one URL into a `.part` file, resuming with Range after a dropped connection.

    With `keep_partial=False` the partial file is private to this process (several processes
    of one torchrun may fetch the same file at once) and removed unless the fetch succeeds, so
    only the retries within one call resume it. `address_hint` ends the message of an HTTP
    error such as 404.
    """

    def __init__(self, base_url: str = "", *, progress: bool = True, retries: int = RETRIES,
                 backoff: float = BACKOFF, timeout: tuple[float, float] = TIMEOUT,
                 keep_partial: bool = True, address_hint: str = "check the address or --base-url"):
        self.base_url = base_url.rstrip("/") + "/" if base_url else ""
        self.progress, self.retries, self.backoff, self.timeout = progress, retries, backoff, timeout
        self.keep_partial, self.address_hint = keep_partial, address_hint
        self.session = requests.Session()
        # Byte offsets only mean something on the identity encoding.
        self.session.headers["Accept-Encoding"] = "identity"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.session.close()

    def get(self, dest: Path, space_factor: float = 1.0) -> None:
        """Download `dest.name` (below the base URL) into `dest`."""
        self.download(self.base_url + dest.name, dest, space_factor)

    def download(self, url: str, dest: Path, space_factor: float = 1.0, *,
                 sha256_prefix: str | None = None) -> None:
        """Download `url` into `dest`; its length must match what the server announced and,
        with `sha256_prefix`, its SHA-256 must start with it (else it is deleted)."""
        dest = Path(dest)
        private = "" if self.keep_partial else f".{os.getpid()}"
        part = dest.with_name(f"{dest.name}{private}.part")
        try:
            for attempt in range(self.retries + 1):
                try:
                    self._get_once(url, part, space_factor)
                    break
                except (requests.TooManyRedirects, requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema) as exc:  # a retry would meet the same answer
                    raise self._give_up(url, part, attempt + 1, exc) from None
                except (_Dropped, requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
                    if attempt == self.retries:
                        raise self._give_up(url, part, attempt + 1, exc) from None
                    time.sleep(self.backoff * 2**attempt)
            if sha256_prefix and not sha256_file(part).startswith(sha256_prefix):
                part.unlink()
                raise DownloadError(f"{url}: the file received is corrupt (its SHA-256 does not start with "
                                    f"{sha256_prefix}, the published hash); re-running the command downloads it again")
            os.replace(part, dest)
        finally:
            if not self.keep_partial:
                part.unlink(missing_ok=True)

    def _give_up(self, url: str, part: Path, tries: int, exc: BaseException) -> DownloadError:
        """The error that ends a fetch after its last try failed with `exc`."""
        kept = part.stat().st_size if self.keep_partial and part.exists() else 0
        then = (f"{kept:,} bytes are kept in {part}: re-running the command resumes from there"
                if kept else "re-running the command tries again")
        message = f"{url}: {self.reason(exc)}; gave up after {tries} tr{'y' if tries == 1 else 'ies'}; {then}"
        if isinstance(exc, requests.ConnectTimeout):
            return DownloadTimeout(message, self.timeout[0])
        if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError)):
            return DownloadTimeout(message, self.timeout[1])
        return DownloadError(message)

    def _get_once(self, url: str, part: Path, space_factor: float) -> None:
        """One request, resumed from `part`'s length."""
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            start = self._where_to_start(url, response, part, have)
            if start is None:  # the partial file is already the whole file
                return
            have, total = start
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise DownloadError(f"{url}: the server sent it {encoding}-encoded; use a plain mirror")
            if total is not None:
                _check_space(part.parent, (total - have) + total * (space_factor - 1.0), url)
            with open(part, "ab" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1], disable=not self.progress,
            ) as bar:
                # Raw bytes, not iter_content: with decoding on, urllib3 drops the bytes it
                # buffered when the connection breaks, and a resume must start at the last
                # byte actually written. Accept-Encoding: identity makes raw bytes the file.
                # read1 returns whatever has arrived, so a server trickling a byte every few
                # seconds (each read within the read timeout) still meets the progress deadline.
                window_start, window_bytes = time.monotonic(), 0
                while chunk := response.raw.read1(CHUNK, decode_content=False):
                    out.write(chunk)
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    if time.monotonic() - window_start >= self.timeout[1]:
                        if window_bytes < MIN_BYTES_PER_WINDOW:
                            raise _Dropped(f"the server sent only {window_bytes:,} bytes in "
                                           f"{time.monotonic() - window_start:.1f} s (too slow to finish)")
                        window_start, window_bytes = time.monotonic(), 0
        size = part.stat().st_size
        if total is not None and size < total:
            raise _Dropped(f"connection closed at byte {size:,} of {total:,}")
        if total is not None and size > total:
            bad = move_aside(part)
            raise DownloadError(
                f"{url}: received {size:,} bytes but the server announced {total:,}; "
                f"moved aside to {bad.name}, re-run to download it again"
            )

    def _where_to_start(self, url: str, response: requests.Response, part: Path,
                        have: int) -> tuple[int, int | None] | None:
        """(byte the body starts at, total size or None) from the server's answer to a request
        for bytes `have`-; None when `part` is already complete. Raises for any other answer."""
        status = response.status_code
        if status == 416:  # nothing left after `have`: complete, or longer than the file
            total = _range_total(response.headers.get("Content-Range", ""))
            if total is None:  # not every server says the size in a 416: ask for it
                total = self._length(url)
            if total == have:
                return None
            part.unlink(missing_ok=True)
            raise _Dropped(f"HTTP 416: the partial file ({have:,} bytes) does not fit; restarting")
        if status in TRANSIENT_STATUS:
            raise _Dropped(f"HTTP {status} {response.reason}")
        if status == 206:
            start, total = _parse_content_range(url, response.headers.get("Content-Range", ""))
            if start != have:  # the server resumed elsewhere: start over rather than guess
                part.unlink(missing_ok=True)  # a server may answer 206 to a request without Range
                raise _Dropped(f"server resumed at byte {start:,}, not {have:,}; restarting")
            return have, total
        if status == 200:  # no Range support (or first request): from byte zero
            length = response.headers.get("Content-Length")
            return 0, (int(length) if length and length.isdigit() else None)
        raise DownloadError(f"{url}: HTTP {status} {response.reason} ({self.address_hint})")

    def reason(self, exc: BaseException) -> str:
        """A short human reason for a failed try (the library messages run to several lines)."""
        if isinstance(exc, _Dropped):
            return str(exc)
        if isinstance(exc, requests.ConnectTimeout):
            return f"no connection within {self.timeout[0]:g} s"
        if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError)):
            return f"the server sent nothing for {self.timeout[1]:g} s"
        if isinstance(exc, requests.TooManyRedirects):
            return "the address redirects in a loop (or through more than 30 redirects)"
        if isinstance(exc, requests.ConnectionError):
            inner = exc.args[0] if exc.args else exc
            inner = getattr(inner, "reason", inner)  # urllib3's MaxRetryError wraps the cause
            text = re.sub(r"<[^>]*>:?\s*", "", flat_message(inner))  # drop '<...Connection object at 0x..>'
            errno = re.search(r"\[Errno [^\]]*\][^\"')]*", text)  # '[Errno 111] Connection refused'
            return f"cannot reach the server ({errno.group(0).strip() if errno else text})"
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                            requests.exceptions.MissingSchema)):
            return f"the server sent the download to an address it cannot follow ({flat_message(exc)})"
        short = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected", flat_message(exc))
        if short:  # the server closed the connection before the length it announced
            got, more = int(short.group(1)), int(short.group(2))
            return f"the connection dropped (closed at byte {got:,} of {got + more:,} the server announced)"
        return "the connection dropped"

    def _length(self, url: str) -> int | None:
        """The file's size from a HEAD request, or None when the server does not say."""
        response = self.session.head(url, timeout=self.timeout, allow_redirects=True)
        length = response.headers.get("Content-Length", "")
        return int(length) if response.ok and length.isdigit() else None


def _parse_content_range(url: str, value: str) -> tuple[int, int | None]:
    """'bytes START-END/TOTAL' -> (START, TOTAL or None when the server sends '*')."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not match:
        raise DownloadError(f"{url}: HTTP 206 with an unreadable Content-Range {value!r}")
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _range_total(value: str) -> int | None:
    """The TOTAL of a 416's 'bytes */TOTAL', or None."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value)
    return int(match.group(1)) if match else None


def _check_space(folder: Path, needed: float, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(
            f"{url}: needs about {needed / 1e9:.1f} GB free in {folder}, only {free / 1e9:.1f} GB left"
        )


def flat_message(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def move_aside(path: Path) -> Path:
    """Rename a file that failed a check to `NAME.bad` (NAME without `.part`), replacing an older one."""
    bad = path.with_name(path.name.removesuffix(".part") + ".bad")
    os.replace(path, bad)
    return bad
