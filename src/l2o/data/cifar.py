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
dataset folder holding only some of its files is an error that names the missing ones.

Every file is verified as it is read (``load_cifar``, which the conv family's ``locate_data``
runs before anything is written): the pickle's structure, the binary records' size, the image
and label counts, every label's range (CIFAR-100: coarse and fine); and a python batch with an
official name and the official size (``OFFICIAL_MD5``) must have the official MD5, which also
catches flipped pixel values. Other files (the binary format, whose digests are not published,
and a user's own data) get the structural checks only. Every error names the file and what is
wrong with it. Datasets are cached per process, as in ``l2o.data.mnist``.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2o.data.idx import DatasetError, check_official, read_file
from l2o.data.mnist import SYSTEM_ROOT, ImageDataset, cached, download_root, file_key
from l2o.errors import InvalidInput

IMAGE_SHAPE = (3, 32, 32)  # channels-first, as stored
IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class CIFARInfo:
    title: str
    label_index: int  # which of the labels below is read
    python_folder: str
    python_train: tuple[str, ...]
    python_test: str
    python_label_keys: tuple[bytes, ...]  # the label lists of a python batch
    label_classes: tuple[int, ...]  # how many classes each has (binary: each label byte)
    binary_folder: str
    binary_train: tuple[str, ...]
    binary_test: str
    nests: tuple[str, ...]  # other folders under a root that may hold the dataset's folder

    @property
    def num_classes(self) -> int:
        return self.label_classes[self.label_index]

    @property
    def label_bytes(self) -> int:
        """Bytes before each image in a binary record."""
        return len(self.label_classes)


_C10 = dict(
    python_folder="cifar-10-batches-py",
    python_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    python_test="test_batch",
    python_label_keys=(b"labels",),
    label_classes=(10,),
    binary_folder="cifar-10-batches-bin",
    binary_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    binary_test="test_batch.bin",
    nests=("cifar10", "cifar-10", "CIFAR10"),
)
_C100 = dict(
    python_folder="cifar-100-python",
    python_train=("train",),
    python_test="test",
    python_label_keys=(b"coarse_labels", b"fine_labels"),  # a binary record: coarse, fine
    label_classes=(20, 100),
    binary_folder="cifar-100-binary",
    binary_train=("train.bin",),
    binary_test="test.bin",
    nests=("cifar100", "cifar-100", "CIFAR100"),
)
CIFAR_DATASETS: dict[str, CIFARInfo] = {
    "cifar10": CIFARInfo("CIFAR-10", 0, **_C10),
    "cifar100": CIFARInfo("CIFAR-100", 1, **_C100),
    "cifar100-coarse": CIFARInfo("CIFAR-100, 20 coarse labels", 0, **_C100),
}

# The official python batches: {(file name, size in bytes): MD5}. MD5: torchvision/datasets/
# cifar.py (CIFAR10 and CIFAR100 ``train_list``, ``test_list``); sizes: listings of the files in
# cifar-10-python.tar.gz and cifar-100-python.tar.gz. The binary batches' digests are not
# published (torchvision reads the python version only).
OFFICIAL_MD5: dict[tuple[str, int], str] = {
    ("data_batch_1", 31035704): "c99cafc152244af753f735de768cd75f",
    ("data_batch_2", 31035320): "d4bba439e000b95fd0a9bffe97cbabec",
    ("data_batch_3", 31035999): "54ebc095f3ab1f0389bbae665268c751",
    ("data_batch_4", 31035696): "634d18415352ddfa80567beed471001a",
    ("data_batch_5", 31035623): "482c414d41f54cd18b22e5b47cb7c3cb",
    ("test_batch", 31035526): "40351d587109b95175f43aff81a1287e",
    ("train", 155249918): "16019d7e3df5f24257cddd939b257f8d",
    ("test", 31049707): "f0ef6b0ae62326f3e7ffdfab6717acfc",
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


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its BUILD can be checked
    """Unpickles plain data and numpy arrays only; any other global is refused.

    ``find_class`` is the only way a pickle reaches code (REDUCE, BUILD, NEWOBJ, INST and
    OBJ all call what it returns), so allowing only numpy's array reconstruction means no
    file can run anything else. Python 2's strings are read as bytes.

    A numpy dtype's pickled state can set any flags (a flipped bit that says "holds object
    references" would make numpy take pixel bytes for pointers), so a dtype is built only from
    the state numpy itself writes for its type. The pure-Python unpickler allows that check on
    BUILD; it also reads what a corrupt length claims without allocating it first.
    """

    dispatch = pickle._Unpickler.dispatch.copy()

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

    def load_build(self) -> None:
        instance, state = self.stack[-2], self.stack[-1]
        if isinstance(instance, np.dtype):
            plain = instance.__reduce__()[2]  # version, byte order, then what must not differ
            if not (isinstance(state, tuple) and state[2:] == plain[2:]):
                raise DatasetError(
                    f"{self.name} is not a plain CIFAR batch: a numpy dtype ({instance}) with "
                    f"fields, sizes or flags of its own is refused"
                )
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


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


def read_python_batch(path: str | Path, info: CIFARInfo) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch of dataset ``info``: images (N, 3072) uint8 and its labels (N,) int64,
    checked (every label list present, the one read required)."""
    path = Path(path)
    raw = read_file(path)
    check_official(path, raw, OFFICIAL_MD5)
    batch = safe_load(raw, str(path))
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} holds a {type(batch).__name__}, expected a dict of arrays")
    batch = {_key(k): v for k, v in batch.items()}
    label_key = info.python_label_keys[info.label_index].decode()
    for needed in ("data", label_key):
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
    labels = {}
    for key, classes in zip(info.python_label_keys, info.label_classes):
        key, where = key.decode(), f"{path} ({key.decode()!r})"
        if key in batch:
            values = _integer_list(batch[key], where)
            labels[key] = _check_labels(values, len(images), classes, where)
    return images, labels[label_key]


def _integer_list(values: Any, where: str) -> np.ndarray:
    if not (
        isinstance(values, (list, np.ndarray))
        and all(isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in values)
    ):
        raise DatasetError(f"{where}: not a list of integer labels")
    try:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    except OverflowError as e:
        raise DatasetError(f"{where}: a label does not fit in 64 bits") from e


# -- the binary format -------------------------------------------------------------------------
def read_binary_batch(path: str | Path, info: CIFARInfo) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch of dataset ``info``, records (label bytes, 3072 image bytes): images and
    the labels read, checked (every label byte in its range)."""
    path = Path(path)
    raw = read_file(path)
    check_official(path, raw, OFFICIAL_MD5)
    record = info.label_bytes + IMAGE_BYTES
    if not raw or len(raw) % record:
        raise DatasetError(
            f"{path} is truncated or not a CIFAR binary batch: {len(raw)} bytes is not a "
            f"(non-zero) multiple of the record size {record} "
            f"({info.label_bytes} label byte(s) + {IMAGE_BYTES} image bytes)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    images = records[:, info.label_bytes :].copy()
    labels = [
        _check_labels(records[:, i].astype(np.int64), len(images), classes, str(path))
        for i, classes in enumerate(info.label_classes)
    ]
    return images, labels[info.label_index]


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
        raise InvalidInput(f"Invalid dataset: {name!r} (valid: {', '.join(CIFAR_DATASETS)})")
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


def load_cifar(
    name: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ImageDataset:
    """Find, read, verify and cache CIFAR dataset ``name`` on ``device``: images flattened to
    (count, 3072) uint8 in channels-first order (view them as (count, 3, 32, 32))."""
    info = check_cifar_name(name)
    files = find_cifar(name, data_dir)
    paths = (*files.train, files.test)
    return cached((name, *file_key(paths)), device, lambda: _read_cifar(name, info, files))


def _read_cifar(name: str, info: CIFARInfo, files: CIFARFiles) -> ImageDataset:
    read = read_python_batch if files.format == "python" else read_binary_batch
    train = [read(path, info) for path in files.train]
    test_x, test_y = read(files.test, info)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return ImageDataset(
        name,
        files.test.parent,
        *(torch.from_numpy(np.ascontiguousarray(a)) for a in (train_x, train_y, test_x, test_y)),
        num_classes=info.num_classes,
    )
