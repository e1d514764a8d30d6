"""The 1.x per-parameter file (a serialized LoDTensor, SPEC section 4) and folders of them, in pure numpy.

File layout, little-endian: ``uint32 version (0)``, ``uint64 lod_level``, per level ``uint64 nbytes`` and
that many bytes of offsets, ``uint32 tensor version (0)``, ``int32 n``, ``n`` bytes of a ``TensorDesc``
protobuf (field 1 varint ``data_type``, field 2 repeated int64 ``dims``), then the raw data.
"""

import logging
import math
import os
import struct

import numpy as np

from .checks import WeightsError, to_float32
from .names import HUB_PREFIX, legacy_parameter_shapes, unprefixed

__all__ = ["read_dense_tensor", "write_dense_tensor", "read_params_dir", "write_params_dir",
           "read_tensor_from", "keep_parameters", "add_parameter"]

log = logging.getLogger(__name__)

# TensorDesc data_type enum values (SPEC section 4) <-> numpy dtypes, little-endian.
_DTYPES = {0: np.dtype("|b1"), 1: np.dtype("<i2"), 2: np.dtype("<i4"), 3: np.dtype("<i8"),
           4: np.dtype("<f2"), 5: np.dtype("<f4"), 6: np.dtype("<f8")}
_CODES = {dtype.str[1:]: code for code, dtype in _DTYPES.items()}

_MAX_LOD_LEVEL = 64  # more than any real tensor; a larger value means the header is garbage
_MAX_DESC_BYTES = 1 << 12


def read_dense_tensor(path):
    """The array stored in a 1.x per-parameter file, in its stored dtype and shape (LoD is skipped)."""
    try:
        with open(path, "rb") as f:
            return read_tensor_from(f, path, os.fstat(f.fileno()).st_size)
    except OSError as e:
        raise WeightsError(f"cannot read parameter file {path}: {e}") from None


def read_tensor_from(f, label, size):
    """Reads the one serialized tensor that fills the binary file object ``f`` of ``size`` bytes.

    ``label`` names the file in errors.
    """
    version = _unpack(f, "<I", label, "version")
    if version != 0:
        raise WeightsError(f"{label}: unsupported LoDTensor version {version} (expected 0); "
                           "not a 1.x parameter file?")
    lod_level = _unpack(f, "<Q", label, "lod_level")
    if lod_level > _MAX_LOD_LEVEL:
        raise WeightsError(f"{label}: garbage header (lod_level {lod_level}); not a 1.x parameter file?")
    for level in range(lod_level):
        nbytes = _unpack(f, "<Q", label, f"size of LoD level {level}")
        if len(f.read(nbytes)) != nbytes:
            raise WeightsError(f"{label}: truncated in LoD level {level}")
    tensor_version = _unpack(f, "<I", label, "tensor version")
    if tensor_version != 0:
        raise WeightsError(f"{label}: unsupported tensor version {tensor_version} (expected 0); "
                           "garbage header or not a 1.x parameter file?")
    desc_size = _unpack(f, "<i", label, "TensorDesc size")
    if not 0 < desc_size <= _MAX_DESC_BYTES:
        raise WeightsError(f"{label}: garbage header (TensorDesc size {desc_size})")
    desc = f.read(desc_size)
    if len(desc) != desc_size:
        raise WeightsError(f"{label}: truncated in the TensorDesc ({len(desc)} of {desc_size} bytes)")
    code, dims = _parse_tensor_desc(desc, label)
    if code not in _DTYPES:
        raise WeightsError(f"{label}: unknown data_type {code} (known: "
                           + ", ".join(f"{c} {d.name}" for c, d in _DTYPES.items()) + ")")
    dtype = _DTYPES[code]
    nbytes = math.prod(dims) * dtype.itemsize
    left = size - f.tell()
    if left != nbytes:
        problem = "truncated" if left < nbytes else "unexpected bytes after the data"
        raise WeightsError(f"{label}: {problem}: dims {list(dims)} of {dtype.name} need {nbytes} data bytes, "
                           f"the file has {left}")
    data = bytearray(nbytes)
    got = _read_into(f, data)
    if got != nbytes:
        raise WeightsError(f"{label}: truncated: dims {list(dims)} of {dtype.name} need {nbytes} data bytes, "
                           f"could read {got}")
    return np.frombuffer(data, dtype).reshape(dims)


