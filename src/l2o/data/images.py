"""One door to every image dataset l2o reads, by name: the MNIST family (IDX files, see
``l2o.data.mnist``) and CIFAR (``l2o.data.cifar``).

All come back as the same ``ImageDataset`` (uint8 images flattened to (count, pixels)), and
``image_shape`` says how to view a row as an image: (channels, height, width).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from l2o.data.cifar import CIFAR_DATASETS, IMAGE_SHAPE, load_cifar
from l2o.data.idx import DatasetError
from l2o.data.mnist import DATASETS as IDX_DATASETS
from l2o.data.mnist import NUM_CLASSES, ImageDataset, ensure_dataset, load_dataset
from l2o.errors import InvalidInput

IMAGE_DATASETS: tuple[str, ...] = (*IDX_DATASETS, *CIFAR_DATASETS)


def check_image_dataset(name: str) -> None:
    if name not in IMAGE_DATASETS:
        raise InvalidInput(f"Invalid dataset: {name!r} (valid: {', '.join(IMAGE_DATASETS)})")


def image_shape(name: str) -> tuple[int, int, int]:
    """(channels, height, width) of the images of dataset ``name``."""
    check_image_dataset(name)
    return IMAGE_SHAPE if name in CIFAR_DATASETS else (1, 28, 28)


def num_classes(name: str) -> int:
    """How many labels dataset ``name`` has."""
    check_image_dataset(name)
    return CIFAR_DATASETS[name].num_classes if name in CIFAR_DATASETS else NUM_CLASSES


def locate_images(name: str, data_dir: str | Path | None = None, download: bool = False) -> Path:
    """The directory holding dataset ``name``, after reading and verifying all its files (they
    stay cached for ``load_images``); DatasetError says where it looked if none, or names the
    file and what is wrong with it.

    ``download`` fetches the MNIST family with torchvision; CIFAR's files are unpacked by hand
    (``l2o.data.cifar.how_to_get``).
    """
    check_image_dataset(name)
    if download and name not in CIFAR_DATASETS:
        ensure_dataset(name, data_dir, download=True)
    return load_images(name, data_dir).directory


def load_images(
    name: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ImageDataset:
    """Find, read, verify and cache dataset ``name`` on ``device``; its images must have the
    shape ``image_shape(name)``."""
    check_image_dataset(name)
    if name in CIFAR_DATASETS:
        return load_cifar(name, data_dir, device)
    data = load_dataset(name, data_dir, device)
    shape = image_shape(name)
    if data.num_pixels != math.prod(shape):
        raise DatasetError(
            f"the images in {data.directory} have {data.num_pixels} pixels, expected "
            f"{' x '.join(map(str, shape))} = {math.prod(shape)} for {name}"
        )
    return data
