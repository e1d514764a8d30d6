"""Fetching one file over HTTP(S) with the standard library: resumable, time-bounded, size-checked.

:func:`fetch`:

- streams into ``<file>.part`` in a download cache folder, beside a small ``<file>.part.json`` that records
  the URL and what the server said about the file (length, ETag, Last-Modified);
- resumes an interrupted download with a ``Range`` request (``If-Range`` guards against a file that changed
  on the server); a server that answers ``200`` instead of ``206`` is read again from the start, and a
  ``206`` whose ``Content-Range`` does not continue the partial file, or whose total differs from the
  recorded one, makes the partial file discarded;
- bounds every wait: each connect and each read waits at most ``timeout`` seconds, a server that sends
  less than ``MIN_BYTES_PER_S`` over ``timeout`` seconds counts as stalled too (it could otherwise trickle
  a byte at a time forever), and a transient failure (timeout, stall, reset or cut connection, 5xx, 408,
  429) is retried ``retries`` times, resuming each time, so a stalled server costs at most about
  ``(retries + 1) * 2 * timeout`` seconds plus short pauses;
- checks sizes: the bytes received must match ``Content-Length``/``Content-Range`` (a cut connection is
  a transient failure, resumed), there must be room on the disk, and the file must not be empty;
- shows a tqdm progress bar on stderr when stderr is a terminal.
"""

import http.client
import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["DownloadError", "fetch", "MIN_BYTES_PER_S", "CHUNK", "file_size", "remove_file", "read_json_object",
           "write_json_atomically"]

_USER_AGENT = "bert_cased_L_24_H_1024_A_16-download/1.1.0 (+python urllib)"
CHUNK = 1 << 20
# A download slower than this over a whole ``timeout`` window is treated as stalled.
MIN_BYTES_PER_S = 1024
# HTTP statuses worth another try: the server or something on the way may answer differently in a moment.
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(Exception):
    """A download that failed: the message says which URL, what happened, and what is kept for a resume."""


class _Transient(Exception):
    """A failure worth another try (the partial file is kept)."""


def fetch(url, path, timeout=30.0, retries=3, progress=None, backoff=1.0, label=None):
    """Downloads ``url`` to ``path`` (resuming ``path + ".part"`` if a previous try left one); returns
    ``{"url", "size", "resumed_from", "attempts"}``.

    Waits at most ``timeout`` seconds for a connection or for each read; retries transient failures
    ``retries`` times, pausing ``backoff * 2**n`` seconds (at most 10). ``progress``: True, False, or None
    for a bar only when stderr is a terminal. Raises DownloadError with a one-paragraph message.
    """
    label = label or os.path.basename(path)
    part, meta_path = path + ".part", path + ".part.json"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = read_json_object(meta_path)
    if meta.get("url") != url:  # a part of another URL (or none): start afresh
        remove_file(part)
        meta = {"url": url}
    resumed_from = file_size(part)
    attempts, reason = 0, None
    while attempts <= retries:
        if attempts:
            time.sleep(min(backoff * 2 ** (attempts - 1), 10.0))
        attempts += 1
        try:
            done = _fetch_once(url, part, meta, meta_path, timeout, progress, label)
        except _Transient as e:
            reason = str(e)
            continue
        if done:
            os.replace(part, path)
            remove_file(meta_path)
            return {"url": url, "size": file_size(path), "resumed_from": resumed_from, "attempts": attempts}
    kept = file_size(part)
    keep = (f"; {kept} bytes are kept in {part} and the next run resumes from there" if kept
            else "")
    raise DownloadError(f"could not download {url} after {attempts} attempt{'s' * (attempts > 1)}: "
                        f"{reason}{keep}")


