"""The paper's neural art experiment (section 3.4, Figures 7-8): style transfer as an
optimization problem whose parameters theta are the pixels of an image.

    f(theta) = alpha L_content(theta, c) + beta L_style(theta, s) + gamma L_tv(theta)

measured in the features of a fixed convolutional network (Gatys et al. 2015;
``l2o.tasks.feature_nets``: VGG-19 from a weights file, or the seeded random multi-scale net,
the offline default). With F_l(x) the features (C_l, h_l, w_l) of layer l for image x:

    L_content = mean((F_k(theta) - F_k(c))^2)                      at one layer k
    G_l(x)    = F_l(x) F_l(x)^T / (h_l w_l)                        a C_l x C_l Gram matrix
    L_style   = mean over the style layers l of mean((G_l(theta) - G_l(s))^2)
    L_tv      = mean((theta[:, i+1, j] - theta[:, i, j])^2) + mean((theta[:, i, j+1] - theta[:, i, j])^2)

(means over every entry). With ``normalise`` (the default) the content term is divided by
mean(F_k(c)^2) and each layer's style term by mean(G_l(s)^2): every term is then relative to
its target's size, the same on any network, layer or resolution, so the weights mean the same
on VGG-19 and on the random net and an optimizer meta-trained at 64x64 sees gradients of
similar size at 128x128.

theta is an image (n, 3, H, W) (``num_problems`` images at once, each with its own content and
the family's one style); pixel values are free during the optimization and clamped to [0, 1]
when the image is saved. theta_0 is ``init``: "noise", mid-grey plus Gaussian noise of standard
deviation ``init_noise`` (Gatys et al. start from white noise), or "content", the content image
plus that noise.

Content images: the photographs of ``content_dir`` or, by default, those that scikit-image and
scikit-learn ship (``l2o.data.pictures``), split by photograph into meta-training, validation and
test sets (``content_split``). A task (a seed) draws one photograph and, with ``augment``, a
random crop of it (its side a random fraction in [crop_min, 1] of the largest crop of the
image's aspect: a random rescaling), flipped left-right half the time, resized to H x W; without
``augment``, the largest centred crop. The style image is resized so that its shorter side is
``style_size`` pixels (0: the shorter side of the image optimized).

There is no data to draw per step: f is deterministic and ``batch`` is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from l2o.checks import check_choice, check_positive_int, is_int, set_real
from l2o.data.pictures import (
    DEFAULT_CONTENT,
    image_path,
    list_images,
    read_image,
    sample_path,
)
from l2o.errors import InvalidInput
from l2o.tasks.base import Task, TaskFamily, generator
from l2o.tasks.feature_nets import FeatureNet, feature_net

NETWORKS = ("random", "random-vgg19", "vgg19")
INITS = ("noise", "content")
SPLITS = ("train", "validation", "test")
MAX_SIZE = 4096


# -- the losses, as plain functions of features ---------------------------------------------------
def gram(features: Tensor) -> Tensor:
    """features (..., C, h, w) -> Gram matrices (..., C, C): F F^T / (h w)."""
    flat = features.flatten(-2)
    return flat @ flat.transpose(-1, -2) / flat.shape[-1]


def content_loss(features: Tensor, target: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    """mean((F - P)^2) / scale per image: features (n, C, h, w), target (n or 1, C, h, w)."""
    return (features - target).pow(2).flatten(1).mean(1) / scale


def style_loss(grams: Sequence[Tensor], targets: Sequence[Tensor],
               scales: Sequence[Tensor | float]) -> Tensor:  # fmt: skip
    """The mean over layers of mean((G_l - A_l)^2) / scale_l per image: grams (n, C_l, C_l),
    targets (C_l, C_l)."""
    per_layer = [
        (g - a).pow(2).flatten(1).mean(1) / s
        for g, a, s in zip(grams, targets, scales, strict=True)
    ]
    return torch.stack(per_layer).mean(0)


def total_variation(images: Tensor) -> Tensor:
    """mean of squared differences between vertical neighbours plus that of horizontal ones,
    per image: images (n, 3, H, W) -> (n,)."""
    total = images.new_zeros(images.shape[0])
    if images.shape[-2] > 1:
        total = total + (images[..., 1:, :] - images[..., :-1, :]).pow(2).flatten(1).mean(1)
    if images.shape[-1] > 1:
        total = total + (images[..., 1:] - images[..., :-1]).pow(2).flatten(1).mean(1)
    return total


def resize(image: Tensor, height: int, width: int) -> Tensor:
    """image (3, h, w) -> (3, height, width): bilinear with antialiasing (area-like when
    shrinking)."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.interpolate(
        image.unsqueeze(0), size=(height, width), mode="bilinear", antialias=True,
        align_corners=False,
    ).squeeze(0)  # fmt: skip


