"""A 1.x release archive (``assets.tar.gz``), read member by member from the tar stream.

Nothing is extracted by path: parameter files are parsed straight from the stream and only ``vocab.txt`` is
written, under a fixed name in a private temporary folder. Members that are links, devices, absolute paths or
contain ``..`` make the whole archive refused.
"""

import atexit
import json
import os
import pathlib
import shutil
import tarfile
import tempfile
import zlib

from ..config import BertConfig
from .casing import casing_in_json
from .checks import WeightsError
from .legacy import add_parameter, read_tensor_from
from .names import unprefixed

__all__ = ["read_archive"]

_SMALL_FILES = ("bert_config.json", "vocab.txt")
_MAX_SMALL_FILE = 64 << 20


def read_archive(path, progress=None):
    """``(tensors, config or None, vocab file or None, Casing or None)`` of a 1.x assets archive (any tar
    compression).

    ``tensors`` maps each file name in the archive's one ``params/`` folder, less any HUB_PREFIX, to its array
    as stored; the config and vocab are the ``bert_config.json`` and ``vocab.txt`` beside that ``params/``, the
    casing that config's ``do_lower_case``. The vocab is copied to a temporary folder removed when the
    interpreter exits. ``progress("read", done, None)`` is called after each parameter. A corrupt or truncated
    archive raises WeightsError.
    """
    tensors, small, roots = {}, {}, set()
    try:
        with tarfile.open(path, "r|*", bufsize=1 << 20) as tar:
            for member in tar:
                parts = _checked_parts(member, path)
                if member.isdir():
                    continue
                if len(parts) >= 2 and parts[-2] == "params":
                    roots.add(parts[:-2])
                    add_parameter(tensors, unprefixed(parts[-1]),
                                  read_tensor_from(tar.extractfile(member), f"{path}:{member.name}", member.size),
                                  path)
                    if progress:
                        progress("read", len(tensors), None)
                elif parts[-1] in _SMALL_FILES:
                    if member.size > _MAX_SMALL_FILE:
                        raise WeightsError(f"{path}: member {member.name} is implausibly large ({member.size} bytes)")
                    small[parts] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise WeightsError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {e})") from None
    if len(roots) != 1:
        where = ", ".join("/".join(root + ("params",)) for root in sorted(roots))
        raise WeightsError(f"{path}: expected one params/ folder of parameter files, found "
                           + (where if roots else "none") + "; is this a 1.x assets.tar.gz?")
    root = roots.pop()
    config_bytes, vocab_bytes = (small.get(root + (name,)) for name in _SMALL_FILES)
    config, casing = _parse_config(config_bytes, path, "/".join(root + ("bert_config.json",)))
    return tensors, config, _save_vocab(vocab_bytes), casing


def _checked_parts(member, path):
    """The member's path components, refusing anything that is not a plain file or folder under the root."""
    name = member.name
    parts = pathlib.PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or pathlib.PureWindowsPath(name).drive:
        problem = "absolute path"
    elif ".." in parts or ".." in pathlib.PureWindowsPath(name).parts:
        problem = "path with '..'"
    elif not (member.isfile() or member.isdir()):
        problem = "link or special file" if (member.issym() or member.islnk()) else "special file"
    else:
        return parts
    raise WeightsError(f"{path}: refusing archive member {name!r} ({problem}); the archive is not a plain "
                       "1.x assets archive")


def _parse_config(raw, path, member):
    """``(BertConfig, Casing or None)`` of a ``bert_config.json``'s bytes, ``(None, None)`` without one."""
    if raw is None:
        return None, None
    try:
        values = json.loads(raw.decode("utf-8"))
        return BertConfig.from_dict(values), casing_in_json(values, f"{path}:{member}")
    except (ValueError, TypeError, AttributeError) as e:
        raise WeightsError(f"{path}: bad bert_config.json: {e}") from None


def _save_vocab(raw):
    if raw is None:
        return None
    folder = tempfile.mkdtemp(prefix="bert_cased_L_24_H_1024_A_16-vocab-")
    atexit.register(shutil.rmtree, folder, True)
    vocab = os.path.join(folder, "vocab.txt")
    with open(vocab, "wb") as f:
        f.write(raw)
    return vocab
