"""Screen (issue #27): on which art problem can the final loss at step 128 separate optimizers?

For each candidate setting of the art family: tuned Adam and tuned NAG (each learning rate the
best at step 128 on 2 validation images, over a log grid), then each for 1000 steps on 4 held-out
images (content_split "test"); f* of an image is the lowest loss either long run reached. A
setting where tuned Adam's f(theta_128) is f* leaves no optimizer room to beat it (the default
problem: docs/experiments/art.md); the ratio f(theta_128) / f* is the room. Cheap (about a
minute a setting at 64x64, one thread); the full benchmark is ``benchmarks.art.run``.

    python -m benchmarks.art.screen

Writes benchmarks/art/results/art-screen.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from benchmarks.common import machine, results_dir, write_result
from l2o.devices import flush_denormals
from l2o.evaluate import rollout
from l2o.optimizers import NAG, Adam
from l2o.tasks.art import ArtFamily

SETTINGS = {
    "default": {},
    "style x100": {"style_weight": 100.0},
    "noise 1.0 + style x100": {"init_noise": 1.0, "style_weight": 100.0},
    "texture only": {"content_weight": 0.0, "tv_weight": 0.0},
    "random-vgg19": {"network": "random-vgg19"},
}
GRID = [10 ** (k / 3) for k in range(-9, 4)]  # Adam: 1e-3 .. 10; NAG: 100 times these


def mean_final(optimizer, tasks, steps: int) -> float:
    finals = [float(rollout(optimizer, t, steps).losses[-1].mean()) for t in tasks]
    mean = sum(finals) / len(finals)
    return mean if math.isfinite(mean) else math.inf


def screen(options: dict) -> dict:
    test = ArtFamily(content_split="test", **options)
    validation = ArtFamily(content_split="validation", **options)
    val_tasks = [validation.sample(100 + k) for k in range(2)]
    test_tasks = [test.sample(k) for k in range(4)]
    out: dict = {"options": options}
    for name, make, grid in (
        ("adam", lambda lr: Adam(lr=lr), GRID),
        ("nag", lambda lr: NAG(lr=lr), [100 * x for x in GRID]),
    ):
        scores = {lr: mean_final(make(lr), val_tasks, 128) for lr in grid}
        best = min(scores, key=scores.get)
        curves = [rollout(make(best), t, 1000).losses.mean(1).double() for t in test_tasks]
        out[name] = {
            "lr": best,
            "lr_at_grid_edge": best in (grid[0], grid[-1]),
            "f0": [float(c[0]) for c in curves],
            "f128": [float(c[128]) for c in curves],
            "f1000_min": [float(c.nan_to_num(math.inf).min()) for c in curves],
        }
    fstar = [min(a, n) for a, n in zip(out["adam"]["f1000_min"], out["nag"]["f1000_min"])]
    out["fstar"] = fstar
    out["adam_f128_over_fstar"] = [a / f for a, f in zip(out["adam"]["f128"], fstar)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", help="comma-separated names (default: all)")
    parser.add_argument("--out", default=str(results_dir("art")))
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.settings.split(",") if args.settings else list(SETTINGS)
    result: dict = {"settings": {}, "note": args.note}
    rows = []
    with flush_denormals():
        for name in names:
            started = time.perf_counter()
            r = screen(SETTINGS[name])
            r["seconds"] = time.perf_counter() - started
            result["settings"][name] = r
            ratios = r["adam_f128_over_fstar"]
            rows.append(
                f"| {name} | `{r['options']}` | {r['adam']['lr']:.3g} | "
                f"{sum(r['adam']['f128']) / 4:.4g} | {sum(r['fstar']) / 4:.4g} | "
                f"{min(ratios):.3f}-{max(ratios):.3f} | {r['nag']['lr']:.3g} | "
                f"{sum(r['nag']['f128']) / 4:.4g} |"
            )
            print(rows[-1], flush=True)
    result["machine"] = machine()
    lines = [
        "# Screen: where can the final loss at step 128 separate optimizers? (#27)",
        "",
        "Tuned Adam and NAG (rates tuned at step 128 on 2 validation images) on 4 held-out "
        "images for 1000 steps; f* of an image: the lowest loss either reached "
        "(`benchmarks/art/screen.py`; 64x64, the training style). Adam f(θ₁₂₈) / f*: the room "
        "an optimizer has under tuned Adam at step 128, per image.",
        "",
        "| setting | options | Adam lr | Adam f(θ₁₂₈) | f* | Adam f(θ₁₂₈) / f* | NAG lr | "
        "NAG f(θ₁₂₈) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_result(args.out, "art-screen", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
