"""CIFAR-10 and CIFAR-100 (https://www.cs.toronto.edu/~kriz/cifar.html), offline, in both of
their official formats:

    python   cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch     (pickled dicts)
             cifar-100-python/train, test
    binary   cifar-10-batches-bin/data_batch_1.bin .. data_batch_5.bin, test_batch.bin
             cifar-100-binary/train.bin, test.bin

Each image is 3072 bytes: the 1024 red, then green, then blue values of a 32x32 image, row by
row, i.e. channels-first (3, 32, 32). A binary record is its label byte(s) then the image
(CIFAR-100: coarse label, fine label). The python batches are Python 2 pickles of dicts
{b"data": uint8 array (N, 3072), b"labels": [int] (CIFAR-100: b"fine_labels",
b"coarse_labels"), ...}. They are read with ``SafeUnpickler``, which can build only dicts,
lists, strings, numbers and numpy uint8 arrays: a pickle that asks for any other class or
function (``os.system``, ...) is refused before anything runs.

Where the files are looked for, for each root (``data_dir`` when given, else ``$L2O_DATA`` or
``~/.cache/l2o/data``, then ``/usr/share/datasets``, as for MNIST): ``ROOT/<folder>`` with the
folder names above (torchvision's layout: ``CIFAR10(root)`` puts ``cifar-10-batches-py``
directly under root), ``ROOT/cifar10/<folder>`` (or ``cifar-10``, ``CIFAR10``; ``cifar100``...
for CIFAR-100), and ROOT itself. The python format is preferred when both are present; a
dataset folder holding only some of its files is an error that names the missing ones. Every
error names the file and what is wrong with it.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2o.data.idx import DatasetError
from l2o.data.mnist import SYSTEM_ROOT, ImageDataset, download_root

IMAGE_SHAPE = (3, 32, 32)  # channels-first, as stored
IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class CIFARInfo:
    title: str
    num_classes: int
    python_folder: str
    python_train: tuple[str, ...]
    python_test: str
    python_label_key: bytes
    binary_folder: str
    binary_train: tuple[str, ...]
    binary_test: str
    label_bytes: int  # bytes before each binary image
    label_index: int  # which of them is the label
    nests: tuple[str, ...]  # other folders under a root that may hold the dataset's folder


_C10 = dict(
    python_folder="cifar-10-batches-py",
    python_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    python_test="test_batch",
    python_label_key=b"labels",
    binary_folder="cifar-10-batches-bin",
    binary_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    binary_test="test_batch.bin",
    label_bytes=1,
    label_index=0,
    nests=("cifar10", "cifar-10", "CIFAR10"),
)
_C100 = dict(
    python_folder="cifar-100-python",
    python_train=("train",),
    python_test="test",
    binary_folder="cifar-100-binary",
    binary_train=("train.bin",),
    binary_test="test.bin",
    label_bytes=2,
    nests=("cifar100", "cifar-100", "CIFAR100"),
)
CIFAR_DATASETS: dict[str, CIFARInfo] = {
    "cifar10": CIFARInfo("CIFAR-10", 10, **_C10),
    "cifar100": CIFARInfo(
        "CIFAR-100", 100, python_label_key=b"fine_labels", label_index=1, **_C100
    ),
    "cifar100-coarse": CIFARInfo(
        "CIFAR-100, 20 coarse labels", 20, python_label_key=b"coarse_labels", label_index=0, **_C100
    ),
}


# -- the python (pickle) format --------------------------------------------------------------
def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle needs: numpy's array and dtype reconstruction.

    The functions are taken from numpy's own ``__reduce__`` (their module moved from
    ``numpy.core`` to ``numpy._core`` in numpy 2), never imported by the name in the file.
    """
    reconstruct = np.zeros(1).__reduce__()[0]  # ndarray pickles: protocols 0-4
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # ndarray pickles: protocol 5
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_ALLOWED = _numpy_reconstructors()


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global is refused.

    ``find_class`` is the only way a pickle reaches code (REDUCE, BUILD, NEWOBJ, INST and
    OBJ all call what it returns), so allowing only numpy's array reconstruction means no
    file can run anything else. Python 2's strings are read as bytes.
    """

    def __init__(self, file: io.BufferedIOBase, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise DatasetError(
            f"{self.name} is not a plain CIFAR batch: its pickle asks for {module}.{name}, "
            f"which is refused (only numpy arrays, dicts, lists, strings and numbers are read)"
        )


def safe_load(data: bytes, name: str = "<bytes>") -> Any:
    """Unpickle ``data`` with ``SafeUnpickler``; a corrupt pickle raises DatasetError."""
    try:
        return SafeUnpickler(io.BytesIO(data), name).load()
    except DatasetError:
        raise
    except Exception as e:  # a broken pickle raises many types (UnpicklingError, EOFError, ...)
        raise DatasetError(
            f"{name} is not a readable CIFAR pickle ({type(e).__name__}: {e})"
        ) from e


def _key(k: Any) -> str:
    return k.decode("latin1") if isinstance(k, bytes) else str(k)


def read_python_batch(
    path: str | Path, label_key: bytes, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: images (N, 3072) uint8 and labels (N,) int64, checked."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    batch = safe_load(raw, str(path))
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} holds a {type(batch).__name__}, expected a dict of arrays")
    batch = {_key(k): v for k, v in batch.items()}
    key = label_key.decode()
    for needed in ("data", key):
        if needed not in batch:
            raise DatasetError(
                f"{path} has no {needed!r} entry (has {', '.join(sorted(batch))}); "
                f"is it a batch of another CIFAR dataset?"
            )
    images = batch["data"]
    if not (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 2
        and images.shape[1] == IMAGE_BYTES
    ):
        what = (
            f"{images.dtype} array of shape {images.shape}"
            if isinstance(images, np.ndarray)
            else type(images).__name__
        )
        raise DatasetError(f"{path}: 'data' is a {what}, expected uint8 (N, {IMAGE_BYTES})")
    labels = batch[key]
    if not (
        isinstance(labels, (list, np.ndarray))
        and all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in labels)
    ):
        raise DatasetError(f"{path}: {key!r} is not a list of integer labels")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    return images, _check_labels(labels, len(images), num_classes, f"{path} ({key!r})")


# -- the binary format -------------------------------------------------------------------------
def read_binary_batch(
    path: str | Path, label_bytes: int, label_index: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch of records (label bytes, 3072 image bytes): images and labels, checked."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    record = label_bytes + IMAGE_BYTES
    if not raw or len(raw) % record:
        raise DatasetError(
            f"{path} is truncated or not a CIFAR binary batch: {len(raw)} bytes is not a "
            f"(non-zero) multiple of the record size {record} "
            f"({label_bytes} label byte(s) + {IMAGE_BYTES} image bytes)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = records[:, label_index].astype(np.int64)
    images = records[:, label_bytes:].copy()
    return images, _check_labels(labels, len(images), num_classes, str(path))


def _check_labels(labels: np.ndarray, count: int, num_classes: int, where: str) -> np.ndarray:
    if len(labels) != count:
        raise DatasetError(f"{where}: {len(labels)} labels for {count} images")
    if count == 0:
        raise DatasetError(f"{where}: no examples")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DatasetError(f"{where}: label {bad} is outside 0..{num_classes - 1}")
    return labels


# -- finding and loading -----------------------------------------------------------------------
@dataclass(frozen=True)
class CIFARFiles:
    format: str  # "python" or "binary"
    train: tuple[Path, ...]
    test: Path


def check_cifar_name(name: str) -> CIFARInfo:
    if name not in CIFAR_DATASETS:
        raise ValueError(f"Invalid dataset: {name!r} (valid: {', '.join(CIFAR_DATASETS)})")
    return CIFAR_DATASETS[name]


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Every directory where the files of ``name`` are looked for, in order."""
    info = check_cifar_name(name)
    roots = [Path(data_dir).expanduser()] if data_dir else [download_root(), SYSTEM_ROOT]
    dirs = []
    for root in roots:
        for base in (root, *(root / n for n in info.nests)):
            dirs += [base / info.python_folder, base / info.binary_folder, base]
    return list(dict.fromkeys(dirs))


