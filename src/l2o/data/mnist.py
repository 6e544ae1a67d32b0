"""MNIST-format image datasets (MNIST, Fashion-MNIST, KMNIST, any set of IDX files), offline.

Where the files are looked for, in order, for each root directory:

    ROOT/                               the four IDX files directly
    ROOT/<name>/  ROOT/<name>/raw/      e.g. ROOT/fashion-mnist/
    ROOT/<TorchvisionName>/raw/         torchvision's layout, e.g. ROOT/FashionMNIST/raw/

The roots are ``data_dir`` when one is given; otherwise ``$L2O_DATA`` (when set), the download
folder ``~/.cache/l2o/data`` and ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist``
package installs there). Files may be gzip-compressed or not. Nothing is downloaded unless asked
for (``download_dataset``, the CLI's ``--download``).

Where a folder holds both ``NAME`` and ``NAME.gz`` (torchvision's download keeps both), the .gz
is read: its official MD5 is known and gzip's CRC-32 checks its content.

Every file is verified as it is read (``load_dataset``, which the task families' ``locate_data``
runs before anything is written): IDX headers, sizes, gzip integrity (decompressed to the end),
image and label counts, label range; and a file with an official name and the official size
(``OFFICIAL_MD5``) must have the official MD5, which also catches flipped pixel values. A
user's own files (other names or sizes) get the structural checks only: a flipped pixel value in
them cannot be told from a real one.

The whole dataset is held as uint8 tensors on the chosen device (47 MB for 60 000 images) and
cached per process, keyed by each file's (path, size, mtime): the files are read and verified
once, sampling a new task costs nothing and a minibatch is one gather.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2o.data.idx import DatasetError, OfficialDigests, read_idx
from l2o.errors import InvalidInput

NUM_CLASSES = 10


@dataclass(frozen=True)
class DatasetInfo:
    title: str
    folders: tuple[str, ...]  # folder names under a root, the torchvision one last
    torchvision: str  # class name in torchvision.datasets


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", ("mnist", "MNIST"), "MNIST"),
    "fashion-mnist": DatasetInfo(
        "Fashion-MNIST", ("fashion-mnist", "fashion_mnist", "FashionMNIST"), "FashionMNIST"
    ),
    "kmnist": DatasetInfo("KMNIST", ("kmnist", "KMNIST"), "KMNIST"),
}

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SYSTEM_ROOT = Path("/usr/share/datasets")

# The official files, by dataset: {(file name, size in bytes): MD5}. Sources:
# - .gz, MD5: torchvision/datasets/mnist.py (the ``resources`` of MNIST, FashionMNIST, KMNIST);
#   sizes: tensorflow/datasets, tensorflow_datasets/url_checksums/{mnist,fashion_mnist,kmnist}.txt.
# - Fashion-MNIST .gz as Debian's dataset-fashion-mnist installs them (/usr/share/datasets/
#   fashion-mnist): the official deflate streams under a gzip header without the file name and
#   with another mtime; with those put back (name, mtime 2017-08-31), each gives torchvision's MD5.
# - Fashion-MNIST raw: the official .gz files decompressed. MNIST's and KMNIST's raw files are
#   not listed (no published digest); the .gz next to them is read instead when present.
OFFICIAL_MD5: dict[str, dict[tuple[str, int], str]] = {
    "mnist": {
        ("train-images-idx3-ubyte.gz", 9912422): "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ("train-labels-idx1-ubyte.gz", 28881): "d53e105ee54ea40749a09fcbcd1e9432",
        ("t10k-images-idx3-ubyte.gz", 1648877): "9fb629c4189551a2d022fa330f9573f3",
        ("t10k-labels-idx1-ubyte.gz", 4542): "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        ("train-images-idx3-ubyte.gz", 26421880): "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ("train-labels-idx1-ubyte.gz", 29515): "25c81989df183df01b3e8a0aad5dffbe",
        ("t10k-images-idx3-ubyte.gz", 4422102): "bef4ecab320f06d8554ea6380940ec79",
        ("t10k-labels-idx1-ubyte.gz", 5148): "bb300cfdad3c16e7a12a480ee83cd310",
        # Debian's copies of the same files
        ("train-images-idx3-ubyte.gz", 26421856): "cf8536b0aa1a6ac5fa3f23001093305c",
        ("train-labels-idx1-ubyte.gz", 29491): "10bea18fdb374794d4bb42e356e600c9",
        ("t10k-images-idx3-ubyte.gz", 4422079): "f78720b4224f21cce2f2ccf2d7a94c9a",
        ("t10k-labels-idx1-ubyte.gz", 5125): "0d30e22e447f3c33dab9ed536400ac01",
        # raw
        ("train-images-idx3-ubyte", 47040016): "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        ("train-labels-idx1-ubyte", 60008): "9018921c3c673c538a1fc5bad174d6f9",
        ("t10k-images-idx3-ubyte", 7840016): "8181f5470baa50b63fa0f6fddb340f0a",
        ("t10k-labels-idx1-ubyte", 10008): "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "kmnist": {
        ("train-images-idx3-ubyte.gz", 18165135): "bdb82020997e1d708af4cf47b453dcf7",
        ("train-labels-idx1-ubyte.gz", 29497): "e144d726b3acfaa3e44228e80efcd344",
        ("t10k-images-idx3-ubyte.gz", 3041136): "5c965bf0a639b31b8f53240b1b52f4d7",
        ("t10k-labels-idx1-ubyte.gz", 5120): "7320c461ea6c1c855c0b718fb2a4b134",
    },
}


def download_root() -> Path:
    """Where ``--download`` puts data when no directory is given: $L2O_DATA or ~/.cache/l2o/data."""
    env = os.environ.get("L2O_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/l2o/data").expanduser()


def check_dataset_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise InvalidInput(f"Invalid dataset: {name!r} (valid: {', '.join(DATASETS)})")
    return DATASETS[name]


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Every directory where the files of dataset ``name`` are looked for, in order."""
    info = check_dataset_name(name)
    roots = [Path(data_dir).expanduser()] if data_dir else [download_root(), SYSTEM_ROOT]
    dirs = []
    for root in roots:
        dirs.append(root)
        for folder in info.folders:
            dirs += [root / folder, root / folder / "raw"]
    return list(dict.fromkeys(dirs))


