"""One door to every image dataset l2o reads, by name: the MNIST family (IDX files, see
``l2o.data.mnist``) and CIFAR (``l2o.data.cifar``).

All come back as the same ``ImageDataset`` (uint8 images flattened to (count, pixels)), and
``image_shape`` says how to view a row as an image: (channels, height, width).
"""

from __future__ import annotations

from pathlib import Path

import torch

from l2o.data.cifar import CIFAR_DATASETS, IMAGE_SHAPE, find_cifar, load_cifar
from l2o.data.mnist import DATASETS as IDX_DATASETS
from l2o.data.mnist import NUM_CLASSES, ImageDataset, ensure_dataset, load_dataset

IMAGE_DATASETS: tuple[str, ...] = (*IDX_DATASETS, *CIFAR_DATASETS)


def check_image_dataset(name: str) -> None:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"Invalid dataset: {name!r} (valid: {', '.join(IMAGE_DATASETS)})")


def image_shape(name: str) -> tuple[int, int, int]:
    """(channels, height, width) of the images of dataset ``name``."""
    check_image_dataset(name)
    return IMAGE_SHAPE if name in CIFAR_DATASETS else (1, 28, 28)


def num_classes(name: str) -> int:
    """How many labels dataset ``name`` has."""
    check_image_dataset(name)
    return CIFAR_DATASETS[name].num_classes if name in CIFAR_DATASETS else NUM_CLASSES


def locate_images(name: str, data_dir: str | Path | None = None, download: bool = False) -> Path:
    """The directory holding dataset ``name``; DatasetError says where it looked if none.

    ``download`` fetches the MNIST family with torchvision; CIFAR's files are unpacked by hand
    (``l2o.data.cifar.how_to_get``).
    """
    check_image_dataset(name)
    if name in CIFAR_DATASETS:
        return find_cifar(name, data_dir).test.parent
    return ensure_dataset(name, data_dir, download=download)


def load_images(
    name: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ImageDataset:
    """Find, read, check and cache dataset ``name`` on ``device``."""
    check_image_dataset(name)
    if name in CIFAR_DATASETS:
        return load_cifar(name, data_dir, device)
    return load_dataset(name, data_dir, device)
