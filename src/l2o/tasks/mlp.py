"""The paper's MNIST experiment (section 3.2, Figures 3-5): train a small MLP classifier.

f(theta) is the cross-entropy of an MLP (by default one hidden layer of 20 sigmoid units) on a
minibatch of 128 training images. Tasks of a family share the dataset and the architecture and
differ only in theta_0 and in the minibatches they see. Minibatch ``step`` of a task is drawn
from a generator seeded by (task seed, step), so every optimizer run on a task sees the same
batches, in any order and on any device.

``num_problems`` independent MLPs are trained at once as one tensor program: weights have a
leading problem dimension, (n, out, in), and the layers are batched matmuls. Parameters are
named like an ``nn.Sequential`` of Linear and activation modules (``layers.0.weight``,
``layers.0.bias``, ``layers.2.weight``, ...).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from l2o.checks import check_choice, check_positive_int
from l2o.data.images import check_resolution, load_images
from l2o.data.mnist import DATASETS, ImageDataset, ensure_dataset, load_dataset
from l2o.errors import InvalidInput
from l2o.tasks.base import Task, TaskFamily, generator

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "gelu": F.gelu,
}
# "paper": weights and biases ~ N(0, 0.01^2), as in the paper's code (problems.py).
# "torch": nn.Linear's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
INITS = ("paper", "torch")


class MLPTask(Task):
    """``num_problems`` MLP classifiers on one dataset, each with its own theta_0 and batches."""

    def __init__(
        self,
        data: ImageDataset,
        params0: Sequence[Tensor],
        activation: str,
        batch_size: int,
        seed: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.data, self.params0 = data, list(params0)
        self.activation = ACTIVATIONS[activation]
        self.batch_size, self.seed, self.dtype = batch_size, seed, dtype
        self.num_problems = self.params0[0].shape[0]
        self.param_names = []
        for k in range(len(self.params0) // 2):
            self.param_names += [f"layers.{2 * k}.weight", f"layers.{2 * k}.bias"]

    def init_params(self) -> list[Tensor]:
        return [p.clone() for p in self.params0]

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Minibatch ``step``: images (n, B, pixels) in [0, 1] and labels (n, B), drawn with
        replacement (as the paper's code does) from a generator seeded by (task seed, step)."""
        seed = np.random.SeedSequence([self.seed, step]).generate_state(1, dtype=np.uint64)[0]
        g = torch.Generator().manual_seed(int(seed) >> 1)
        count = self.data.train_labels.shape[0]
        index = torch.randint(count, (self.num_problems, self.batch_size), generator=g)
        index = index.to(self.data.train_labels.device)
        images = self.data.train_images[index].to(self.dtype) / 255
        return images, self.data.train_labels[index]

    def logits(self, params: Sequence[Tensor], images: Tensor) -> Tensor:
        """images (n, B, pixels), or (B, pixels) shared by all problems -> logits (n, B, classes)."""
        h = images
        last = len(params) // 2 - 1
        for k in range(last + 1):
            weight, bias = params[2 * k], params[2 * k + 1]
            h = torch.matmul(h, weight.transpose(1, 2)) + bias.unsqueeze(1)
            if k < last:
                h = self.activation(h)
        return h

    def loss(self, params: Sequence[Tensor], batch: Any) -> Tensor:
        images, labels = batch
        logits = self.logits(params, images)
        n, b, classes = logits.shape
        per_example = F.cross_entropy(
            logits.reshape(n * b, classes), labels.reshape(n * b), reduction="none"
        )
        return per_example.view(n, b).mean(1)

    @torch.no_grad()
    def evaluate(
        self, params: Sequence[Tensor], split: str = "test", chunk: int = 2500
    ) -> dict[str, Tensor]:
        """Loss and accuracy of every problem on a whole split ("test" or "train"):
        {"loss": (n,), "accuracy": (n,)}, averaged over all its images."""
        check_choice("split", split, ("train", "test"))
        images = self.data.test_images if split == "test" else self.data.train_images
        labels = self.data.test_labels if split == "test" else self.data.train_labels
        loss = torch.zeros(self.num_problems, dtype=torch.float64, device=images.device)
        correct = torch.zeros_like(loss)
        for s in range(0, labels.shape[0], chunk):
            logits = self.logits(params, images[s : s + chunk].to(self.dtype) / 255)
            y = labels[s : s + chunk].expand(self.num_problems, -1)
            loss += F.cross_entropy(logits.transpose(1, 2), y, reduction="none").double().sum(1)
            correct += (logits.argmax(-1) == y).double().sum(1)
        count = labels.shape[0]
        return {"loss": (loss / count).cpu(), "accuracy": (correct / count).cpu()}


