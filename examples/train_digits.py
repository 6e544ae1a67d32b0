"""Train a small MLP on scikit-learn's 8x8 digits with Adam or a learned optimizer.

A plain PyTorch training loop: the only line that changes between Adam and a learned optimizer
is the one that builds the optimizer. The chosen optimizer and Adam (the baseline) train the same
network from the same initialisation on the same batches; both training-loss curves go into one
PNG and the test accuracies are printed.

    python examples/train_digits.py                              # Adam only
    python examples/train_digits.py --optimizer mnist-mlp-lstm   # a shipped pretrained optimizer
    python examples/train_digits.py --optimizer runs/quadratic   # a run directory or checkpoint

The network is the paper's MNIST optimizee at digits scale (Andrychowicz et al. 2016, section
3.2): one hidden layer of 20 sigmoid units, batches of 128. Needs scikit-learn (for the data set,
which it ships) and matplotlib.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

import l2o
from l2o.errors import L2OError


def digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 1437 / 360 images of 64 pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = order[:1437], order[1437:]
    return x[train], y[train], x[test], y[test]


def make_optimizer(name: str, params, adam_lr: float) -> torch.optim.Optimizer:
    """The one line that differs: torch's Adam, or a learned optimizer as a torch optimizer."""
    if name == "adam":
        return torch.optim.Adam(params, lr=adam_lr)
    return l2o.optim.LearnedOptimizer(params, optimizer=name)


def train(name: str, args: argparse.Namespace, data) -> tuple[list[float], float, float]:
    """Train from the same initialisation and batches as every other run.

    Returns (training loss of each batch, test accuracy, seconds).
    """
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(64, args.hidden), nn.Sigmoid(), nn.Linear(args.hidden, 10))
    optimizer = make_optimizer(name, model.parameters(), args.adam_lr)
    batches = torch.Generator().manual_seed(args.seed + 1)
    losses = []
    start = time.perf_counter()
    for _ in range(args.steps):
        index = torch.randint(len(x_train), (args.batch_size,), generator=batches)
        loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    return losses, accuracy, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--optimizer",
        default="adam",
        help="adam, a pretrained name (see `l2o pretrained`), a checkpoint or a run directory",
    )
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=20, help="hidden sigmoid units")
    parser.add_argument("--adam-lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="digits.png", help="PNG of the loss curves")
    args = parser.parse_args()
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            parser.error(f"Invalid {flag}: {value} (must be >= 1)")

    names = ["adam"] if args.optimizer == "adam" else [args.optimizer, "adam"]
    if args.optimizer != "adam":
        try:  # fail before any training if the name or path is wrong
            l2o.load(args.optimizer)
        except L2OError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    data = digits(args.seed)
    curves = {}
    for name in names:
        losses, accuracy, seconds = train(name, args, data)
        curves[name] = losses
        print(
            f"{name:<20} final training loss {sum(losses[-10:]) / 10:.4f}  "
            f"test accuracy {accuracy:.3f}  {seconds:.2f}s for {args.steps} steps"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_yscale("log")
    ax.set_title(f"8x8 digits, MLP 64-{args.hidden}-10 (sigmoid), batch {args.batch_size}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
