"""One door to every image dataset l2o reads, by name: the MNIST family (IDX files, see
``l2o.data.mnist``) and CIFAR (``l2o.data.cifar``).

All come back as the same ``ImageDataset`` (uint8 images flattened to (count, pixels)), and
``image_shape`` says how to view a row as an image: (channels, height, width).

``resolution`` (``load_images``, ``image_shape``) resizes every image to resolution x
resolution pixels once, when the dataset is first loaded (area averaging to shrink, bilinear
to enlarge, rounded back to bytes; 0 = the dataset's own size): the task mixture trains on several resolutions of one
dataset (``l2o.tasks.mixture``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from l2o.data.cifar import CIFAR_DATASETS, IMAGE_SHAPE, load_cifar
from l2o.data.idx import DatasetError
from l2o.data.mnist import DATASETS as IDX_DATASETS
from l2o.data.mnist import NUM_CLASSES, ImageDataset, cached, ensure_dataset, load_dataset
from l2o.errors import InvalidInput

MAX_RESOLUTION = 1024

IMAGE_DATASETS: tuple[str, ...] = (*IDX_DATASETS, *CIFAR_DATASETS)


def check_image_dataset(name: str) -> None:
    if name not in IMAGE_DATASETS:
        raise InvalidInput(f"Invalid dataset: {name!r} (valid: {', '.join(IMAGE_DATASETS)})")


def check_resolution(resolution: int) -> None:
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or not 0 <= resolution <= MAX_RESOLUTION
    ):
        raise InvalidInput(
            f"Invalid resolution: {resolution!r} (pixels per side of the resized images, an "
            f"integer in 1..{MAX_RESOLUTION}, e.g. 14; 0 = the dataset's own size)"
        )


def image_shape(name: str, resolution: int = 0) -> tuple[int, int, int]:
    """(channels, height, width) of the images of dataset ``name``, resized to ``resolution``
    pixels per side (0: their own size)."""
    check_image_dataset(name)
    check_resolution(resolution)
    channels, height, width = IMAGE_SHAPE if name in CIFAR_DATASETS else (1, 28, 28)
    return (channels, resolution, resolution) if resolution else (channels, height, width)


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
    name: str,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    resolution: int = 0,
) -> ImageDataset:
    """Find, read, verify and cache dataset ``name`` on ``device``; its images must have the
    shape ``image_shape(name)``. With ``resolution``, they come resized to that many pixels per
    side (made once per process and device, from the dataset at its own size)."""
    shape = image_shape(name, resolution)
    if resolution:
        native = load_images(name, data_dir)  # on the CPU: resized there, then moved
        # Keyed by the native copy, itself cached per set of files (re-read if they change).
        key = ("resized", name, str(native.directory), resolution, id(native))
        return cached(key, device, lambda: resize(native, image_shape(name), resolution))
    if name in CIFAR_DATASETS:
        return load_cifar(name, data_dir, device)
    data = load_dataset(name, data_dir, device)
    if data.num_pixels != math.prod(shape):
        raise DatasetError(
            f"the images in {data.directory} have {data.num_pixels} pixels, expected "
            f"{' x '.join(map(str, shape))} = {math.prod(shape)} for {name}"
        )
    return data


def resize(data: ImageDataset, shape: tuple[int, int, int], resolution: int) -> ImageDataset:
    """``data`` (images of ``shape``) with every image resized to resolution x resolution,
    rounded back to bytes: by area averaging (each new pixel the mean of the old pixels it
    covers, F.interpolate's "area") to shrink, by bilinear interpolation to enlarge."""
    mode = "area" if resolution <= min(shape[1:]) else "bilinear"

    def one(images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.split(10000):  # bounded memory for the float copies
            x = chunk.reshape(-1, *shape).float()
            y = F.interpolate(x, size=(resolution, resolution), mode=mode)
            out.append(y.round().clamp(0, 255).to(torch.uint8).reshape(len(chunk), -1))
        return torch.cat(out)

    return replace(data, train_images=one(data.train_images), test_images=one(data.test_images))
