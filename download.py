"""Downloading the pretrained weights (SPEC section 4) and installing them, with the standard library only.

Each source is a list of files fetched over HTTP(S) with :func:`http_fetch.fetch`: resumed after an
interruption, every wait bounded, sizes checked (see that module).

:func:`download_and_install` then checks the structure of what arrived (gzip/tar magic, the pickle header of
a ``.pdparams``, the safetensors header against the file size, ``config.json`` as JSON), reads and checks
the checkpoint with :func:`weights.read_checkpoint` and installs it with :func:`weights.install`, which
swaps the new weights dir in atomically. A download that is rejected leaves the previous weights dir as it
was, and its files are deleted from the cache (they are bad); a download that failed on the network keeps
its ``.part`` file for the next run to resume. After a successful install the cache is removed unless
``keep_download`` is set.
"""

import dataclasses
import datetime
import json
import os
import shutil
import struct
import sys
import urllib.parse

from .http_fetch import CHUNK, DownloadError, fetch, file_size, read_json_object, remove_file, write_json_atomically

__all__ = ["DownloadError", "RemoteFile", "Source", "SOURCES", "DEFAULT_SOURCE", "source_files", "fetch",
           "default_cache_dir", "check_structure", "download_and_install"]


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a source: its name in the cache folder and its default URL."""

    name: str
    url: str


@dataclasses.dataclass(frozen=True)
class Source:
    """A place the pretrained weights can be downloaded from.

    ``checkpoint`` is the path, relative to the cache folder, handed to :func:`weights.read_checkpoint`
    (``"."`` for the folder itself).
    """

    name: str
    description: str
    files: tuple
    checkpoint: str


SOURCES = {
    "paddlehub": Source(
        "paddlehub", "Paddle's BERT release archive, which PaddleHub's build script turned into the 1.x module's "
                     "assets (cased_L-24_H-1024_A-16.tar.gz: params/, vocab.txt, bert_config.json)",
        (RemoteFile("cased_L-24_H-1024_A-16.tar.gz",
                    "https://bert-models.bj.bcebos.com/cased_L-24_H-1024_A-16.tar.gz"),),
        "cased_L-24_H-1024_A-16.tar.gz"),
    "paddlenlp": Source(
        "paddlenlp", "PaddleNLP's bert-large-cased state dict (bert-large-cased.pdparams; the package's vocabulary)",
        (RemoteFile("bert-large-cased.pdparams",
                    "http://bj.bcebos.com/paddlenlp/models/transformers/bert/bert-large-cased.pdparams"),),
        "bert-large-cased.pdparams"),
    "huggingface": Source(
        "huggingface", "the Hugging Face checkpoint bert-large-cased (config.json, vocab.txt, model.safetensors)",
        tuple(RemoteFile(name, f"https://huggingface.co/bert-large-cased/resolve/main/{name}")
              for name in ("config.json", "vocab.txt", "model.safetensors")),
        "."),
}
DEFAULT_SOURCE = "huggingface"


def source_files(source, url=None):
    """The files of ``source`` (a name in SOURCES) as RemoteFile, with URLs taken from the mirror ``url``.

    ``url`` is a base URL (``https://mirror/path/``: each file is fetched as ``<base>/<file name>``), or,
    for a source of one file, that file's full URL when it ends with the file's name.
    """
    try:
        src = SOURCES[source]
    except KeyError:
        raise DownloadError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}") from None
    if not url:
        return list(src.files)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DownloadError(f"mirror URL {url!r} must be an http:// or https:// URL")
    if len(src.files) == 1 and parsed.path.rstrip("/").endswith("/" + src.files[0].name):
        return [RemoteFile(src.files[0].name, url)]
    base = url if url.endswith("/") else url + "/"
    return [RemoteFile(f.name, urllib.parse.urljoin(base, urllib.parse.quote(f.name))) for f in src.files]


def default_cache_dir(dest_dir):
    """Where downloads wait until installed: ``<weights dir>.download`` (same disk, so no second copy elsewhere)."""
    return os.path.abspath(os.path.expanduser(dest_dir)).rstrip(os.sep) + ".download"


# -- structure checks before the (slower) full read ------------------------------------------------------------

def check_structure(path):
    """Cheap checks that a downloaded file is what its name says; raises DownloadError; returns the check's name.

    ``.tar.gz``/``.tgz``: gzip magic; ``.pdparams``: a pickle (protocol 2+) header; ``.safetensors``: the JSON
    header, and that the tensors' data ends exactly where the file ends (a truncated file fails here);
    ``.json``: a JSON object; ``vocab.txt``: UTF-8 text. The full checks (every tensor, names, shapes,
    values, vocabulary) are read_checkpoint's.
    """
    name = os.path.basename(path)
    size = file_size(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if name.endswith((".tar.gz", ".tgz")):
            if not head.startswith(b"\x1f\x8b"):
                raise DownloadError(f"{path} is not a gzip archive (it starts with {head[:8]!r}); a wrong URL "
                                    "or an error page?")
            f.seek(0)
            _check_gzip(f, path)
            return "gzip_crc_and_length"
        if name.endswith(".pdparams"):
            if not (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
                raise DownloadError(f"{path} is not a pickled state dict (it starts with {head[:8]!r}); a wrong "
                                    "URL or an error page?")
            return "pickle_header"
        if name.endswith(".safetensors"):
            _check_safetensors(f, path, size, head)
            return "safetensors_header_and_size"
        if name.endswith(".json"):
            f.seek(0)
            try:
                value = json.loads(f.read(1 << 24).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise DownloadError(f"{path} is not valid JSON ({e}); a wrong URL or an error page?") from None
            if not isinstance(value, dict):
                raise DownloadError(f"{path} must hold a JSON object")
            return "json"
        if name.endswith(".txt"):
            f.seek(0)
            try:
                text = f.read().decode("utf-8")
            except UnicodeDecodeError as e:
                raise DownloadError(f"{path} is not UTF-8 text ({e})") from None
            if text.lstrip().lower().startswith(("<!doctype", "<html")):
                raise DownloadError(f"{path} is an HTML page, not a vocabulary; a wrong URL?")
            return "utf8_text"
    return "size"


def _check_gzip(f, path):
    """Decompresses the whole (possibly multi-member) gzip stream, so its CRC-32 and length trailers are checked:
    a tar reader in stream mode can stop at a damaged header as if the archive ended there."""
    import zlib

    decompressor = zlib.decompressobj(wbits=31)
    try:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            while block:
                decompressor.decompress(block, CHUNK)
                while decompressor.unconsumed_tail:
                    decompressor.decompress(decompressor.unconsumed_tail, CHUNK)
                if decompressor.eof:  # a member ends; what follows is the next member (or padding)
                    block = decompressor.unused_data
                    if block.strip(b"\0"):
                        decompressor = zlib.decompressobj(wbits=31)
                    else:
                        block = b""
                else:
                    block = b""
    except zlib.error as e:
        raise DownloadError(f"{path} is a corrupt gzip archive ({e})") from None
    if not decompressor.eof:
        raise DownloadError(f"{path} is a truncated gzip archive (the compressed stream ends early)")


def _check_safetensors(f, path, size, head):
    if len(head) < 8:
        raise DownloadError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
    (header_size,) = struct.unpack("<Q", head[:8])
    if header_size > min(size - 8, 100 << 20):
        raise DownloadError(f"{path} is truncated or not a safetensors file: its header claims {header_size} bytes "
                            f"in a file of {size}")
    f.seek(8)
    try:
        header = json.loads(f.read(header_size).decode("utf-8"))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError) as e:
        raise DownloadError(f"{path} has an unreadable safetensors header ({type(e).__name__}: {e})") from None
    data = size - 8 - header_size
    if max(ends, default=0) != data:
        problem = "truncated" if max(ends, default=0) > data else "longer than its tensors"
        raise DownloadError(f"{path} is {problem}: its tensors need {max(ends, default=0)} data bytes, the file "
                            f"has {data}")


# -- a whole source --------------------------------------------------------------------------------------------

def download_and_install(source=DEFAULT_SOURCE, url=None, dest_dir=None, cache_dir=None, config=None,
                         allow_pickle=False, timeout=30.0, retries=3, backoff=1.0, keep_download=False,
                         progress=None, log=None):
    """Downloads ``source`` (from the mirror ``url`` if given), checks it and installs it as the weights dir
    ``dest_dir`` (default: weights.default_weights_dir()); returns the installed dir.

    ``config`` (a BertConfig) is for checkpoints without one of their own (PaddleNLP's); ``allow_pickle`` as in
    weights.read_checkpoint. ``log(message)`` receives progress lines (default: stderr).
    Raises DownloadError (network, structure) or weights.WeightsError (content); either way the previous
    weights dir is untouched.
    """
    from . import weights

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    files = source_files(source, url)
    src = SOURCES[source]
    dest_dir = os.path.abspath(os.path.expanduser(dest_dir or weights.default_weights_dir()))
    if os.path.lexists(dest_dir) and not (weights.is_weights_dir(dest_dir)
                                          or (os.path.isdir(dest_dir) and not os.listdir(dest_dir))):
        raise DownloadError(f"refusing to install into {dest_dir}: it exists and is neither a weights dir nor "
                            "an empty folder")
    folder = os.path.join(os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir(dest_dir))), source)
    os.makedirs(folder, exist_ok=True)
    fetched, checks = {}, []
    for remote in files:
        path = os.path.join(folder, remote.name)
        stamp = read_json_object(path + ".json")
        if os.path.isfile(path) and stamp.get("url") == remote.url and stamp.get("size") == file_size(path):
            log(f"using {remote.name} downloaded before ({stamp['size']} bytes, {path})")
            fetched[remote.name] = stamp
            continue
        remove_file(path)
        log(f"downloading {remote.url}")
        info = fetch(remote.url, path, timeout=timeout, retries=retries, progress=progress, backoff=backoff,
                     label=remote.name)
        if info["resumed_from"]:
            log(f"resumed {remote.name} at byte {info['resumed_from']}")
        write_json_atomically(path + ".json", info)
        fetched[remote.name] = info
    try:
        for remote in files:
            checks.append(f"{remote.name}: {check_structure(os.path.join(folder, remote.name))}")
        log(f"reading and checking {src.description}")
        checkpoint = weights.read_checkpoint(os.path.normpath(os.path.join(folder, src.checkpoint)), config,
                                             allow_pickle)
        vocab = checkpoint.vocab_file or weights.PACKAGE_VOCAB_FILE
        weights.check_vocab(vocab, checkpoint.config)
    except (DownloadError, weights.WeightsError) as e:
        for remote in files:
            for suffix in ("", ".json"):
                remove_file(os.path.join(folder, remote.name + suffix))
        previous = (f"the weights in {dest_dir} are as they were" if os.path.lexists(dest_dir)
                    else f"{dest_dir} was not created")
        raise type(e)(f"rejected the download from {source}: {e}\nNothing was installed ({previous}); the "
                      f"downloaded files were deleted.") from None
    package_vocab = weights.read_vocab(weights.PACKAGE_VOCAB_FILE)
    source_info = {
        "format": checkpoint.source_format,
        "source": source,
        "downloaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": {name: {"url": info["url"], "size": info["size"],
                         "sha256": weights.file_sha256(os.path.join(folder, name))} for name, info in fetched.items()},
        "download_checks": ["http_status", "content_length"] + checks,
        "vocab_from": "checkpoint" if checkpoint.vocab_file else "package",
        "vocab_matches_package": weights.read_vocab(vocab) == package_vocab,
    }
    log(f"installing into {dest_dir}")
    installed = weights.install(checkpoint.arrays, checkpoint.config, vocab, dest_dir, source_info,
                                casing=checkpoint.casing)
    if not keep_download:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(folder))  # the cache root, when no other source is cached there
        except OSError:
            pass
    return installed
