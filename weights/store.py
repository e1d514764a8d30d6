"""Where installed weights live, how they are found, and how they are installed atomically.

A weights dir holds ``bert_config.json``, ``vocab.txt``, ``params/<1.x name>`` (one 1.x per-parameter file
each) and ``manifest.json``: the layout of the 1.x release's ``assets/`` folder, which is itself a valid
weights dir (it lacks the manifest, and some versions the config).
"""

import contextlib
import datetime
import hashlib
import json
import logging
import os
import secrets
import shutil

from .. import HUB_NAME, __version__
from ..config import DEFAULT_CONFIG_FILE, BertConfig
from .casing import UNTOLD, Casing, casing_of_vocab, decide_casing, read_casing_in_json
from .checks import CHECKS, MissingWeightsError, WeightsError, check_arrays, check_vocab, read_vocab
from .legacy import read_params_dir, write_params_dir

__all__ = ["WEIGHTS_ENV", "default_weights_dir", "hub_home", "find_weights", "is_weights_dir", "install",
           "load_weights", "read_manifest", "read_weights_config", "recover_interrupted_install", "told_casing",
           "installed_casing"]

log = logging.getLogger(__name__)

WEIGHTS_ENV = "BERT_CASED_L_24_H_1024_A_16_WEIGHTS"
_PACKAGE = "bert_cased_L_24_H_1024_A_16"
_COMMANDS = (f"`python -m {_PACKAGE} download` downloads and installs them; "
             f"`python -m {_PACKAGE} convert <path>` installs a checkpoint you have (a 1.x assets or module folder, "
             "a tar of it, a Hugging Face folder, or a PaddleNLP .pdparams file)")


def default_weights_dir():
    """``$BERT_CASED_L_24_H_1024_A_16_WEIGHTS`` if set, else ``$HUB_HOME/weights/bert_cased_L_24_H_1024_A_16``
    (``HUB_HOME`` defaults to ``~/.paddlehub``)."""
    if os.environ.get(WEIGHTS_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[WEIGHTS_ENV]))
    return os.path.join(hub_home(), "weights", _PACKAGE)


def hub_home():
    """PaddleHub's home folder: ``$HUB_HOME``, else ``~/.paddlehub``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("HUB_HOME") or os.path.join("~", ".paddlehub")))


def is_weights_dir(path):
    """Whether ``path`` is a folder with a ``params/`` folder."""
    return os.path.isdir(os.path.join(path, "params"))


def find_weights(extra_candidates=()):
    """The weights dir to use: the one ``$BERT_CASED_L_24_H_1024_A_16_WEIGHTS`` names if set (it must be valid),
    else the first valid of ``extra_candidates``, else the default dir. Raises MissingWeightsError otherwise."""
    if os.environ.get(WEIGHTS_ENV):
        path = default_weights_dir()
        recover_interrupted_install(path)
        if not is_weights_dir(path):
            raise MissingWeightsError(f"${WEIGHTS_ENV} is set to {path}, which holds no weights (no params/ "
                                      f"folder). Install them there, or unset it. {_COMMANDS}.")
        return path
    looked = []
    recover_interrupted_install(default_weights_dir())
    for path in (*extra_candidates, default_weights_dir()):
        path = os.path.abspath(os.path.expanduser(path))
        if is_weights_dir(path):
            return path
        looked.append(path)
    raise MissingWeightsError("No pretrained weights found for bert_cased_L-24_H-1024_A-16; looked in:\n  "
                              + "\n  ".join(looked) + f"\n{_COMMANDS}; or set ${WEIGHTS_ENV} to a weights dir.")


def read_weights_config(weights_dir):
    """The dir's ``bert_config.json``, or the package default when the dir has none (some 1.x assets)."""
    path = os.path.join(weights_dir, "bert_config.json")
    try:
        return BertConfig.from_json_file(path if os.path.isfile(path) else DEFAULT_CONFIG_FILE)
    except (OSError, ValueError, TypeError) as e:
        raise WeightsError(f"bad configuration in {weights_dir}: {e}") from None