def _file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def find_dataset(name: str, data_dir: str | Path | None = None) -> dict[str, Path]:
    """The four IDX files of dataset ``name``: {"train_images": path, ...}.

    Raises DatasetError saying where it looked and how to get the data when none is found.
    """
    info = check_dataset_name(name)
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise DatasetError(f"data directory {data_dir} does not exist; {how_to_get(name)}")
    looked = candidate_dirs(name, data_dir)
    for directory in looked:
        files = {key: _file(directory, stem) for key, stem in FILES.items()}
        found = {k: v for k, v in files.items() if v is not None}
        if len(found) == len(FILES):
            return found  # type: ignore[return-value]
        if found:
            missing = [f"{FILES[k]}[.gz]" for k in FILES if k not in found]
            raise DatasetError(
                f"{info.title} in {directory} is incomplete: missing {', '.join(missing)}"
            )
    where = ", ".join(str(d) for d in looked)
    raise DatasetError(f"no {info.title} files found (looked in {where}); {how_to_get(name)}")


def how_to_get(name: str) -> str:
    debian = (
        "or apt install dataset-fashion-mnist (Debian, Ubuntu)"
        if name == "fashion-mnist"
        else "or use Fashion-MNIST (task.dataset=fashion-mnist), which Debian and Ubuntu ship: "
        "apt install dataset-fashion-mnist"
    )
    return (
        f"to get the data, put the four IDX files ({', '.join(FILES.values())}, optionally "
        f".gz) in a directory and pass --data-dir DIR or set L2O_DATA=DIR, or add --download "
        f"(uses torchvision and the network, into DIR or {download_root()}); {debian}"
    )


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image dataset held in memory: images flattened to (count, pixels), uint8."""

    name: str
    directory: Path
    train_images: Tensor  # (60000, 784) uint8
    train_labels: Tensor  # (60000,) int64
    test_images: Tensor  # (10000, 784) uint8
    test_labels: Tensor  # (10000,) int64
    num_classes: int = NUM_CLASSES

    @property
    def num_pixels(self) -> int:
        return self.train_images.shape[1]

    def to(self, device: str | torch.device) -> ImageDataset:
        """This dataset with its tensors on ``device``."""
        return replace(
            self,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
        )


def file_key(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of each file: a cache key that changes when a file is changed."""
    key = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError as e:
            raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
        key.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return tuple(key)