# -- one problem ------------------------------------------------------------------------------------
class ArtTask(Task):
    """``num_problems`` images to stylise at once, each with its content image, one style."""

    param_names = ["image"]

    def __init__(
        self,
        family: ArtFamily,
        net: FeatureNet,
        content: Tensor,
        style: Tensor,
        image0: Tensor,
    ) -> None:
        """content (n, 3, H, W), style (3, h, w) and theta_0 (n, 3, H, W), on the net's device."""
        self.family, self.net = family, net
        self.content, self.style, self.image0 = content, style, image0
        self.num_problems = content.shape[0]
        self.content_layer = family.content_layer or net.default_content
        self.style_layers = list(family.style_layers or net.default_style)
        with torch.no_grad():
            p = net.features(content, [self.content_layer])[self.content_layer]
            self.content_target = p
            found = net.features(style.unsqueeze(0), self.style_layers)
            self.style_targets = [gram(found[layer])[0] for layer in self.style_layers]
            if family.normalise:
                self.content_scale = p.pow(2).flatten(1).mean(1).clamp_min(1e-12)
                self.style_scales = [a.pow(2).mean().clamp_min(1e-12) for a in self.style_targets]
            else:
                self.content_scale = torch.ones_like(p[:, 0, 0, 0])
                self.style_scales = [1.0] * len(self.style_layers)

    def init_params(self) -> list[Tensor]:
        return [self.image0.clone()]

    def terms(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """Each term of f, unweighted, per image: {"content", "style", "tv"}, each (n,)."""
        image = params[0]
        found = self.net.features(image, {self.content_layer, *self.style_layers})
        return {
            "content": content_loss(
                found[self.content_layer], self.content_target, self.content_scale
            ),
            "style": style_loss(
                [gram(found[layer]) for layer in self.style_layers],
                self.style_targets,
                self.style_scales,
            ),
            "tv": total_variation(image),
        }

    def loss(self, params: Sequence[Tensor], batch: Any = None) -> Tensor:
        f, t = self.family, self.terms(params)
        return f.content_weight * t["content"] + f.style_weight * t["style"] + f.tv_weight * t["tv"]

    @staticmethod
    def images(params: Sequence[Tensor]) -> Tensor:
        """The images theta as pictures: (n, 3, H, W) clamped to [0, 1]."""
        return params[0].detach().clamp(0, 1)


# -- the family -------------------------------------------------------------------------------------
def _size(value: Any) -> tuple[int, int]:
    if is_int(value):
        value = (value, value)
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(is_int(v) and 1 <= v <= MAX_SIZE for v in value)
    ):
        raise InvalidInput(
            f"Invalid size: {value!r} (pixels per side, e.g. 64, or [height, width], each in "
            f"1..{MAX_SIZE})"
        )
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class ArtFamily(TaskFamily):
    """Style transfer problems: one style image, content images drawn per task (section 3.4).

    The paper meta-trains on 64x64 images with one style, 128 steps per image in truncations
    of 32, and tests on held-out content, at 128x128, and with a style it never saw.
    """

    name = "art"
    # pixels of the image optimized: a side, e.g. 64 (the paper's meta-training), or [height, width]
    size: tuple[int, int] = (64, 64)
    # folder of the content photographs (PNG/JPEG); with train/, validation/ and test/ subfolders
    # each split uses its own, otherwise every split uses them all. "" = the photographs that
    # scikit-image and scikit-learn ship (l2o.data.pictures), split by photograph
    content_dir: str = ""
    # which photographs: train (meta-training), validation or test (held out)
    content_split: str = "train"
    # random crops (a random rescaling), left-right flips; false = the largest centred crop
    augment: bool = True
    # smallest crop side, as a fraction of the largest crop of the image's aspect
    crop_min: float = 0.3
    # the style image: a sample (skimage/ihc, the training style; skimage/hubble, the new style
    # of the generalisation test; see l2o.data.pictures) or a path to a PNG/JPEG file
    style: str = "skimage/ihc"
    # pixels of the style image's shorter side after resizing; 0 = the image's shorter side
    style_size: int = 0
    # the feature network: "random" (seeded random multi-scale net, offline), "random-vgg19"
    # (VGG-19's layout with seeded random filters, random_widths channels, offline) or "vgg19"
    network: str = "random"
    # the VGG-19 weights file (torch state dict or safetensors); "" = the first vgg19*.pth or
    # vgg19*.safetensors in $L2O_DATA (or ~/.cache/l2o/data), then in torch hub's checkpoints
    weights: str = ""
    network_seed: int = 0  # the random nets' filters are drawn from this seed
    random_channels: int = 32  # filters per scale of the random net
    random_kernel: int = 5  # side of the random net's filters (odd)
    random_scales: int = 4  # scales of the random net: layers scale0 .. scale{n-1}
    # channels of random-vgg19's five blocks (VGG-19's: 64, 128, 256, 512, 512)
    random_widths: tuple[int, ...] = (16, 32, 64, 64, 64)
    # the content layer; "" = the network's default (vgg19: relu4_2; random: scale1)
    content_layer: str = ""
    # the style layers; [] = the network's default (vgg19: relu1_1 ... relu5_1; random: all)
    style_layers: tuple[str, ...] = ()
    content_weight: float = 1.0  # alpha, the weight of the content term
    style_weight: float = 1.0  # beta, the weight of the style term
    tv_weight: float = 1.0  # gamma, the weight of the total variation term
    # each term relative to its target's size (content: mean P^2, style: mean A^2 per layer)
    normalise: bool = True
    # theta_0: "noise" (mid-grey plus noise, as Gatys et al.) or "content" (content plus noise)
    init: str = "noise"
    init_noise: float = 0.1  # standard deviation of the Gaussian noise added to theta_0
    num_problems: int = 1  # images stylised at once, each with its own content image

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self.size))
        for name in ("content_dir", "style", "weights", "content_layer"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput(f"Invalid {name}: {getattr(self, name)!r} (must be a string)")
        check_choice("content_split", self.content_split, SPLITS)
        check_choice("network", self.network, NETWORKS)
        check_choice("init", self.init, INITS)
        if not isinstance(self.augment, bool) or not isinstance(self.normalise, bool):
            bad = "augment" if not isinstance(self.augment, bool) else "normalise"
            raise InvalidInput(f"Invalid {bad}: {getattr(self, bad)!r} (true or false)")
        set_real(self, "crop_min", lambda v: 0 < v <= 1, "a fraction in (0, 1]")
        for name in ("content_weight", "style_weight", "tv_weight", "init_noise"):
            set_real(self, name, lambda v: 0 <= v < math.inf, "a number >= 0")
        if not self.style:
            raise InvalidInput(
                "Invalid style: '' (a sample such as skimage/ihc or a PNG/JPEG path)"
            )
        if not (is_int(self.style_size) and 0 <= self.style_size <= MAX_SIZE):
            raise InvalidInput(
                f"Invalid style_size: {self.style_size!r} (pixels, 0..{MAX_SIZE}; 0 = the "
                f"image's shorter side)"
            )
        if not (is_int(self.network_seed) and self.network_seed >= 0):
            raise InvalidInput(f"Invalid network_seed: {self.network_seed!r} (an integer >= 0)")
        for name in ("random_channels", "random_kernel", "random_scales", "num_problems"):
            check_positive_int(name, getattr(self, name))
        widths = self.random_widths
        if not (
            isinstance(widths, (list, tuple))
            and len(widths) == 5
            and all(is_int(w) and w > 0 for w in widths)
        ):
            raise InvalidInput(
                f"Invalid random_widths: {widths!r} (5 channel counts > 0, one per VGG-19 "
                f"block, e.g. [16, 32, 64, 64, 64])"
            )
        object.__setattr__(self, "random_widths", tuple(widths))
        if self.random_kernel % 2 == 0:
            raise InvalidInput(f"Invalid random_kernel: {self.random_kernel} (must be odd)")
        if self.weights and self.network != "vgg19":
            raise InvalidInput(
                f'Invalid weights: {self.weights!r} is for network = "vgg19" (network is '
                f'"{self.network}")'
            )
        layers = self.style_layers
        if isinstance(layers, str):
            layers = (layers,)
        if not (isinstance(layers, (list, tuple)) and all(isinstance(x, str) for x in layers)):
            raise InvalidInput(
                f"Invalid style_layers: {self.style_layers!r} (a list of layer names; [] = the "
                f"network's default)"
            )
        object.__setattr__(self, "style_layers", tuple(layers))
        if self.network != "vgg19":  # VGG-19's layers are checked when its weights are read
            self.net()

    def to_config(self) -> dict[str, Any]:
        return {
            **super().to_config(),
            "size": list(self.size),
            "style_layers": list(self.style_layers),
            "random_widths": list(self.random_widths),
        }

    # -- the pieces --------------------------------------------------------------------------------
    def net(self, device: str | torch.device = "cpu", dtype=torch.float32) -> FeatureNet:
        """The feature network (made once per process), checked against the layer options."""
        net = feature_net(
            self.network, self.weights, seed=self.network_seed, channels=self.random_channels,
            kernel=self.random_kernel, scales=self.random_scales, device=device, dtype=dtype,
            widths=self.random_widths,
        )  # fmt: skip
        self._check_layers(net)
        return net

    def _check_layers(self, net: FeatureNet) -> None:
        if self.content_layer:
            net.check_layer("content_layer", self.content_layer)
        for layer in self.style_layers:
            net.check_layer("style_layers", layer)
        height, width = self.size
        for layer in [self.content_layer or net.default_content,
                      *(self.style_layers or net.default_style)]:  # fmt: skip
            factor = net.downsampling(layer)
            if min(height, width) < factor:
                raise InvalidInput(
                    f"Invalid size: {height}x{width} (layer {layer} of the {net.kind} net sees "
                    f"the image shrunk {factor} times: at least {factor} pixels a side, or "
                    f"other layers)"
                )

    def content_files(self) -> list[Path]:
        """The photographs of ``content_split``."""
        if not self.content_dir:
            return [sample_path(name) for name in DEFAULT_CONTENT[self.content_split]]
        root = Path(self.content_dir).expanduser()
        split = root / self.content_split
        return list_images(split if split.is_dir() else root)

    def style_image(self) -> Tensor:
        """The style image (3, h, w) in [0, 1], resized as ``style_size`` says (on the CPU)."""
        style = read_image(image_path(self.style))
        side = self.style_size or min(self.size)
        h, w = style.shape[-2:]
        scale = side / min(h, w)
        return resize(style, max(1, round(h * scale)), max(1, round(w * scale)))

    def locate_data(self, download: bool = False) -> Path:
        """Read and verify every image and the network's weights before anything is written:
        DatasetError names a missing or bad file. Returns the folder of the content images."""
        if download:
            raise InvalidInput(
                "--download: the art task downloads nothing (its default images come with "
                "scikit-image and scikit-learn: pip install 'l2o[art]')"
            )
        files = self.content_files()
        for path in files:
            read_image(path)
        self.style_image()
        self.net()
        return files[0].parent

    def crop(self, photo: Tensor, g: torch.Generator) -> Tensor:
        """A crop of ``photo`` (3, h, w) resized to ``size``: random (``augment``) or centred."""
        height, width = self.size
        h, w = photo.shape[-2:]
        scale = min(h / height, w / width)  # the largest crop of the target's aspect
        if self.augment:
            fraction = self.crop_min + (1 - self.crop_min) * float(torch.rand((), generator=g))
            scale *= fraction
        ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
        if self.augment:
            top = int(torch.randint(h - ch + 1, (), generator=g))
            left = int(torch.randint(w - cw + 1, (), generator=g))
        else:
            top, left = (h - ch) // 2, (w - cw) // 2
        out = resize(photo[:, top : top + ch, left : left + cw], height, width)
        if self.augment and bool(torch.rand((), generator=g) < 0.5):
            out = out.flip(-1)
        return out

    def make_task(
        self,
        content: Tensor,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> ArtTask:
        """The task of stylising the given content images (n, 3, H, W) in [0, 1] (already
        ``size``; n = ``num_problems``), theta_0 drawn from ``seed``."""
        g = generator(seed)
        n, height, width = self.num_problems, *self.size
        if tuple(content.shape) != (n, 3, height, width):
            raise InvalidInput(
                f"Invalid content: shape {tuple(content.shape)} (expected ({n}, 3, {height}, "
                f"{width}))"
            )
        noise = self.init_noise * torch.randn((n, 3, height, width), generator=g)
        base = content.cpu().float() if self.init == "content" else torch.full_like(noise, 0.5)
        image0 = (base + noise).to(device=device, dtype=dtype)
        net = self.net(device, dtype)
        style = self.style_image().to(device=device, dtype=dtype)
        return ArtTask(self, net, content.to(device=device, dtype=dtype), style, image0)

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> ArtTask:
        g = generator(seed)
        files = self.content_files()
        contents = []
        for _ in range(self.num_problems):
            photo = read_image(files[int(torch.randint(len(files), (), generator=g))])
            contents.append(self.crop(photo, g))
        init_seed = int(torch.randint(2**62, (), generator=g))
        return self.make_task(torch.stack(contents), init_seed, device, dtype)
