"""The IDX file format of MNIST, Fashion-MNIST, KMNIST and friends (http://yann.lecun.com/exdb/mnist/).

A file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, then NDIM big-endian uint32 sizes,
then the values in row-major order, big-endian. Files may be gzip-compressed (``.gz``).
Every check names the file, so a truncated download or a wrong file says what is wrong.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from l2o.errors import L2OError

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


class DatasetError(L2OError):
    """A dataset file is missing, truncated or not what it should be."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path} is a truncated or corrupt gzip file ({e})") from e


def parse_idx(data: bytes, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Decode the bytes of an IDX file into an array (native byte order).

    ``ndim``: the number of dimensions expected (3 for images, 1 for labels), or None.
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
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(data) - header
    if have != expected:
        what = "truncated" if have < expected else "longer than its header says"
        raise DatasetError(
            f"{name} is {what}: shape {shape} needs {expected} bytes of data, found {have}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected from its first bytes)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path), ndim)


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``compress`` or the name ends in .gz).

    The inverse of ``read_idx``: handy for tests and for converting other data to IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(
            f"Invalid dtype for IDX: {array.dtype} (valid: {', '.join(map(str, codes))})"
        )
    code = codes[native]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(IDX_TYPES[code], copy=False).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