def find_cifar(name: str, data_dir: str | Path | None = None) -> CIFARFiles:
    """The train and test files of ``name``; DatasetError says where it looked if none."""
    info = check_cifar_name(name)
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise DatasetError(f"data directory {data_dir} does not exist; {how_to_get(name)}")
    looked = candidate_dirs(name, data_dir)
    layouts = (
        ("python", info.python_train, info.python_test),
        ("binary", info.binary_train, info.binary_test),
    )
    for directory in looked:
        for fmt, train, test in layouts:
            names = (*train, test)
            present = [n for n in names if (directory / n).is_file()]
            if len(present) == len(names):
                return CIFARFiles(fmt, tuple(directory / n for n in train), directory / test)
            if present and directory.name in (info.python_folder, info.binary_folder):
                missing = [n for n in names if n not in present]
                raise DatasetError(
                    f"{info.title} ({fmt} format) in {directory} is incomplete: missing "
                    f"{', '.join(missing)}"
                )
    where = ", ".join(str(d) for d in looked)
    raise DatasetError(f"no {info.title} files found (looked in {where}); {how_to_get(name)}")


def how_to_get(name: str) -> str:
    info = check_cifar_name(name)
    return (
        f"to get the data, download and unpack {info.python_folder} (python version) or "
        f"{info.binary_folder} (binary version) from https://www.cs.toronto.edu/~kriz/cifar.html "
        f"into a directory and pass --data-dir DIR or set L2O_DATA=DIR (torchvision's "
        f"download puts it in the same place)"
    )


def read_cifar(
    name: str, data_dir: str | Path | None = None
) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(directory, train images, train labels, test images, test labels) as numpy arrays."""
    info = check_cifar_name(name)
    files = find_cifar(name, data_dir)

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        if files.format == "python":
            return read_python_batch(path, info.python_label_key, info.num_classes)
        return read_binary_batch(path, info.label_bytes, info.label_index, info.num_classes)

    train = [read(p) for p in files.train]
    test_x, test_y = read(files.test)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return files.test.parent, train_x, train_y, test_x, test_y


_CACHE: dict[tuple[str, str, str], ImageDataset] = {}


def load_cifar(
    name: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ImageDataset:
    """Find, read, check and cache CIFAR dataset ``name`` on ``device``: images flattened to
    (count, 3072) uint8 in channels-first order (view them as (count, 3, 32, 32))."""
    info = check_cifar_name(name)
    files = find_cifar(name, data_dir)
    key = (name, str(files.test.parent.resolve()), str(torch.device(device)))
    if key not in _CACHE:
        directory, train_x, train_y, test_x, test_y = read_cifar(name, data_dir)

        def tensor(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        _CACHE[key] = ImageDataset(
            name,
            directory,
            tensor(train_x),
            tensor(train_y),
            tensor(test_x),
            tensor(test_y),
            num_classes=info.num_classes,
        )
    return _CACHE[key]
