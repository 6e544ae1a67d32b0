"""The IDX file format of MNIST, Fashion-MNIST, KMNIST and friends (http://yann.lecun.com/exdb/mnist/).

A file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, then NDIM big-endian uint32 sizes,
then the values in row-major order, big-endian. Files may be gzip-compressed (``.gz``).
Every check names the file, so a truncated download or a wrong file says what is wrong.

Also here, for every dataset reader: ``read_file`` and ``check_official``, which refuses a copy
of an official dataset file whose MD5 differs from the official one.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from l2o.errors import InvalidInput, L2OError

# TYPE byte -> numpy dtype (big-endian, as stored).
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"

# {(file name, size in bytes): MD5 of the official file}, as the dataset readers keep them.
OfficialDigests = Mapping[tuple[str, int], str]


class DatasetError(L2OError):
    """A dataset file is missing, truncated or not what it should be."""


def read_file(path: Path) -> bytes:
    """All the bytes of a dataset file; DatasetError names the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e


def check_official(path: Path, data: bytes, official: OfficialDigests) -> None:
    """Refuse a damaged copy of an official file: when ``path``'s name and size (``data`` is its
    content) are those of an official file in ``official``, its MD5 must be that file's.

    Flipped bits in pixel values break no structure, so only this finds them. Files with any
    other name or size (a user's own data) pass: only their structure is checked.
    """
    expected = official.get((path.name, len(data)))
    if expected is None:
        return
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != expected:
        raise DatasetError(
            f"{path} is corrupt: md5 {digest} differs from the official {expected} of "
            f"{path.name} ({len(data)} bytes); download it again"
        )


def decompress(data: bytes, name: str) -> bytes:
    """``data`` itself, or all of it decompressed when it starts like gzip. Decompressing to the
    end checks gzip's CRC-32 and length of the content, which catch flipped or missing bytes."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DatasetError(f"{name} is a truncated or corrupt gzip file ({e})") from e


def parse_idx(data: bytes, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Decode the bytes of an IDX file into an array (native byte order).

    ``ndim``: the number of dimensions expected (3 for images, 1 for labels), or None. The sizes
    in the header are checked against the data before anything is allocated.
    """
    if len(data) < 4:
        raise DatasetError(f"{name} is not an IDX file: {len(data)} bytes, too short for a header")
    zero, type_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in IDX_TYPES:
        raise DatasetError(
            f"{name} is not an IDX file: magic number 0x{data[:4].hex()} "
            f"(expected 0x0000TTNN with type TT one of "
            f"{', '.join(f'{t:02x}' for t in IDX_TYPES)})"
        )
    if ndim is not None and dims != ndim:
        raise DatasetError(
            f"{name} has {dims} dimension(s), expected {ndim} "
            f"({'images: count x rows x columns' if ndim == 3 else 'labels: count'})"
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise DatasetError(f"{name} is truncated: the header needs {header} bytes, has {len(data)}")
    shape = struct.unpack(f">{dims}I", data[4:header])
    dtype = IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # a Python int: no overflow for huge sizes
    have = len(data) - header
    if have != expected:
        what = "truncated" if have < expected else "longer than its header says"
        raise DatasetError(
            f"{name} is {what}: shape {shape} needs {expected} bytes of data, found {have}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(
    path: str | Path, ndim: int | None = None, official: OfficialDigests | None = None
) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected from its first bytes), refusing a
    damaged copy of a file in ``official`` (see ``check_official``)."""
    path = Path(path)
    data = read_file(path)
    check_official(path, data, official or {})
    return parse_idx(decompress(data, str(path)), str(path), ndim)


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``compress`` or the name ends in .gz).

    The inverse of ``read_idx``: handy for tests and for converting other data to IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise InvalidInput(
            f"Invalid dtype for IDX: {array.dtype} (valid: {', '.join(map(str, codes))})"
        )
    code = codes[native]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(IDX_TYPES[code], copy=False).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
