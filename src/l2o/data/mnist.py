"""MNIST-format image datasets (MNIST, Fashion-MNIST, KMNIST, any set of IDX files), offline.

Where the files are looked for, in order, for each root directory:

    ROOT/                               the four IDX files directly
    ROOT/<name>/  ROOT/<name>/raw/      e.g. ROOT/fashion-mnist/
    ROOT/<TorchvisionName>/raw/         torchvision's layout, e.g. ROOT/FashionMNIST/raw/

The roots are ``data_dir`` when one is given; otherwise ``$L2O_DATA`` (when set), the download
folder ``~/.cache/l2o/data`` and ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist``
package installs there). Files may be gzip-compressed or not. Nothing is downloaded unless asked
for (``download_dataset``, the CLI's ``--download``).

The whole dataset is held as uint8 tensors on the chosen device (47 MB for 60 000 images) and
cached per process, so sampling a new task costs nothing and a minibatch is one gather.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from l2o.data.idx import DatasetError, read_idx

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


def download_root() -> Path:
    """Where ``--download`` puts data when no directory is given: $L2O_DATA or ~/.cache/l2o/data."""
    env = os.environ.get("L2O_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/l2o/data").expanduser()


def check_dataset_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"Invalid dataset: {name!r} (valid: {', '.join(DATASETS)})")
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
    for candidate in (directory / stem, directory / f"{stem}.gz"):
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


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
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


_CACHE: dict[tuple[str, str, str], ImageDataset] = {}


def load_dataset(
    name: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ImageDataset:
    """Find, read, check and cache dataset ``name`` on ``device``."""
    files = find_dataset(name, data_dir)
    directory = files["train_images"].parent.resolve()
    key = (name, str(directory), str(torch.device(device)))
    if key not in _CACHE:
        train_x, train_y = _read_split(files["train_images"], files["train_labels"])
        test_x, test_y = _read_split(files["test_images"], files["test_labels"])
        if train_x.shape[1] != test_x.shape[1]:
            raise DatasetError(
                f"train images in {directory} have {train_x.shape[1]} pixels, "
                f"test images {test_x.shape[1]}"
            )

        def tensor(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        _CACHE[key] = ImageDataset(
            name,
            directory,
            tensor(train_x),
            tensor(train_y).long(),
            tensor(test_x),
            tensor(test_y).long(),
        )
    return _CACHE[key]


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
    """The directory holding dataset ``name``; with ``download``, fetch it if it is not found."""
    try:
        return find_dataset(name, data_dir)["train_images"].parent
    except DatasetError:
        if not download:
            raise
    download_dataset(name, data_dir)
    return find_dataset(name, data_dir)["train_images"].parent
