"""The paper's CIFAR-10 experiment (section 3.3, Figure 6): a small conv net with batch norm.

f(theta) is the cross-entropy on a minibatch of 128 images of the net of the paper's code:

    3 x [conv 5x5, 16 channels, stride 1, same padding -> batch norm -> ReLU -> 2x2 max-pool]
    -> fully connected, 32 units -> batch norm -> ReLU -> fully connected to the classes

Channels, kernel size, hidden units and the dataset (so the input shape: 1x28x28 for the MNIST
family, 3x32x32 for CIFAR) are options. Parameters are named like the ``nn.Module`` one would
write, so groups can be made by glob (the paper: conv weights -> one LSTM, the rest -> another)::

    conv0.weight  bn0.weight  bn0.bias  conv1.weight ...  fc0.weight  bn_fc0.weight  bn_fc0.bias
    out.weight  out.bias

Convolutions and hidden fully connected layers have no bias: the batch norm after each would
remove it (beta is that layer's bias).

Batch norm. The training loss uses the statistics of its own minibatch (train mode), so it is a
function of theta and the batch alone and ``loss(params, batch)`` is all an optimizer needs.
The running statistics (``running_mean`` and ``running_var`` of each batch norm layer) are
buffers, not parameters: the task's ``init_buffers()`` gives their initial values and
``loss_and_buffers(params, buffers, batch)`` returns, with the loss, the buffers updated by
torch's rule (new = (1 - momentum) old + momentum batch statistic, unbiased variance). The
unroll and the evaluation rollout carry them beside theta (``UnrollState.buffers``,
``Rollout.buffers``), update them once per step, never meta-train them (they are detached), and
``evaluate`` uses them for the held-out test loss and accuracy in eval mode.

Label subsets (the paper's CIFAR-5 and CIFAR-2, and "LSTM-sub" trained on held-out labels):
``classes`` lists the labels used; they are renumbered 0..k-1 in that order and the net has k
outputs. Training batches and the test set are restricted to those labels.

``num_problems`` nets are trained at once as one tensor program: weights have a leading
problem dimension, the problems' images are stacked along channels and every convolution is a
grouped convolution with one group per problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from l2o.checks import check_positive_int, check_real
from l2o.data.images import (
    IMAGE_DATASETS,
    ImageDataset,
    check_resolution,
    image_shape,
    load_images,
    locate_images,
    num_classes,
)
from l2o.errors import InvalidInput
from l2o.tasks.base import Task, TaskFamily, generator


def _int_tuple(name: str, value: Any, minimum: int, example: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    ):
        raise InvalidInput(
            f"Invalid {name}: {value!r} (a list of integers >= {minimum}, e.g. {example})"
        )
    return tuple(value)


class ConvTask(Task):
    """``num_problems`` conv nets on one dataset, each with its own theta_0 and minibatches."""

    def __init__(
        self,
        family: ConvFamily,
        data: ImageDataset,
        params0: Sequence[Tensor],
        seed: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.family, self.data, self.params0 = family, data, list(params0)
        self.seed, self.dtype = seed, dtype
        self.shape = image_shape(family.dataset, family.resolution)
        self.num_problems = family.num_problems
        self.param_names = [name for name, _ in family.shapes()]
        self.buffer_names = [
            f"{name[: -len('.weight')]}.{stat}"
            for name in self.param_names
            if name.startswith("bn") and name.endswith(".weight")
            for stat in ("running_mean", "running_var")
        ]
        # Label subsets: which training/test examples are used, and their labels renumbered.
        device = data.train_labels.device
        self.label_map = torch.arange(data.num_classes, device=device)
        self.train_index = self.test_index = None
        if family.classes:
            chosen = torch.tensor(family.classes, device=device)
            self.label_map = torch.full((data.num_classes,), -1, dtype=torch.long, device=device)
            self.label_map[chosen] = torch.arange(len(chosen), device=device)
            self.train_index = torch.isin(data.train_labels, chosen).nonzero().squeeze(1)
            self.test_index = torch.isin(data.test_labels, chosen).nonzero().squeeze(1)

    # -- theta, buffers and data ---------------------------------------------------------------
    def init_params(self) -> list[Tensor]:
        return [p.clone() for p in self.params0]

    def init_buffers(self) -> list[Tensor]:
        """Running mean 0 and variance 1 of every batch norm layer, each (n, features)."""
        n, device = self.num_problems, self.params0[0].device
        out = []
        for width in (*self.family.channels, *self.family.hidden_sizes):
            zeros = torch.zeros(n, width, dtype=self.dtype, device=device)
            out += [zeros, torch.ones_like(zeros)]
        return out

    def _images(self, flat: Tensor) -> Tensor:
        return (flat.to(self.dtype) / 255).reshape(*flat.shape[:-1], *self.shape)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Minibatch ``step``: images (n, B, C, H, W) in [0, 1] and labels (n, B), drawn with
        replacement from a generator seeded by (task seed, step), as ``MLPTask`` does."""
        seed = np.random.SeedSequence([self.seed, step]).generate_state(1, dtype=np.uint64)[0]
        g = torch.Generator().manual_seed(int(seed) >> 1)
        count = (
            self.data.train_labels.shape[0] if self.train_index is None else len(self.train_index)
        )
        index = torch.randint(count, (self.num_problems, self.family.batch_size), generator=g)
        index = index.to(self.data.train_labels.device)
        if self.train_index is not None:
            index = self.train_index[index]
        images = self._images(self.data.train_images[index])
        return images, self.label_map[self.data.train_labels[index]]

    # -- the net -------------------------------------------------------------------------------
    def _batch_norm(
        self,
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        stats: tuple[Tensor, Tensor] | None,
        new_stats: list[Tensor],
        training: bool,
    ) -> Tensor:
        """Batch norm of x (B, n * C, ...), gamma and beta (n, C); per problem and channel.

        Train mode normalises with the batch's statistics and, if ``stats`` = (running mean,
        running var) is given, appends their updates to ``new_stats``; eval mode uses them."""
        f = self.family
        assert training or stats is not None, "eval mode needs the running statistics"
        if training and stats is not None:
            # torch's kernel updates the running statistics in place (the rule in the module doc)
            # from the batch statistics it computes anyway: on contiguous copies, so that the
            # flattened views below are theirs, and the copies are the new buffers. Not meta-trained:
            # they carry no graph.
            stats = tuple(s.detach().clone(memory_format=torch.contiguous_format) for s in stats)
            new_stats += stats
        mean, var = (None, None) if stats is None else (s.reshape(-1) for s in stats)
        return F.batch_norm(
            x, mean, var, gamma.reshape(-1), beta.reshape(-1), training, f.bn_momentum, f.bn_eps
        )

    def _forward(
        self,
        params: Sequence[Tensor],
        images: Tensor,
        buffers: Sequence[Tensor] | None = None,
        training: bool = True,
    ) -> tuple[Tensor, list[Tensor]]:
        """images (n, B, C, H, W), or (B, C, H, W) shared by all problems -> logits (n, B, k)
        and, in train mode with ``buffers``, the updated buffers."""
        n, f = self.num_problems, self.family
        if images.dim() == 4:
            images = images.unsqueeze(0).expand(n, *images.shape)
        b = images.shape[1]
        # Problems side by side along channels: (B, n * C, H, W), one conv group per problem.
        x = images.transpose(0, 1).reshape(b, n * images.shape[2], *images.shape[3:])
        p, new_buffers = iter(params), []
        # (running mean, running var) of each batch norm layer, in order.
        stats = iter(list(zip(buffers[0::2], buffers[1::2]))) if buffers else None
        for width in f.channels:
            weight, gamma, beta = next(p), next(p), next(p)
            x = F.conv2d(
                x, weight.reshape(n * width, *weight.shape[2:]), padding=f.kernel_size // 2,
                groups=n,
            )  # fmt: skip
            x = self._batch_norm(x, gamma, beta, stats and next(stats), new_buffers, training)
            x = F.max_pool2d(torch.relu(x), 2)
        x = x.reshape(b, n, -1).transpose(0, 1)  # (n, B, features), each problem's own
        for width in f.hidden_sizes:
            weight, gamma, beta = next(p), next(p), next(p)
            x = torch.matmul(x, weight.transpose(1, 2))  # (n, B, width)
            x = x.transpose(0, 1).reshape(b, n * width)
            x = self._batch_norm(x, gamma, beta, stats and next(stats), new_buffers, training)
            x = torch.relu(x).reshape(b, n, width).transpose(0, 1)
        weight, bias = next(p), next(p)
        return torch.matmul(x, weight.transpose(1, 2)) + bias.unsqueeze(1), new_buffers

    def logits(self, params: Sequence[Tensor], images: Tensor) -> Tensor:
        """Train-mode logits (batch statistics): images (n, B, C, H, W) -> (n, B, k)."""
        return self._forward(params, images)[0]

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        n, b, k = logits.shape
        per_example = F.cross_entropy(
            logits.reshape(n * b, k), labels.reshape(n * b), reduction="none"
        )
        return per_example.view(n, b).mean(1)

    def loss(self, params: Sequence[Tensor], batch: Any) -> Tensor:
        images, labels = batch
        return self._loss(self.logits(params, images), labels)

    def loss_and_buffers(
        self, params: Sequence[Tensor], buffers: Sequence[Tensor], batch: Any
    ) -> tuple[Tensor, list[Tensor]]:
        """The training loss (as ``loss``) and the buffers after this minibatch."""
        images, labels = batch
        logits, new_buffers = self._forward(params, images, buffers)
        return self._loss(logits, labels), new_buffers

    @torch.no_grad()
    def evaluate(
        self,
        params: Sequence[Tensor],
        split: str = "test",
        chunk: int = 1000,
        buffers: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Loss and accuracy of every problem on a whole split ("test" or "train"), restricted
        to the task's classes: {"loss": (n,), "accuracy": (n,)}.

        With ``buffers`` (the running statistics, e.g. ``Rollout.buffers``) batch norm runs in
        eval mode, as a trained net is used; without, each chunk of ``chunk`` images is
        normalised with its own statistics (train mode)."""
        if split not in ("train", "test"):
            raise InvalidInput(f"Invalid split: {split!r} (valid: train, test)")
        images = self.data.test_images if split == "test" else self.data.train_images
        labels = self.data.test_labels if split == "test" else self.data.train_labels
        index = self.test_index if split == "test" else self.train_index
        if index is not None:
            images, labels = images[index], labels[index]
        labels = self.label_map[labels]
        loss = torch.zeros(self.num_problems, dtype=torch.float64, device=images.device)
        correct = torch.zeros_like(loss)
        for s in range(0, labels.shape[0], chunk):
            logits, _ = self._forward(
                params, self._images(images[s : s + chunk]), buffers, training=buffers is None
            )
            y = labels[s : s + chunk].expand(self.num_problems, -1)
            loss += F.cross_entropy(logits.transpose(1, 2), y, reduction="none").double().sum(1)
            correct += (logits.argmax(-1) == y).double().sum(1)
        count = labels.shape[0]
        return {"loss": (loss / count).cpu(), "accuracy": (correct / count).cpu()}


@dataclass(frozen=True)
class ConvFamily(TaskFamily):
    """Conv nets with batch norm on an image dataset (paper section 3.3).

    ``dataset``: cifar10, cifar100, cifar100-coarse, or an MNIST-format one (fashion-mnist,
    mnist, kmnist); ``data_dir``: where its files are ("" = $L2O_DATA, ~/.cache/l2o/data,
    /usr/share/datasets; see ``l2o.data``). ``channels``: output channels of each conv layer
    (each followed by batch norm, ReLU and 2x2 max-pool); ``hidden_sizes``: units of each
    hidden fully connected layer (each followed by batch norm and ReLU); ``classes``: the
    labels used, renumbered 0..k-1 ([] = all). Weights start as torch's defaults for Conv2d
    and Linear (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), batch norm at gamma = 1, beta = 0.
    """

    name = "conv"
    # cifar10, cifar100, cifar100-coarse, or an MNIST-format one (fashion-mnist, mnist, kmnist)
    dataset: str = "cifar10"
    # directory of the dataset's files; "" = $L2O_DATA, ~/.cache/l2o/data, /usr/share/datasets
    data_dir: str = ""
    # output channels of each conv layer (each followed by batch norm, ReLU and 2x2 max-pool)
    channels: tuple[int, ...] = (16, 16, 16)
    kernel_size: int = 5  # side of the square conv kernels
    hidden_sizes: tuple[int, ...] = (32,)  # units of each hidden fully connected layer
    batch_size: int = 128  # examples per minibatch, a fresh one every step
    classes: tuple[int, ...] = ()  # the labels used, renumbered 0..k-1 ([] = all)
    bn_momentum: float = 0.1  # batch norm's running-statistics momentum (torch's default)
    bn_eps: float = 1e-5  # batch norm's epsilon
    num_problems: int = 1  # nets trained at once, each with its own theta_0 and batches
    # Images resized to resolution x resolution pixels (e.g. 14, 16); 0 = their own size
    resolution: int = 0

    def __post_init__(self) -> None:
        check_resolution(self.resolution)
        if self.dataset not in IMAGE_DATASETS:
            raise InvalidInput(
                f"Invalid dataset: {self.dataset!r} (valid: {', '.join(IMAGE_DATASETS)})"
            )
        if not isinstance(self.data_dir, str):
            raise InvalidInput(f"Invalid data_dir: {self.data_dir!r} (must be a path string)")
        channels = _int_tuple("channels", self.channels, 1, "[16, 16, 16]")
        if not channels:
            raise InvalidInput("Invalid channels: [] (at least one conv layer, e.g. [16, 16, 16])")
        _, height, width = image_shape(self.dataset, self.resolution)
        if min(height, width) >> len(channels) < 1:
            raise InvalidInput(
                f"Invalid channels: {len(channels)} conv layers with 2x2 pooling shrink the "
                f"{height}x{width} images of {self.dataset} to nothing "
                f"(at most {int(math.log2(min(height, width)))} layers)"
            )
        object.__setattr__(self, "channels", channels)
        hidden = _int_tuple("hidden_sizes", self.hidden_sizes, 1, "[32]; [] for none")
        object.__setattr__(self, "hidden_sizes", hidden)
        check_positive_int("kernel_size", self.kernel_size)
        if self.kernel_size % 2 == 0:
            raise InvalidInput(
                f"Invalid kernel_size: {self.kernel_size} (must be odd, for same padding)"
            )
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("num_problems", self.num_problems)
        total = num_classes(self.dataset)
        classes = _int_tuple("classes", self.classes, 0, "[0, 1, 2, 3, 4]; [] for all")
        if classes and (
            len(classes) < 2 or len(set(classes)) != len(classes) or max(classes) >= total
        ):
            raise InvalidInput(
                f"Invalid classes: {list(classes)} (at least 2 distinct labels of "
                f"0..{total - 1}, or [] for all)"
            )
        object.__setattr__(self, "classes", classes)
        check_real("bn_momentum", self.bn_momentum, lambda m: 0 <= m <= 1, "must be in [0, 1]")
        check_real("bn_eps", self.bn_eps, lambda e: 0 < e < math.inf, "must be > 0")

    @property
    def num_outputs(self) -> int:
        return len(self.classes) or num_classes(self.dataset)

    def to_config(self) -> dict[str, Any]:
        return {
            **super().to_config(),
            "channels": list(self.channels),
            "hidden_sizes": list(self.hidden_sizes),
            "classes": list(self.classes),
        }

    def locate_data(self, download: bool = False) -> Path:
        """The directory of the dataset's files, after reading and verifying every one of them
        (the data stays cached for ``sample``); DatasetError says where it looked, or names the
        file and what is wrong with it (see ``l2o.data.images``)."""
        return locate_images(self.dataset, self.data_dir or None, download=download)

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each parameter of one problem, in the order of ``param_names``."""
        c, h, w = image_shape(self.dataset, self.resolution)
        k, shapes = self.kernel_size, []
        for i, width in enumerate(self.channels):
            shapes += [(f"conv{i}.weight", (width, c, k, k))]
            shapes += [(f"bn{i}.weight", (width,)), (f"bn{i}.bias", (width,))]
            c, h, w = width, h // 2, w // 2
        features = c * h * w
        for i, width in enumerate(self.hidden_sizes):
            shapes += [(f"fc{i}.weight", (width, features))]
            shapes += [(f"bn_fc{i}.weight", (width,)), (f"bn_fc{i}.bias", (width,))]
            features = width
        return [
            *shapes,
            ("out.weight", (self.num_outputs, features)),
            ("out.bias", (self.num_outputs,)),
        ]

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> ConvTask:
        g = generator(seed)
        data = load_images(self.dataset, self.data_dir or None, device, self.resolution)
        n, params, fan_in = self.num_problems, [], 1
        for name, shape in self.shapes():
            if name.startswith("bn"):  # gamma = 1, beta = 0
                fill = 1.0 if name.endswith(".weight") else 0.0
                p = torch.full((n, *shape), fill, dtype=dtype)
            else:  # torch's default for Conv2d and Linear; a bias uses its weight's fan-in
                fan_in = math.prod(shape[1:]) if len(shape) > 1 else fan_in
                bound = 1 / math.sqrt(fan_in)
                p = (2 * torch.rand((n, *shape), generator=g, dtype=dtype) - 1) * bound
            params.append(p.to(device))
        return ConvTask(self, data, params, seed, dtype)
