"""Screen (issue #26): a parameter-relative start and a horizon-aware decay for the rate rule.

The generalist's best so far is a hand-written rule (``benchmarks/generalist/screen.py``): Adam
from 0.01 whose log rate per tensor follows the normalised hypergradient cos(g_t, d_{t-1}). Its
two failures on the held-out suite are the start (tuned Adam's rate spans 0.0018-1.78 over the
suite: the quadratics need 178 times 0.01 and the rule spends its first steps getting there) and
the end (tuned Adam's rate falls with the horizon, 0.0178 at 100 steps and 0.0032 at 10,000 on
the same MLP: the rule does not anneal). Tuned Adam's rate over the RMS of the initial
parameters spans 0.023-1.8 instead (the quadratics' and the sigmoid MLP's 1.8 at 100 steps),
which suggests Adafactor's relative step size (Shazeer & Stern 2018: the step is relative to the
parameter's RMS). This screen measures, before any of it goes into the learned optimizer, a
hand-written candidate:

    d_t = m_hat_t / (sqrt(v_hat_t) + eps)                   Adam's direction (0.9, 0.999)
    a_j += beta cos(g_t, d_{t-1})  over tensor j, within +-7  (the rule of screen.py)
    lr_j = c max(RMS(theta_j), 1e-3) exp(a_j) s(t / T)       ("relative"; "absolute": 0.01 exp(a_j))
    theta_j -= lr_j d_t

with s = 1 (no decay) or s(x) = (1 + cos(pi x)) / 2 (cosine to 0 at the horizon T, which the
rule is told). Each candidate runs on the suite's test tasks against the stored tuned Adam,
as screen.py (the same tasks and seeds; problems stepped apart).

    python -m benchmarks.generalist.relative [--candidates NAME,...] [--entries a,b]

Writes benchmarks/generalist/results/generalist-relative.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from benchmarks.common import ROOT, machine, results_dir, write_result
from benchmarks.generalist.screen import tuned_adam_rerun
from l2o.evaluate.compare import run_on_tasks
from l2o.evaluate.suite import SUITE, select
from l2o.optimizers.base import OptState, StepOptimizer

SUITE_RESULT = ROOT / "benchmarks/generalist/results/generalist.json"


@dataclass(frozen=True)
class Candidate:
    relative: bool  # lr_j = c RMS(theta_j) ... (True) or 0.01 ... (False)
    c: float  # the relative rate (relative only)
    beta: float  # the hypergradient gain (0: none)
    decay: bool  # cosine to 0 at the horizon


CANDIDATES = {
    "absolute, beta 0.3": Candidate(False, 0.0, 0.3, False),  # screen.py's rule (a check)
    "absolute, beta 0.3, cosine": Candidate(False, 0.0, 0.3, True),
    "relative 0.3, no adaptation, cosine": Candidate(True, 0.3, 0.0, True),
    "relative 0.3, beta 0.3": Candidate(True, 0.3, 0.3, False),
    "relative 0.3, beta 0.3, cosine": Candidate(True, 0.3, 0.3, True),
    "relative 0.3, beta 0.1, cosine": Candidate(True, 0.3, 0.1, True),
}


class RateRule(StepOptimizer):
    """The candidate rule (module doc) for a horizon of ``steps``, per tensor."""

    per_tensor_statistics = True  # each problem's tensors stepped apart, as the suite does
    reads_params = True

    def __init__(self, candidate: Candidate, steps: int, bound: float = 7.0) -> None:
        super().__init__()
        self.candidate, self.steps, self.bound = candidate, steps, bound

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        return {
            "step": 0,
            "m": [torch.zeros_like(p) for p in params],
            "v": [torch.zeros_like(p) for p in params],
            "d": [torch.zeros_like(p) for p in params],
            "a": [0.0 for _ in params],
        }

    def step(self, grads, state, params=None):
        cand, t = self.candidate, state["step"] + 1
        decay = 0.5 * (1 + math.cos(math.pi * min(t - 1, self.steps) / self.steps))
        new = {"step": t, "m": [], "v": [], "d": [], "a": []}
        updates = []
        for g, m, v, d, a, p in zip(grads, state["m"], state["v"], state["d"], state["a"], params):
            cos = float(torch.nn.functional.cosine_similarity(g.reshape(1, -1), d.reshape(1, -1)))
            a = max(-self.bound, min(self.bound, a + cand.beta * cos)) if t > 1 else a
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            direction = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
            scale = cand.c * max(float(p.pow(2).mean().sqrt()), 1e-3) if cand.relative else 0.01
            rate = scale * math.exp(a) * (decay if cand.decay else 1.0)
            updates.append(-rate * direction)
            for key, value in zip(("m", "v", "d", "a"), (m, v, direction, a)):
                new[key].append(value)
        return updates, new

    def spec(self):
        return {"kind": "rate-rule", **self.candidate.__dict__, "steps": self.steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", help="comma-separated names (default: all)")
    parser.add_argument("--entries", help="comma-separated suite entries (default: all)")
    parser.add_argument("--name", default="generalist-relative")
    parser.add_argument("--out", default=str(results_dir("generalist")))
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stored = json.loads(SUITE_RESULT.read_text())["suite"]["entries"]
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    entries = select(args.entries.split(",") if args.entries else None, SUITE)
    result = {"candidates": {n: CANDIDATES[n].__dict__ for n in names}, "entries": {}}
    result["note"] = args.note
    rows = []
    for entry in entries:
        family = entry.family()
        started = time.perf_counter()
        out = tuned_adam_rerun(entry, family, stored)
        target = out["tuned_adam_final"]
        for name in names:
            rule = RateRule(CANDIDATES[name], entry.steps)
            r = run_on_tasks(name, rule, family, entry.steps, "test", entry.test_tasks)
            final = float(r.losses.double().mean(1)[-1])
            out[name] = {"final": final, "over_tuned_adam": final / target}
        out["seconds"] = time.perf_counter() - started
        result["entries"][entry.name] = out
        cells = " | ".join(f"{out[n]['over_tuned_adam']:.3f}" for n in names)
        rows.append(
            f"| {entry.name} | {out['tuned_adam_lr']:.3g} | {out['adam_rerun'] / target:.4f} "
            f"| {cells} |"
        )
        print(rows[-1], flush=True)
    result["machine"] = machine()
    lines = [
        "# Screen: a parameter-relative start and a cosine decay for the rate rule (#26)",
        "",
        "Mean final loss over tuned Adam's (both on the suite's test tasks) of hand-written",
        "candidates (`benchmarks/generalist/relative.py`: Adam's direction, a per-tensor log",
        "rate following β cos(g_t, d_{t-1}), the rate 0.01 e^a (absolute) or",
        "0.3 max(RMS(θ_j), 1e-3) e^a (relative), optionally times a cosine to 0 at the",
        "horizon). `rerun`: Adam at its stored tuned rate rerun here over the stored figure.",
        "",
        f"| entry | tuned Adam lr | rerun | {' | '.join(names)} |",
        "|---|---|---|" + "---|" * len(names),
        *rows,
    ]
    write_result(args.out, args.name, result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
