"""Dataset readers, all offline-capable: the IDX format of MNIST, Fashion-MNIST and KMNIST
(``l2o.data.mnist``) and CIFAR (``l2o.data.cifar``). Every file is verified as it is read."""

from l2o.data.idx import DatasetError, parse_idx, read_idx, write_idx
from l2o.data.mnist import (
    DATASETS,
    ImageDataset,
    candidate_dirs,
    download_dataset,
    ensure_dataset,
    find_dataset,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageDataset",
    "candidate_dirs",
    "download_dataset",
    "ensure_dataset",
    "find_dataset",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "write_idx",
]
