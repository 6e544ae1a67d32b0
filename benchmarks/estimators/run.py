"""Benchmark: the meta-gradient estimators side by side, bias and variance (issue #26).

Truncated BPTT (first and second order, ``l2o.meta.truncated_bptt``), truncated ES, ES over the
whole horizon and PES (``l2o.meta.es``) each estimate the gradient of the meta-loss of a whole
unroll, L(phi) = sum_{t=1..T} f(theta_t): the truncated estimators by the sum of their
truncations' meta-gradients over one unroll (phi held fixed). Each estimate is drawn
``--replicates`` times (fresh perturbations) and compared with the exact gradient, second-order
backpropagation through the whole horizon, on two problems (float64):

    tiny   heavy-ball momentum with phi = (log lr, logit beta) on f = x^2 + 3 y^2 from (1, 1),
           T = 6, K = 2 (the problem of tests/test_estimators.py), sigma = 0.03
    lstm   the quadratic preset's 2x20 LSTM (fresh, seed 0; 5061 weights) on 16 of the
           paper's 10-d quadratics, T = 20, K = 5, sigma = 0.01

with N = 8 antithetic pairs (the estimators' default). It reports, per estimator, the mean
projection of an estimate on the exact gradient's direction over its norm (1 = unbiased along
it), the relative bias |E g - grad L| / |grad L| beside its noise floor (what R replicates
of an unbiased estimator would show), the relative mean squared error of one estimate, the
variance of one estimate per coordinate (mean over coordinates) times N (one pair's), the
cosine with the exact gradient, and the cost. The smoothing gap |E_eps grad L(phi + eps) -
grad L| / |grad L| and the smoothed gradient's projection (Monte Carlo) say how far the gradient
that ES estimates without bias is from the exact one at that sigma (in P dimensions |eps| is
about sigma sqrt(P)). Writes benchmarks/estimators/results/estimators.{json,md}.
Reproduce, from the repository root:

    python -m benchmarks.estimators.run      (1 torch thread; about 5 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from benchmarks.common import machine, results_dir, write_result
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.meta.es import ES, PES
from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig, StepOptimizer
from l2o.optimizers.base import flatten, unflatten
from l2o.tasks import QuadraticFamily, QuadraticTask
from l2o.tasks.base import Task

ESTIMATORS = ("tbptt", "tbptt-second-order", "truncated-es", "es", "pes")
PAIRS = 8


class Momentum(StepOptimizer):
    """m_{t+1} = beta m_t + grad_t, update = -lr m_{t+1}; phi = (log lr, logit beta)."""

    def __init__(self, log_lr: float = -2.5, logit_beta: float = 1.0) -> None:
        super().__init__()
        self.log_lr = nn.Parameter(torch.tensor(log_lr, dtype=torch.float64))
        self.logit_beta = nn.Parameter(torch.tensor(logit_beta, dtype=torch.float64))

    def init_state(self, params):
        return {"m": torch.zeros_like(flatten(params))}

    def step(self, grads, state):
        m = torch.sigmoid(self.logit_beta) * state["m"] + flatten(grads)
        return unflatten(-self.log_lr.exp() * m, grads), {"m": m}


@dataclass
class Problem:
    name: str
    description: str
    optimizer: StepOptimizer
    task: Task
    horizon: int
    truncation: int
    sigma: float

    @property
    def truncations(self) -> list[list[float]]:
        return [[1.0] * self.truncation for _ in range(self.horizon // self.truncation)]


def problems() -> list[Problem]:
    W = torch.tensor([[[1.0, 0.0], [0.0, math.sqrt(3.0)]]], dtype=torch.float64)
    tiny = QuadraticTask(W, torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2).double())
    torch.manual_seed(0)
    lstm = CoordinatewiseLSTM(LSTMConfig(preprocess="none", output_scale=0.1)).double()
    quadratics = QuadraticFamily(num_problems=16).sample(0, dtype=torch.float64)
    return [
        Problem(
            "tiny",
            "heavy-ball momentum, phi = (log lr, logit beta), on x^2 + 3 y^2",
            Momentum(),
            tiny,
            6,
            2,
            0.03,
        ),
        Problem(
            "lstm",
            "fresh 2x20 LSTM of configs/quadratic.toml on 16 10-d quadratics",
            lstm,
            quadratics,
            20,
            5,
            0.01,
        ),
    ]


def exact_gradient(optimizer: StepOptimizer, problem: Problem) -> Tensor:
    """grad L by second-order backpropagation through the whole horizon."""
    estimator = TruncatedBPTT(second_order=True)
    start = init_unroll(problem.task, optimizer)
    return flatten(
        estimator.meta_gradient(optimizer, problem.task, start, [1.0] * problem.horizon).grads
    )


def smoothed_gradient(problem: Problem, draws: int) -> tuple[Tensor, Tensor]:
    """E_eps[grad L(phi + eps)] by Monte Carlo: its mean and the standard error of each
    coordinate."""
    g = torch.Generator().manual_seed(1)
    phi = parameters_to_vector(problem.optimizer.parameters()).detach()
    samples = []
    for _ in range(draws):
        moved = copy.deepcopy(problem.optimizer)
        eps = problem.sigma * torch.randn(len(phi), generator=g, dtype=phi.dtype)
        vector_to_parameters(phi + eps, moved.parameters())
        samples.append(exact_gradient(moved, problem))
    samples = torch.stack(samples)
    return samples.mean(0), samples.std(0) / math.sqrt(draws)


def estimate(name: str, problem: Problem, g: torch.Generator) -> Tensor:
    """One estimate of grad L by ``name``: the sum of its meta-gradients over the truncations
    of one unroll (ES: one call over the whole horizon)."""
    optimizer, task = problem.optimizer, problem.task
    if name == "es":
        weights = [1.0] * problem.horizon
        es = ES(sigma=problem.sigma, pairs=PAIRS)
        return flatten(
            es.meta_gradient(optimizer, task, init_unroll(task, optimizer), weights, g).grads
        )
    total = torch.zeros(sum(p.numel() for p in optimizer.parameters()), dtype=torch.float64)
    if name == "pes":
        pes = PES(sigma=problem.sigma, pairs=PAIRS)
        pes_state = pes.init(optimizer, task)
        for weights in problem.truncations:
            result, pes_state = pes.meta_gradient(optimizer, task, pes_state, weights, g)
            total += flatten(result.grads)
        return total
    estimator = {
        "tbptt": TruncatedBPTT(),
        "tbptt-second-order": TruncatedBPTT(second_order=True),
        "truncated-es": ES(sigma=problem.sigma, pairs=PAIRS),
    }[name]
    state = init_unroll(task, optimizer)
    for weights in problem.truncations:
        kwargs = {"generator": g} if name == "truncated-es" else {}
        result = estimator.meta_gradient(optimizer, task, state, weights, **kwargs)
        state, total = result.state, total + flatten(result.grads)
    return total


def unrolled_steps(name: str, problem: Problem) -> int:
    """Inner steps one estimate takes, every particle counted (BPTT also backpropagates)."""
    return problem.horizon * (1 if name.startswith("tbptt") else 2 * PAIRS + 1)


def measure(name: str, problem: Problem, exact: Tensor, replicates: int) -> dict:
    deterministic = name.startswith("tbptt")
    g = torch.Generator().manual_seed(2)
    start = time.perf_counter()
    samples = torch.stack(
        [estimate(name, problem, g) for _ in range(1 if deterministic else replicates)]
    )
    seconds = (time.perf_counter() - start) / len(samples)
    norm = exact.norm()
    projection = samples @ exact / norm**2
    mean = samples.mean(0)
    variance = samples.var(0) if not deterministic else torch.zeros_like(mean)
    return {
        "replicates": len(samples),
        "projection": float(projection.mean()),
        "projection_se": float(projection.std() / math.sqrt(len(samples)))
        if not deterministic
        else 0.0,
        "relative_bias": float((mean - exact).norm() / norm),
        "noise_floor": float((variance.sum() / len(samples)).sqrt() / norm),
        "relative_mse": float(((samples - exact).norm(dim=1) ** 2).mean() / norm**2),
        "variance_per_coordinate": float(variance.mean()),
        "variance_per_coordinate_per_pair": float(variance.mean() * PAIRS)
        if not deterministic
        else 0.0,
        "cosine": float(torch.nn.functional.cosine_similarity(samples, exact[None]).mean()),
        "unrolled_steps": unrolled_steps(name, problem),
        "seconds": seconds,
        "mean": [round(float(x), 4) for x in mean] if len(mean) <= 4 else None,
    }


def markdown(result: dict) -> list[str]:
    lines = [
        "# Meta-gradient estimators: bias and variance",
        "",
        "Each estimate of the gradient of L(phi) = sum_{t=1..T} f(theta_t) over one unroll "
        "(truncated estimators: the sum over the unroll's truncations, phi fixed), against "
        "the exact gradient (second-order backprop through the whole horizon). "
        f"N = {PAIRS} antithetic pairs. *projection*: E[g . grad L] / |grad L|^2 "
        "(1 = unbiased along grad L); *bias*: |mean g - grad L| / |grad L|, beside the noise "
        "floor of the replicates' mean; *rel. MSE*: E|g - grad L|^2 / |grad L|^2 of one "
        "estimate; *var/coord x N*: the variance of one estimate's coordinates (mean over "
        "coordinates) times N, i.e. one pair's.",
    ]
    for p in result["problems"].values():
        lines += [
            "",
            f"## {p['name']}: {p['description']}",
            "",
            f"{p['parameters']} optimizer parameters, T = {p['horizon']}, K = {p['truncation']}, "
            f"sigma = {p['sigma']}; |grad L| = {p['exact_norm']:.4g}. The smoothed gradient "
            "E_eps[grad L(phi + eps)] (ES's target; PES's with one eps for the whole unroll) "
            f"differs from grad L by {p['smoothing_gap']:.3g} of |grad L| (Monte Carlo noise "
            f"{p['smoothing_gap_noise']:.2g}); its projection is {p['smoothed_projection']:.3f} "
            f"± {p['smoothed_projection_se']:.3f}.",
            "",
            "| estimator | replicates | projection | bias (noise floor) | rel. MSE | "
            "var/coord x N | cosine | steps | s/estimate |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in p["estimators"].items():
            lines.append(
                f"| {name} | {m['replicates']} | {m['projection']:.3f} ± {m['projection_se']:.3f} "
                f"| {m['relative_bias']:.3f} ({m['noise_floor']:.3f}) | {m['relative_mse']:.3g} "
                f"| {m['variance_per_coordinate_per_pair']:.3g} | {m['cosine']:.3f} "
                f"| {m['unrolled_steps']} | {m['seconds']:.3f} |"
            )
        if p["estimators"]["es"]["mean"] is not None:
            lines += ["", f"grad L = {p['exact']}; the estimators' means:", ""]
            lines += [f"- {n}: {m['mean']}" for n, m in p["estimators"].items()]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--replicates",
        type=int,
        nargs=2,
        default=[1000, 200],
        metavar=("TINY", "LSTM"),
        help="estimates drawn per estimator",
    )
    parser.add_argument("--smoothing-draws", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=str(results_dir("estimators")))
    parser.add_argument("--name", default="estimators")
    parser.add_argument("--note", default="", help="a sentence for the .md (e.g. machine load)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"pairs": PAIRS, "problems": {}, "note": args.note, "machine": machine()}
    for problem, replicates in zip(problems(), args.replicates):
        exact = exact_gradient(problem.optimizer, problem)
        smoothed, smoothed_se = smoothed_gradient(problem, args.smoothing_draws)
        norm = float(exact.norm())
        result["problems"][problem.name] = {
            "name": problem.name,
            "description": problem.description,
            "parameters": len(exact),
            "horizon": problem.horizon,
            "truncation": problem.truncation,
            "sigma": problem.sigma,
            "exact_norm": norm,
            "exact": [round(float(x), 4) for x in exact] if len(exact) <= 4 else None,
            "smoothing_gap": float((smoothed - exact).norm()) / norm,
            "smoothing_gap_noise": float(smoothed_se.norm()) / norm,
            "smoothed_projection": float(smoothed @ exact) / norm**2,
            "smoothed_projection_se": float((smoothed_se * exact).norm()) / norm**2,
            "estimators": {name: measure(name, problem, exact, replicates) for name in ESTIMATORS},
        }
        print(f"{problem.name} done", file=sys.stderr)
    write_result(args.out, args.name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