_CACHE: dict[tuple[Any, ...], ImageDataset] = {}


def cached(
    key: tuple[Any, ...], device: str | torch.device, read: Callable[[], ImageDataset]
) -> ImageDataset:
    """The dataset that ``read`` reads and verifies on the CPU, once per process for ``key``
    (a name and ``file_key``), and its copy on ``device``, made once too."""
    on_cpu = (*key, "cpu")
    if on_cpu not in _CACHE:
        _CACHE[on_cpu] = read()
    on_device = (*key, str(torch.device(device)))
    if on_device not in _CACHE:
        _CACHE[on_device] = _CACHE[on_cpu].to(device)
    return _CACHE[on_device]


def _read_split(
    images_path: Path, labels_path: Path, official: OfficialDigests
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3, official=official)
    labels = read_idx(labels_path, ndim=1, official=official)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DatasetError(
            f"{images_path} / {labels_path}: expected unsigned bytes, got {images.dtype} / "
            f"{labels.dtype}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if len(labels) == 0:
        raise DatasetError(f"{labels_path} holds no examples")
    if labels.max() >= NUM_CLASSES:
        raise DatasetError(
            f"{labels_path} has label {int(labels.max())}, outside 0..{NUM_CLASSES - 1}"
        )
    return images.reshape(len(images), -1), labels


def load_dataset(
    name: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ImageDataset:
    """Find, read, verify and cache dataset ``name`` on ``device``; DatasetError names the file
    and what is wrong with it."""
    files = find_dataset(name, data_dir)
    return cached((name, *file_key(files.values())), device, lambda: _read_dataset(name, files))


def _read_dataset(name: str, files: dict[str, Path]) -> ImageDataset:
    official = OFFICIAL_MD5[name]
    train_x, train_y = _read_split(files["train_images"], files["train_labels"], official)
    test_x, test_y = _read_split(files["test_images"], files["test_labels"], official)
    directory = files["train_images"].parent.resolve()
    if train_x.shape[1] != test_x.shape[1]:
        raise DatasetError(
            f"train images in {directory} have {train_x.shape[1]} pixels, "
            f"test images {test_x.shape[1]}"
        )

    def tensor(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return ImageDataset(
        name,
        directory,
        tensor(train_x),
        tensor(train_y).long(),
        tensor(test_x),
        tensor(test_y).long(),
    )


def download_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """Download dataset ``name`` with torchvision into ``data_dir`` (or ``download_root()``).

    torchvision is an optional dependency, used only here. Returns the root directory.
    """
    info = check_dataset_name(name)
    root = Path(data_dir).expanduser() if data_dir else download_root()
    try:
        import torchvision.datasets  # optional dependency, used only here
    except ImportError as e:
        raise DatasetError(
            f"--download needs torchvision (pip install torchvision); {how_to_get(name)}"
        ) from e
    cls = getattr(torchvision.datasets, info.torchvision)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise DatasetError(f"downloading {info.title} into {root} failed: {e}") from e
    return root


def ensure_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Path:
    """The directory holding dataset ``name``, after reading and verifying all its files (they
    stay cached for ``load_dataset``); with ``download``, fetch it first if it is not found."""
    try:
        find_dataset(name, data_dir)
    except DatasetError:
        if not download:
            raise
        download_dataset(name, data_dir)
    return load_dataset(name, data_dir).directory