@dataclass(frozen=True)
class MLPFamily(TaskFamily):
    """MLP classifiers on an MNIST-format dataset (paper section 3.2).

    ``dataset``: mnist, fashion-mnist or kmnist; ``data_dir``: where its IDX files are ("" =
    $L2O_DATA, ~/.cache/l2o/data, /usr/share/datasets; see ``l2o.data.mnist``).
    ``hidden_sizes``: units of each hidden layer, e.g. [20] (the paper) or [20, 20].
    """

    name = "mnist"
    dataset: str = "mnist"  # mnist, fashion-mnist or kmnist (IDX files)
    # directory of the dataset's files; "" = $L2O_DATA, ~/.cache/l2o/data, /usr/share/datasets
    data_dir: str = ""
    hidden_sizes: tuple[int, ...] = (20,)  # units of each hidden layer ([] = linear classifier)
    activation: str = "sigmoid"  # sigmoid (the paper), relu, tanh, elu or gelu
    batch_size: int = 128  # examples per minibatch, a fresh one every step
    # "paper": weights and biases ~ N(0, 0.01^2); "torch": nn.Linear's default init
    init: str = "paper"
    num_problems: int = 1  # nets trained at once, each with its own theta_0 and batches
    # Images resized to resolution x resolution pixels (e.g. 8, 14); 0 = their own 28 x 28
    resolution: int = 0

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, list(DATASETS))
        check_resolution(self.resolution)
        if not isinstance(self.data_dir, str):
            raise InvalidInput(f"Invalid data_dir: {self.data_dir!r} (must be a path string)")
        sizes = self.hidden_sizes
        if isinstance(sizes, int) and not isinstance(sizes, bool):
            sizes = (sizes,)
        if not isinstance(sizes, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
        ):
            raise InvalidInput(
                f"Invalid hidden_sizes: {self.hidden_sizes!r} (a list of integers >= 1, e.g. "
                f"[20] or [20, 20]; [] for a linear classifier)"
            )
        object.__setattr__(self, "hidden_sizes", tuple(sizes))
        check_choice("activation", self.activation, list(ACTIVATIONS))
        check_choice("init", self.init, INITS)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("num_problems", self.num_problems)

    def to_config(self) -> dict[str, Any]:
        return {**super().to_config(), "hidden_sizes": list(self.hidden_sizes)}

    def locate_data(self, download: bool = False) -> Path:
        """The directory of the dataset's files, after reading and verifying every one of them
        (downloading them first if asked and needed); the data stays cached for ``sample``.
        DatasetError says where it looked and how to get the data, or names the file and what is
        wrong with it (see ``l2o.data.mnist``)."""
        return ensure_dataset(self.dataset, self.data_dir or None, download=download)

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> MLPTask:
        g = generator(seed)
        if self.resolution:  # resized from 28 x 28
            data = load_images(self.dataset, self.data_dir or None, device, self.resolution)
        else:  # as the files have them: an MLP takes images of any size
            data = load_dataset(self.dataset, self.data_dir or None, device)
        sizes = [data.num_pixels, *self.hidden_sizes, data.num_classes]
        n = self.num_problems
        params = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            for shape in ((n, fan_out, fan_in), (n, fan_out)):
                if self.init == "paper":
                    p = 0.01 * torch.randn(shape, generator=g, dtype=dtype)
                else:
                    bound = 1 / math.sqrt(fan_in)
                    p = (2 * torch.rand(shape, generator=g, dtype=dtype) - 1) * bound
                params.append(p.to(device))
        return MLPTask(data, params, self.activation, self.batch_size, seed, dtype)