def load_weights(weights_dir, progress=None):
    """``(BertConfig, {1.x name: float32 array})`` of a weights dir, checked against the dir's configuration."""
    config = read_weights_config(weights_dir)
    arrays = read_params_dir(os.path.join(weights_dir, "params"), config, progress)
    check_arrays(arrays, config, source=weights_dir)
    return config, arrays


def read_manifest(weights_dir):
    """The dir's ``manifest.json`` as a dict, or None when it has none (a 1.x assets folder)."""
    path = os.path.join(weights_dir, "manifest.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read manifest {path}: {e}") from None


def told_casing(weights_dir):
    """The Casing a weights dir states: its manifest's record, else its ``bert_config.json``'s ``do_lower_case``
    (1.x assets); None when neither says."""
    manifest = read_manifest(weights_dir) or {}
    if isinstance(manifest.get("do_lower_case"), bool) and manifest.get("casing_told_by") != UNTOLD:
        return Casing(manifest["do_lower_case"], manifest.get("casing_told_by", "manifest.json"))
    return read_casing_in_json(os.path.join(weights_dir, "bert_config.json"))


def installed_casing(weights_dir, fallback_vocab):
    """The Casing to tokenize a weights dir's checkpoint with: what it states (told_casing), else what its
    ``vocab.txt`` (or ``fallback_vocab`` when it has none) tells, else cased."""
    vocab = os.path.join(weights_dir, "vocab.txt")
    return (told_casing(weights_dir) or casing_of_vocab(read_vocab(vocab if os.path.isfile(vocab) else fallback_vocab))
            or Casing(False, UNTOLD))


def install(arrays, config, vocab_file, dest_dir, source_info, progress=None, casing=None):
    """Validates, then installs weights as the weights dir ``dest_dir``, atomically; returns its absolute path.

    ``arrays`` maps 1.x names to arrays (written as float32); ``source_info`` (JSON-able; e.g. format, path
    or URL) is recorded in the manifest. Everything is checked before anything is written; the new dir is
    written and fsynced beside ``dest_dir`` (manifest last), then swapped in by renames. On any failure or
    interruption the previous ``dest_dir`` (if any) is left as it was and the temporary dir removed.
    An existing ``dest_dir`` must be an empty folder or a weights dir; a symbolic link is followed.
    ``casing``, the Casing the checkpoint states (None: what the vocabulary tells, with a warning if it cannot), is
    recorded as the manifest's ``do_lower_case`` and ``casing_told_by``.

    Installs into one ``dest_dir`` take turns (a lock file ``.<name>.lock`` beside it, on POSIX), and
    each first clears what a killed install left there (see :func:`recover_interrupted_install`).
    """
    dest_dir = os.path.realpath(os.path.expanduser(dest_dir))
    check_arrays(arrays, config)
    check_vocab(vocab_file, config)
    casing = decide_casing(casing, read_vocab(vocab_file), source_info.get("path") or dest_dir)
    if os.path.lexists(dest_dir) and not (is_weights_dir(dest_dir) or _is_empty_dir(dest_dir)):
        raise WeightsError(f"refusing to replace {dest_dir}: it exists and is not a weights dir")
    parent, base = os.path.split(dest_dir)
    os.makedirs(parent, exist_ok=True)
    with install_lock(dest_dir):
        _clear_interrupted(dest_dir)
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = os.path.join(parent, f".{base}.tmp-{tag}")
        os.mkdir(tmp)
        try:
            config.to_json_file(os.path.join(tmp, "bert_config.json"))
            shutil.copyfile(vocab_file, os.path.join(tmp, "vocab.txt"))
            write_params_dir(os.path.join(tmp, "params"), {name: arrays[name].astype("float32", copy=False)
                                                           for name in arrays}, progress)
            _write_json(os.path.join(tmp, "manifest.json"), {
                "package": HUB_NAME,
                "package_version": __version__,
                "installed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "source": source_info,
                "vocab_sha256": file_sha256(vocab_file),
                "parameter_tensors": len(arrays),
                "parameter_count": int(sum(array.size for array in arrays.values())),
                "checks_passed": list(CHECKS),
                "do_lower_case": casing.do_lower_case,
                "casing_told_by": casing.told_by,
            })
            _fsync_tree(tmp)
            _swap_in(tmp, dest_dir, os.path.join(parent, f".{base}.old-{tag}"))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest_dir


