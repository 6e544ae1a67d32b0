"""The fixed convolutional networks in whose features the neural art task measures content and
style (Gatys et al. 2015): VGG-19 from a weights file, or a seeded random multi-scale net.

Both map images (B, 3, H, W) in [0, 1], normalised by ImageNet's channel mean and standard
deviation as VGG expects, to named feature maps (B, C, h, w); only the layers asked for (and
those before them) are computed.

**VGG-19** (Simonyan & Zisserman 2015), the layout of torchvision's ``vgg19().features``: 16
3x3 convolutions with zero padding 1, each followed by a ReLU, in five blocks ending with 2x2
max pooling. Layers are named as Gatys et al. name them, ``conv{block}_{i}`` (the convolution's
output), ``relu{block}_{i}`` (after its ReLU) and ``pool{block}``; the weights are torchvision's
names, ``features.{index}.weight`` and ``.bias`` (``VGG19_LAYERS`` lists the index of each
layer). ``load_vgg19(path)`` reads a state dict saved by torch (``torch.load`` with
``weights_only=True``: tensors and plain containers only, nothing else is ever unpickled) or a
safetensors file, keeps ``features.*`` (``classifier.*`` is ignored) and checks the structure:
every convolution present, 3x3, its input channels those of the convolution before it (3 for the
first), its bias matching; the widths are not fixed, so a narrower net of the same layout loads
too (the tests write one). A file named like torch hub's downloads (``vgg19-dcbb9e9d.pth``) must
have a SHA-256 that starts with the digits in its name, as torch hub checks. Every problem is one
line naming the file.

Where the weights are looked for when ``task.weights`` is empty (``find_vgg19``): files named
``vgg19*.pth`` or ``vgg19*.safetensors`` in ``$L2O_DATA`` (else ``~/.cache/l2o/data``), then in
torch hub's checkpoint folder (``torch.hub.get_dir()/checkpoints``, where
``torchvision.models.vgg19(weights="DEFAULT")`` saves ``vgg19-dcbb9e9d.pth``). Nothing is
downloaded.

**The random multi-scale net** (the offline default): random filters synthesise textures nearly
as well as trained ones when they span several scales (Ustyuzhaninov et al. 2017, "What does it
take to generate natural textures?"). Layer ``scale{s}`` is ReLU(conv(avg_pool_{2^s}(x))):
``channels`` random k x k filters, ~ N(0, 2 / fan_in) (He et al.'s scale for ReLU), on the image
averaged over 2^s x 2^s blocks, so its receptive field is k 2^s pixels. The filters are drawn
from ``seed`` alone: the same net on every machine.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from l2o.data.idx import DatasetError
from l2o.errors import InvalidInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (block, convolutions) of VGG-19: 2, 2, 4, 4, 4 convolutions; widths 64 ... 512
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))


def _vgg19_layers() -> dict[str, int]:
    """{layer name: index in torchvision's ``vgg19().features``}."""
    layers, index = {}, 0
    for block, convs, _ in _BLOCKS:
        for i in range(1, convs + 1):
            layers[f"conv{block}_{i}"], layers[f"relu{block}_{i}"] = index, index + 1
            index += 2
        layers[f"pool{block}"] = index
        index += 1
    return layers


VGG19_LAYERS: dict[str, int] = _vgg19_layers()
VGG19_CONVS: tuple[int, ...] = tuple(i for n, i in VGG19_LAYERS.items() if n.startswith("conv"))
VGG19_WIDTHS: tuple[int, ...] = tuple(w for _, convs, w in _BLOCKS for _ in range(convs))
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass
class FeatureNet:
    """A fixed network: ``features(images, layers)`` -> {layer: (B, C, h, w)}.

    ``ops`` run in order: ("conv", name, weight, bias, padding), ("relu", name),
    ("pool", name, factor) for 2x2 max pooling, or ("scale", name, weight, factor) for the
    random net's ReLU(conv(avg_pool(x))) on the input image."""

    kind: str  # "vgg19" or "random"
    description: str  # what results say they used
    ops: list[tuple]
    default_content: str
    default_style: tuple[str, ...]

    @property
    def layers(self) -> list[str]:
        return [op[1] for op in self.ops]

    def downsampling(self, layer: str) -> int:
        """How many times smaller than the image the feature maps of ``layer`` are."""
        factor = 1
        for op in self.ops:
            if op[0] == "pool":
                factor *= 2
            if op[1] == layer:
                return op[3] if op[0] == "scale" else factor
        raise KeyError(layer)

    def check_layer(self, option: str, layer: str) -> None:
        if layer not in self.layers:
            shown = ", ".join(self.layers)
            raise InvalidInput(
                f"Invalid {option}: {layer!r} is not a layer of {self.kind} ({shown})"
            )

    def to(self, device: str | torch.device, dtype: torch.dtype) -> FeatureNet:
        ops = [
            tuple(x.to(device=device, dtype=dtype) if isinstance(x, Tensor) else x for x in op)
            for op in self.ops
        ]
        return FeatureNet(
            self.kind, self.description, ops, self.default_content, self.default_style
        )

    def features(self, images: Tensor, layers: set[str] | list[str]) -> dict[str, Tensor]:
        """images (B, 3, H, W) in [0, 1] -> {layer: features (B, C, h, w)} for ``layers``."""
        wanted, out = set(layers), {}
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        image = (images - mean) / std
        x = image
        for op in self.ops:
            if not wanted - out.keys():
                break
            if op[0] == "conv":
                x = F.conv2d(x, op[2], op[3], padding=op[4])
            elif op[0] == "relu":
                x = torch.relu(x)
            elif op[0] == "pool":
                x = F.max_pool2d(x, 2)
            else:  # "scale": on the image itself
                kernel = op[2].shape[-1]
                pooled = F.avg_pool2d(image, op[3]) if op[3] > 1 else image
                x = torch.relu(F.conv2d(pooled, op[2], padding=kernel // 2))
            if op[1] in wanted:
                out[op[1]] = x
        return out


# -- the random multi-scale net ----------------------------------------------------------------
def random_net(seed: int = 0, channels: int = 32, kernel: int = 5, scales: int = 4) -> FeatureNet:
    """The seeded random multi-scale net: layers ``scale0`` ... ``scale{scales-1}``."""
    g = torch.Generator().manual_seed(seed)
    ops = []
    for s in range(scales):
        fan_in = 3 * kernel * kernel
        weight = torch.randn(channels, 3, kernel, kernel, generator=g) * (2 / fan_in) ** 0.5
        ops.append(("scale", f"scale{s}", weight, 2**s))
    description = (
        f"random multi-scale net (seed {seed}, {scales} scales x {channels} filters of "
        f"{kernel}x{kernel})"
    )
    content = f"scale{min(1, scales - 1)}"
    return FeatureNet(
        "random", description, ops, content, tuple(f"scale{s}" for s in range(scales))
    )


# -- VGG-19 --------------------------------------------------------------------------------------
def weights_roots() -> list[Path]:
    """Where VGG-19 weights are looked for: $L2O_DATA (else ~/.cache/l2o/data), torch hub's
    checkpoint folder."""
    env = os.environ.get("L2O_DATA")
    data = Path(env).expanduser() if env else Path("~/.cache/l2o/data").expanduser()
    return [data, Path(torch.hub.get_dir()) / "checkpoints"]


def find_vgg19(weights: str | Path = "") -> Path:
    """The VGG-19 weights file: ``weights`` when given, else the first ``vgg19*`` file with a
    suffix of ``WEIGHT_SUFFIXES`` in ``weights_roots()``."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DatasetError(f"VGG-19 weights file {path} not found")
        return path
    roots = weights_roots()
    for root in roots:
        if root.is_dir():
            found = sorted(
                p for p in root.iterdir()
                if p.is_file() and p.name.startswith("vgg19") and p.suffix in WEIGHT_SUFFIXES
            )  # fmt: skip
            if found:
                return found[0]
    raise DatasetError(
        f"no VGG-19 weights file (vgg19*.pth or vgg19*.safetensors) in {' or '.join(map(str, roots))}; "
        f"set task.weights to torchvision's vgg19 weights (a state dict, .pth, or .safetensors), "
        f'or use task.network = "random"'
    )


def _check_digest(path: Path) -> None:
    """torch hub's rule: a file named NAME-<hex>.pth must have a SHA-256 starting with <hex>."""
    match = re.search(r"-([0-9a-f]{8,64})\.pth$", path.name)
    if match is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise DatasetError(
            f"{path} is corrupt: its sha256 {digest.hexdigest()[:16]}... does not start with the "
            f"{match.group(1)} in its name; download it again"
        )


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a torch state dict (.pth, .pt; loaded with ``weights_only=True``) or a
    safetensors file; a ``{"state_dict": {...}}`` wrapper is unwrapped, ``module.`` prefixes
    dropped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                state = load_file(str(path), device="cpu")
            except SafetensorError as e:
                raise ValueError(str(e)) from e
        else:
            with warnings.catch_warnings():  # the refusal below says it all
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, KeyError,
            AttributeError, IndexError, zipfile.BadZipFile, UnicodeDecodeError) as e:  # fmt: skip
        # weights_only refuses any object that is not a tensor or a plain container
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "safetensors" if path.suffix == ".safetensors" else "torch state dict"
        raise DatasetError(f"cannot load {path}: not a {kind} file ({first[:200]})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise DatasetError(f"{path} is not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def vgg19_from_state_dict(state: dict[str, Tensor], source: str) -> FeatureNet:
    """VGG-19's ``features`` from a state dict with torchvision's names (``features.0.weight``
    ..., or ``0.weight`` ... of ``vgg19().features`` alone), its structure checked."""
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    index_of = {i: name for name, i in VGG19_LAYERS.items()}
    ops, channels = [], 3
    for index, name in sorted(index_of.items()):
        if name.startswith("relu"):
            ops.append(("relu", name))
        elif name.startswith("pool"):
            ops.append(("pool", name, 2))
        else:
            weight_key, bias_key = f"{prefix}{index}.weight", f"{prefix}{index}.bias"
            for key in (weight_key, bias_key):
                if key not in state:
                    raise DatasetError(
                        f"{source} is not a VGG-19 state dict: {key} is missing (VGG-19 has 16 "
                        f"convolutions, features.{VGG19_CONVS[0]} ... features.{VGG19_CONVS[-1]})"
                    )
            weight, bias = state[weight_key], state[bias_key]
            if (
                weight.dim() != 4
                or tuple(weight.shape[1:]) != (channels, 3, 3)
                or tuple(bias.shape) != (weight.shape[0],)
            ):
                raise DatasetError(
                    f"{source} is not a VGG-19 state dict: {weight_key} has shape "
                    f"{tuple(weight.shape)} and {bias_key} {tuple(bias.shape)} (expected "
                    f"(C, {channels}, 3, 3) and (C,): {name} takes the {channels} channels "
                    f"before it)"
                )
            if not (weight.is_floating_point() and bias.is_floating_point()):
                raise DatasetError(f"{source}: {weight_key} and {bias_key} must be floating point")
            if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
                raise DatasetError(f"{source}: {weight_key} or {bias_key} is not finite")
            ops.append(("conv", name, weight.float().clone(), bias.float().clone(), 1))
            channels = weight.shape[0]
    widths = [op[2].shape[0] for op in ops if op[0] == "conv"]
    size = "" if tuple(widths) == VGG19_WIDTHS else f", widths {widths}"
    return FeatureNet(
        "vgg19",
        f"VGG-19 ({source}{size})",
        ops,
        "relu4_2",  # Gatys et al.: content at conv4_2 (its rectified responses)
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
    )


def random_vgg19(seed: int = 0, widths: tuple[int, ...] = (16, 32, 64, 64, 64)) -> FeatureNet:
    """VGG-19's layout (its 16 convolutions, ReLUs, poolings and layer names) with seeded random
    filters: He initialisation N(0, 2 / fan_in), zero biases, ``widths`` channels in its five
    blocks (VGG-19: 64, 128, 256, 512, 512). A deep random net, offline: its losses are far
    harder to minimise than the multi-scale net's (docs/experiments/art.md)."""
    g = torch.Generator().manual_seed(seed)
    state, channels = {}, 3
    for (block, convs, _), width in zip(_BLOCKS, widths, strict=True):
        for i in range(1, convs + 1):
            index = VGG19_LAYERS[f"conv{block}_{i}"]
            std = (2 / (9 * channels)) ** 0.5
            state[f"{index}.weight"] = torch.randn(width, channels, 3, 3, generator=g) * std
            state[f"{index}.bias"] = torch.zeros(width)
            channels = width
    return vgg19_from_state_dict(state, f"random filters, seed {seed}")


_CACHE: dict[tuple, FeatureNet] = {}


def load_vgg19(path: str | Path) -> FeatureNet:
    """VGG-19 from the weights file ``path`` (see the module doc), read and checked once per
    process (cached while the file's size and mtime stay the same)."""
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except OSError as e:
        raise DatasetError(f"cannot read VGG-19 weights {path}: {e.strerror or e}") from e
    key = ("vgg19", str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _check_digest(path)
        _CACHE[key] = vgg19_from_state_dict(read_state_dict(path), str(path))
    return _CACHE[key]


def feature_net(
    network: str,
    weights: str = "",
    seed: int = 0,
    channels: int = 32,
    kernel: int = 5,
    scales: int = 4,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    widths: tuple[int, ...] = (16, 32, 64, 64, 64),
) -> FeatureNet:
    """The network named ``network`` ("vgg19", "random-vgg19" or "random") on ``device``, made
    once per process."""
    if network == "vgg19":
        base = load_vgg19(find_vgg19(weights))
        key: tuple = (id(base),)
    elif network == "random-vgg19":
        key = ("random-vgg19", seed, tuple(widths))
        if key not in _CACHE:
            _CACHE[key] = random_vgg19(seed, tuple(widths))
        base = _CACHE[key]
    else:
        key = ("random", seed, channels, kernel, scales)
        if key not in _CACHE:
            _CACHE[key] = random_net(seed, channels, kernel, scales)
        base = _CACHE[key]
    on_device = (*key, str(torch.device(device)), dtype)
    if on_device not in _CACHE:
        _CACHE[on_device] = base.to(device, dtype)
    return _CACHE[on_device]