def write_dense_tensor(path, array):
    """Writes ``array`` as a 1.x per-parameter file (no LoD); float32 files are byte-identical to Paddle's."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.str[1:])
    if code is None:
        raise WeightsError(f"cannot write {path}: dtype {array.dtype} has no 1.x data_type (supported: "
                           + ", ".join(d.name for d in _DTYPES.values()) + ")")
    data = np.asarray(array, dtype=_DTYPES[code], order="C")
    desc = bytes([0x08]) + _varint(code) + b"".join(bytes([0x10]) + _varint(d) for d in data.shape)
    with open(path, "wb") as f:
        f.write(struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc)
        f.write(data.reshape(-1).view(np.uint8))


def read_params_dir(params_dir, config, progress=None):
    """``{1.x name: float32 array}`` for every parameter of ``config`` that has a file in ``params_dir``.

    Files are named by the 1.x name, bare (the release) or after HUB_PREFIX (an installed 1.x module).

    Missing parameters are left out (check_arrays reports them); files of other names are skipped with a
    log message. ``progress(stage, done, total)``, if given, is called after each file with stage "read".
    """
    try:
        present = os.listdir(params_dir)
    except OSError as e:
        raise WeightsError(f"cannot list parameter folder {params_dir}: {e}") from None
    files = {}
    for file_name in sorted(present):
        add_parameter(files, unprefixed(file_name), file_name, params_dir)
    names = keep_parameters(files, config, params_dir)
    arrays = {}
    for done, name in enumerate(names, 1):
        path = os.path.join(params_dir, files[name])
        arrays[name] = to_float32(read_dense_tensor(path), path)
        if progress:
            progress("read", done, len(names))
    return arrays


def write_params_dir(params_dir, arrays, progress=None):
    """Writes each array to ``params_dir/<name>`` (creating the folder); ``progress`` as in read_params_dir."""
    os.makedirs(params_dir, exist_ok=True)
    for done, (name, array) in enumerate(arrays.items(), 1):
        if name in ("", ".", "..") or os.path.basename(name) != name or "\0" in name:
            raise WeightsError(f"cannot write parameter {name!r}: not a plain file name")
        write_dense_tensor(os.path.join(params_dir, name), array)
        if progress:
            progress("write", done, len(arrays))


def add_parameter(found, name, value, source):
    """Sets ``found[name] = value``, refusing a second file of the same parameter (prefixed and bare)."""
    if name in found:
        raise WeightsError(f"{source}: parameter {name} is there twice (with and without the prefix {HUB_PREFIX}); "
                           "remove one of the two files")
    found[name] = value


def keep_parameters(names, config, source):
    """The parameter names of ``config`` among ``names``, in network order; logs the names it skips."""
    expected = legacy_parameter_shapes(config)
    names = set(names)
    skipped = sorted(names.difference(expected))
    if skipped:
        log.warning("%s: skipping %d file(s) that are not parameters of this network: %s%s", source,
                    len(skipped), ", ".join(skipped[:10]), " ..." if len(skipped) > 10 else "")
    return [name for name in expected if name in names]


def _unpack(f, fmt, label, what):
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise WeightsError(f"{label}: truncated header (file ends in the {what})")
    return struct.unpack(fmt, raw)[0]


def _read_into(f, buffer):
    view, got = memoryview(buffer), 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(buf, pos, label):
    value = shift = 0
    while pos < len(buf) and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise WeightsError(f"{label}: garbage header (bad varint in the TensorDesc)")


def _parse_tensor_desc(buf, label):
    """``(data_type, dims)`` of a TensorDesc; dims may be packed or not."""
    code, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos, label)
        field, wire = key >> 3, key & 7
        if (field, wire) == (1, 0):
            code, pos = _read_varint(buf, pos, label)
        elif (field, wire) == (2, 0):
            dim, pos = _read_varint(buf, pos, label)
            dims.append(dim)
        elif (field, wire) == (2, 2):
            size, pos = _read_varint(buf, pos, label)
            end = pos + size
            if end > len(buf):
                raise WeightsError(f"{label}: garbage header (packed dims run past the TensorDesc)")
            while pos < end:
                dim, pos = _read_varint(buf, pos, label)
                dims.append(dim)
            if pos != end:
                raise WeightsError(f"{label}: garbage header (packed dims overrun their length)")
        else:
            raise WeightsError(f"{label}: garbage header (unexpected TensorDesc field {field}, wire type {wire})")
    if code is None:
        raise WeightsError(f"{label}: garbage header (TensorDesc has no data_type)")
    if any(d >= 1 << 63 for d in dims):
        raise WeightsError(f"{label}: garbage header (negative or out-of-range dims in the TensorDesc)")
    return code, tuple(dims)