def _swap_in(new, dest, backup):
    """Renames ``new`` to ``dest``; a previous ``dest`` goes to ``backup`` first and is removed after."""
    had_old = os.path.lexists(dest)
    if had_old:
        os.rename(dest, backup)
    try:
        os.rename(new, dest)
    except BaseException:
        if had_old:
            os.rename(backup, dest)
        raise
    _fsync_dir(os.path.dirname(dest))
    if had_old:
        shutil.rmtree(backup, ignore_errors=True)
        if os.path.lexists(backup):
            log.warning("could not remove the previous weights, moved to %s", backup)


def recover_interrupted_install(dest_dir):
    """Repairs what an install into ``dest_dir`` that was killed (SIGKILL, power loss) left behind.

    Such an install leaves its temporary dir ``.<name>.tmp-*`` beside ``dest_dir`` (1.3 GB for
    BERT-Large), and if it died between its two renames, ``dest_dir`` is missing while the previous
    weights sit in ``.<name>.old-*``. This renames those back and removes the leftovers, under the
    install lock (so never while an install is running). Cheap when there is nothing to repair.
    Returns whether previous weights were restored.
    """
    dest_dir = os.path.realpath(os.path.expanduser(dest_dir))
    if not _leftovers(dest_dir):
        return False
    try:
        with install_lock(dest_dir):
            return _clear_interrupted(dest_dir)
    except OSError as e:  # A read-only or vanished parent: nothing this process can repair.
        log.warning("could not clear an interrupted install beside %s: %s", dest_dir, e)
        return False


def _leftovers(dest_dir):
    """Paths beside ``dest_dir`` that installs into it create and remove: ``.<name>.tmp-*``, ``.<name>.old-*``."""
    parent, base = os.path.split(dest_dir)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    prefixes = (f".{base}.tmp-", f".{base}.old-")
    return [os.path.join(parent, name) for name in names if name.startswith(prefixes)]


def _clear_interrupted(dest_dir):
    """With the install lock held: every leftover is an interrupted install's (see recover_interrupted_install)."""
    leftovers = _leftovers(dest_dir)
    restored = False
    if not os.path.lexists(dest_dir):
        backups = [path for path in leftovers if ".old-" in os.path.basename(path) and is_weights_dir(path)]
        if backups:
            newest = max(backups, key=os.path.getmtime)
            os.rename(newest, dest_dir)
            _fsync_dir(os.path.dirname(dest_dir))
            leftovers.remove(newest)
            restored = True
            log.warning("an install into %s was interrupted; restored the previous weights from %s", dest_dir,
                        newest)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by an interrupted install", path)
    return restored


@contextlib.contextmanager
def install_lock(dest_dir):
    """Holds an exclusive lock on ``.<name>.lock`` beside ``dest_dir``, waiting for another holder (POSIX
    ``flock``, released by the kernel if the holder dies; no lock where ``fcntl`` is missing).

    For anything installed whole into ``dest_dir`` by several processes at once: weights, compiled kernels."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    parent, base = os.path.split(dest_dir)
    with open(os.path.join(parent, f".{base}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another install into %s to finish", dest_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_empty_dir(path):
    return os.path.isdir(path) and not os.listdir(path)


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def file_sha256(path):
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(root):
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(folder)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms (Windows); nothing to sync there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
