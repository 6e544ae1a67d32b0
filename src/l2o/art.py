"""Stylise a picture with any optimizer, learned or hand-designed (the paper's section 3.4).

    import l2o.art

    result = l2o.art.stylise("photo.jpg", "painting.png", optimizer="adam", steps=128)
    l2o.art.save_image("out.png", result.image)

or, from the command line, ``l2o art --content photo.jpg --style painting.png --optimizer adam
--steps 128 --out out.png``. The problem is the art task's (``l2o.tasks.art``): its options
(network, layers, weights of the three terms, theta_0) are keyword arguments here and
``--set task.KEY=VALUE`` there. The optimizer runs exactly as in evaluation (``rollout``: a
fresh state, ``steps`` steps from theta_0).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from l2o.checks import check_positive_int, is_int
from l2o.data.pictures import image_path, read_image, write_image
from l2o.devices import check_device
from l2o.errors import InvalidInput
from l2o.optimizers import BASELINES, StepOptimizer, make_baseline
from l2o.tasks.art import MAX_SIZE, ArtFamily, resize

# Learning rates of the hand-designed optimizers when none is given: near the best final loss
# after 128 steps on the default task (random net, 64x64, normalised terms) over a log grid of
# 4 per decade, on two validation content images, one grid point lower where the best one was
# next to a diverging one. Another network or weighting may want others.
DEFAULT_LR = {"adam": 0.1, "rmsprop": 0.005, "sgd": 50.0, "nag": 30.0, "lbfgs": 0.3}
DEFAULT_SIDE = 256  # the longer side of the image when no size is given and the photo is larger


@dataclass
class Stylised:
    """What ``stylise`` made: the picture and how it got there."""

    image: Tensor  # (3, H, W) in [0, 1], on the CPU
    losses: Tensor  # f(theta_t) for t = 0 .. steps, (steps + 1,)
    terms: dict[str, float]  # the unweighted content, style and tv terms of the final image
    optimizer: str  # which optimizer, e.g. "adam (lr 0.1)" or "art-lstm"
    network: str  # which feature network measured content and style
    seconds: float  # wall-clock of the optimization
    task: dict[str, Any] = field(default_factory=dict)  # the art task's options


def image_size(content: tuple[int, int], size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the image made from a content picture of ``content`` pixels: ``size`` (H, W)
    as given; an int N, the longer side N with the picture's aspect kept; None, the picture's
    own size, shrunk to a longer side of ``DEFAULT_SIDE`` if it is larger."""
    h, w = content
    if isinstance(size, (tuple, list)):
        if not (len(size) == 2 and all(is_int(s) and 1 <= s <= MAX_SIZE for s in size)):
            raise InvalidInput(f"Invalid size: {size!r} (a side or (height, width), 1..{MAX_SIZE})")
        return int(size[0]), int(size[1])
    if size is None:
        side = min(max(h, w), DEFAULT_SIDE)
    elif is_int(size) and 1 <= size <= MAX_SIZE:
        side = size
    else:
        raise InvalidInput(f"Invalid size: {size!r} (a side or (height, width), 1..{MAX_SIZE})")
    scale = side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resolve_optimizer(
    optimizer: str | Path | StepOptimizer, lr: float | None
) -> tuple[StepOptimizer, str]:
    """The optimizer and how results name it: a hand-designed one by name (``BASELINES``, with
    ``lr`` or its ``DEFAULT_LR``), a learned one (a pretrained name, checkpoint or run
    directory), or an optimizer object."""
    if isinstance(optimizer, StepOptimizer):
        if lr is not None:
            raise InvalidInput("lr is for a hand-designed optimizer given by name")
        return optimizer, type(optimizer).__name__
    if isinstance(optimizer, str) and optimizer in BASELINES:
        rate = DEFAULT_LR[optimizer] if lr is None else lr
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not 0 < rate < float("inf")
        ):
            raise InvalidInput(f"Invalid lr: {lr!r} (must be a number > 0)")
        return make_baseline(optimizer, float(rate)), f"{optimizer} (lr {rate:g})"
    if lr is not None:
        raise InvalidInput(
            f"lr is for a hand-designed optimizer ({', '.join(BASELINES)}), not {str(optimizer)!r}"
        )
    from l2o.checkpoint import load_checkpoint, resolve

    learned, record = load_checkpoint(resolve(optimizer))
    if record["optimizer"].get("kind") == "grouped":
        raise InvalidInput(
            f"{optimizer} has parameter groups made for another task's parameters; the art "
            f"task has one parameter (the image): use an optimizer without groups"
        )
    return learned, str(optimizer)


def stylise(
    content: str | Path | Tensor,
    style: str | Path = "skimage/ihc",
    optimizer: str | Path | StepOptimizer = "adam",
    steps: int = 128,
    *,
    lr: float | None = None,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    device: str = "cpu",
    **task_options: Any,
) -> Stylised:
    """Stylise ``content`` (a PNG/JPEG path, a sample name such as ``sklearn/china``, or a
    tensor (3, H, W) in [0, 1]) in the style of ``style`` (a path or a sample name) by
    ``steps`` steps of ``optimizer`` (see ``resolve_optimizer``) from theta_0 drawn from
    ``seed``. ``size`` is the image's size (see ``image_size``); ``task_options`` are the
    art task's other options (``network="vgg19"``, ``content_weight=4.0``, ``init="content"``,
    ...; see ``l2o.tasks.art.ArtFamily``)."""
    from l2o.evaluate.rollout import rollout

    check_positive_int("steps", steps)
    check_device(device)
    valid = {f.name for f in fields(ArtFamily)} - {"size", "style", "num_problems"}
    unknown = sorted(set(task_options) - valid)
    if unknown:
        raise InvalidInput(
            f"unknown art task option(s) {', '.join(unknown)} (valid: {', '.join(sorted(valid))})"
        )
    if isinstance(content, Tensor):
        if content.dim() != 3 or content.shape[0] != 3:
            raise InvalidInput(
                f"Invalid content: shape {tuple(content.shape)} (expected (3, H, W))"
            )
        picture = content.detach().float().cpu()
    else:
        picture = read_image(image_path(content))
    height, width = image_size(tuple(picture.shape[-2:]), size)
    family = ArtFamily(size=(height, width), style=str(style), **task_options)
    family.style_image()  # a bad style file fails here, before any work
    step_optimizer, name = resolve_optimizer(optimizer, lr)
    task = family.make_task(resize(picture, height, width).unsqueeze(0), seed, device)
    result = rollout(step_optimizer.to(device), task, steps)
    with torch.no_grad():
        terms = {k: float(v[0]) for k, v in task.terms(result.params).items()}
    return Stylised(
        image=task.images(result.params)[0].cpu(),
        losses=result.losses[:, 0],
        terms=terms,
        optimizer=name,
        network=task.net.description,
        seconds=result.seconds,
        task=family.to_config(),
    )


def save_image(path: str | Path, image: Tensor) -> Path:
    """Write ``image`` (3, H, W) in [0, 1] as PNG or JPEG (by the suffix), atomically."""
    return write_image(path, image)


__all__ = ["DEFAULT_LR", "Stylised", "image_size", "resolve_optimizer", "save_image", "stylise"]