def _fetch_once(url, part, meta, meta_path, timeout, progress, label):
    """One request; True when the file is complete. Raises _Transient or DownloadError."""
    offset = file_size(part)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator and not validator.startswith("W/"):
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            total = _content_range_total(e.headers.get("Content-Range"))
            if total is not None and total == offset and meta.get("total") in (None, total):
                return True  # the partial file was complete already
            remove_file(part)  # the part does not fit what the server has: start afresh
            raise _Transient(f"the server refused to resume at byte {offset} (HTTP 416); starting afresh") from None
        if e.code in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        hint = "; check the URL (with --url, each file is fetched as <URL>/<file name>)" if e.code == 404 else ""
        raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}{hint}") from None
    except (TimeoutError, socket.timeout):
        raise _Transient(f"no answer within {timeout:g} s (the timeout)") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _Transient(f"no answer within {timeout:g} s (the timeout)") from None
        if isinstance(reason, str) and reason.startswith("unknown url type"):
            raise DownloadError(f"cannot download {url}: {reason}") from None
        raise _Transient(f"cannot connect: {reason}") from None
    except (http.client.HTTPException, ConnectionError, OSError) as e:
        raise _Transient(f"connection failed: {type(e).__name__}: {e}") from None

    with response:
        status = response.status
        length = _int_header(response.headers.get("Content-Length"))
        if status == 206 and offset:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset or (meta.get("total") is not None and total != meta["total"]):
                remove_file(part)
                raise _Transient(f"the server resumed at an unexpected place (Content-Range "
                                 f"{response.headers.get('Content-Range')!r} for a partial file of {offset} "
                                 "bytes); starting afresh")
            if length is not None and total is not None and start + length != total:
                raise DownloadError(f"{url}: inconsistent sizes from the server (Content-Range "
                                    f"{response.headers.get('Content-Range')!r}, Content-Length {length})")
            mode = "ab"
        elif status == 200:
            if offset:  # the server ignored the Range header or the file changed (If-Range): from the start
                offset = 0
            total, mode = length, "wb"
        else:
            raise DownloadError(f"could not download {url}: unexpected HTTP {status} {response.reason}")
        meta.update(total=total, etag=response.headers.get("ETag"),
                    last_modified=response.headers.get("Last-Modified"))
        write_json_atomically(meta_path, meta)
        if total is not None:
            _check_disk_space(part, total - offset, url)
        received = offset
        window_start, window_bytes = time.monotonic(), 0
        bar = _progress_bar(progress, total, offset, label)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read1(CHUNK if total is None else min(CHUNK, total - received) or 1)
                    except (TimeoutError, socket.timeout):
                        raise _Transient(f"the server stalled: no data for {timeout:g} s (the timeout) after "
                                         f"{received} of {_describe(total)} bytes") from None
                    except (http.client.HTTPException, ConnectionError, OSError) as e:
                        raise _Transient(f"the connection broke after {received} of {_describe(total)} bytes "
                                         f"({type(e).__name__}: {e})") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    window_bytes += len(chunk)
                    window = time.monotonic() - window_start
                    if window >= timeout:
                        if window_bytes < MIN_BYTES_PER_S * window:
                            raise _Transient(f"the server is too slow: {window_bytes} bytes in {window:.1f} s "
                                             f"(under {MIN_BYTES_PER_S} bytes/s) after {received} of "
                                             f"{_describe(total)} bytes")
                        window_start, window_bytes = time.monotonic(), 0
                    if bar is not None:
                        bar.update(len(chunk))
                    if total is not None and received >= total:
                        break
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received < total:
        raise _Transient(f"the connection closed after {received} of {total} bytes")
    if total is not None and received > total:
        remove_file(part)
        raise DownloadError(f"{url}: received {received} bytes, more than the {total} announced; discarded")
    if received == 0:
        remove_file(part)
        raise DownloadError(f"{url}: the server sent an empty file")
    return True


def _progress_bar(progress, total, initial, label):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                file=sys.stderr, dynamic_ncols=True, leave=True)


def _content_range(value):
    """``(start, total or None)`` of ``bytes start-end/total``; raises _Transient for garbage."""
    try:
        unit, rest = value.strip().split(" ", 1)
        span, total = rest.split("/", 1)
        start = int(span.split("-", 1)[0])
        if unit != "bytes":
            raise ValueError(unit)
        return start, None if total.strip() == "*" else int(total)
    except (AttributeError, ValueError):
        raise _Transient(f"the server sent an unreadable Content-Range {value!r}") from None


def _content_range_total(value):
    try:
        return int(value.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None


def _int_header(value):
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _describe(total):
    return "an unknown number of" if total is None else str(total)


def _check_disk_space(path, needed, url):
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return
    if needed > free:
        raise DownloadError(f"not enough disk space for {url}: {needed} more bytes needed in "
                            f"{os.path.dirname(os.path.abspath(path))}, {free} free")


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def remove_file(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def read_json_object(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json_atomically(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(tmp, path)
