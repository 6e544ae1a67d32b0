"""Benchmark (issue #30): what one meta-training step of the paper's quadratic preset costs,
built five ways, against the time a 3x faster epoch leaves it.

configs/quadratic-paper.toml: 128 problems of 10 coordinates (N = 1280 rows), a 2-layer LSTM of
20 units reading the raw gradient, truncations of 20 over 100 steps. One step of meta-training
runs the optimizer's step forward (two LSTM layers and the output head) and, in the meta-
gradient's backward pass, its vector-Jacobian product (cotangents for the update and the new h
and c in, gradients for the old h and c and for phi out). Measured per step, forward plus
backward, each variant in turn in the same process (one torch thread; median over rounds):

- ``l2o``: ``CoordinatewiseLSTM.step`` as meta-training runs it (l2o's LSTM layer: an
  autograd.Function with its backward written out);
- ``plain eager``: the same maths in plain torch ops, autograd's backward;
- ``plain compiled``: those ops in ``torch.compile(dynamic=False)`` (inductor; the shapes are
  fixed within a preset); its first call, compilation included, is reported apart;
- ``torch.nn.LSTM``: torch's LSTM (oneDNN on the CPU) for one time step of both layers;
- ``matmuls alone``: only the matrix products a step needs (per layer one forward, two
  backward; the head's), on preallocated operands: a floor for any implementation that calls
  the same BLAS.

The budget is the step time that a 3x faster epoch leaves: commit 1fba373's seconds per epoch
(the ``--reference`` argument, from benchmarks/speed/results/speed-versus.json by default) / 3 /
100 steps, from which the task's own work (the quadratic's loss and gradient), the update and the
meta-loss must also be paid.

    python -m benchmarks.speed.floor [--rounds 200]

Writes benchmarks/speed/results/speed-floor.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from torch import Tensor

from benchmarks.common import ROOT, machine, results_dir, write_result
from l2o.config import load_config
from l2o.devices import flush_denormals
from l2o.runs import build_learned_optimizer

CONFIG = ROOT / "configs/quadratic-paper.toml"
STEPS_PER_EPOCH = 100


def plain_lstm(x: Tensor, h1, c1, h2, c2, w1, b1, w2, b2, wo, bo):
    """The optimizer's step in plain ops, one coordinate per column (l2o's layout)."""
    hs, cs = [], []
    for h, c, w, b in ((h1, c1, w1, b1), (h2, c2, w2, b2)):
        gates = torch.addmm(b.unsqueeze(1), w, torch.cat([x, h]))
        i, f, g, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
        x = h
    update = torch.addmm(bo.unsqueeze(1), wo, x).squeeze(0)
    return update, hs[0], cs[0], hs[1], cs[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument(
        "--reference",
        type=float,
        default=None,
        help="1fba373's seconds per epoch (default: speed-versus.json's)",
    )
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=str(results_dir("speed")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    reference = args.reference
    if reference is None:
        versus = json.loads((results_dir("speed") / "speed-versus.json").read_text())
        rows = {row["preset"]: row for row in versus["meta_training"]}
        reference = rows["quadratic-paper"]["reference_s"]
    config = load_config(CONFIG)
    opt = build_learned_optimizer(config)
    n = config.task.num_problems * config.task.dim
    hidden = config.optimizer.hidden_size
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int, scale: float = 1.0) -> Tensor:
        return scale * torch.randn(*shape, generator=g)

    grad = randn(config.task.num_problems, config.task.dim)
    state0 = opt.init_state([grad])
    # a state in mid-run, h and c leaves of the graph (the previous step's, in meta-training)
    h0 = [randn(hidden, n, scale=0.3).t().requires_grad_() for _ in range(2)]
    c0 = [randn(hidden, n, scale=0.3).t().requires_grad_() for _ in range(2)]
    d_update, d_h, d_c = randn(*grad.shape, scale=0.1), randn(n, hidden), randn(n, hidden)
    phi = list(opt.parameters())
    w1, b1, w2, b2, wo, bo = (p.detach().clone().requires_grad_() for p in phi)

    def l2o_step() -> None:
        state = {**state0, "h": h0, "c": c0}
        (update,), new = opt.step([grad], state)
        outs = [update, new["h"][1], new["c"][1], new["c"][0]]
        torch.autograd.grad(outs, phi + h0 + c0, [d_update, d_h, d_c, d_c], allow_unused=True)

    ht = [h.detach().t().contiguous().requires_grad_() for h in h0]
    ct = [c.detach().t().contiguous().requires_grad_() for c in c0]
    x = grad.reshape(1, -1)
    dut, dht, dct = d_update.reshape(-1), d_h.t().contiguous(), d_c.t().contiguous()
    leaves = [*ht, *ct, w1, b1, w2, b2, wo, bo]

    def plain(fn):
        def run() -> None:
            update, _h1, c1, h2, c2 = fn(x, ht[0], ct[0], ht[1], ct[1], w1, b1, w2, b2, wo, bo)
            torch.autograd.grad([update, h2, c2, c1], leaves, [dut, dht, dct, dct])

        return run

    lstm = torch.nn.LSTM(1, hidden, 2)
    seq = grad.reshape(1, n, 1)
    hn = torch.stack([h.detach() for h in h0]).contiguous().requires_grad_()
    cn = torch.stack([c.detach() for c in c0]).contiguous().requires_grad_()
    lstm_params = list(lstm.parameters())
    d_out = randn(1, n, hidden)

    def torch_lstm() -> None:
        out, (_h, c) = lstm(seq, (hn, cn))
        torch.autograd.grad([out, c], [*lstm_params, hn, cn], [d_out, cn.detach()])

    # The matrix products of a step: per layer W [x; h] forward, then dW = dG [x; h]^T and
    # d[x; h] = W^T dG backward; the head's w h forward and w^T du, du h^T backward.
    xh = [randn(1 + hidden, n), randn(2 * hidden, n)]
    ws = [randn(4 * hidden, 1 + hidden), randn(4 * hidden, 2 * hidden)]
    dgates = randn(4 * hidden, n)
    head_w, head_du, top = randn(1, hidden), randn(1, n), randn(hidden, n)
    outs = {
        "gates": torch.empty(4 * hidden, n),
        "dw": [torch.empty_like(w) for w in ws],
        "dxh": [torch.empty_like(a) for a in xh],
        "head": torch.empty(1, n),
        "dtop": torch.empty(hidden, n),
        "dhead": torch.empty(1, hidden),
    }

    def matmuls() -> None:
        for w, a, dw, dxh in zip(ws, xh, outs["dw"], outs["dxh"]):
            torch.mm(w, a, out=outs["gates"])
            torch.mm(dgates, a.t(), out=dw)
            torch.mm(w.t(), dgates, out=dxh)
        torch.mm(head_w, top, out=outs["head"])
        torch.mm(head_w.t(), head_du, out=outs["dtop"])
        torch.mm(head_du, top.t(), out=outs["dhead"])

    compiled = torch.compile(plain_lstm, dynamic=False)
    variants = {
        "l2o": l2o_step,
        "plain eager": plain(plain_lstm),
        "plain compiled": plain(compiled),
        "torch.nn.LSTM": torch_lstm,
        "matmuls alone": matmuls,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with flush_denormals():
        start = time.perf_counter()
        variants["plain compiled"]()
        first_compiled = time.perf_counter() - start
        for run in variants.values():  # warm-up
            for _ in range(10):
                run()
        for _ in range(args.rounds):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    budget = reference / 3 / STEPS_PER_EPOCH
    rows = {
        name: {"median_us": statistics.median(t) * 1e6, "of_budget": statistics.median(t) / budget}
        for name, t in times.items()
    }
    result = {
        "config": str(CONFIG.relative_to(ROOT)),
        "rows_per_op": n,
        "reference_s_per_epoch": reference,
        "budget_us_per_step": budget * 1e6,
        "compile_first_call_s": first_compiled,
        "variants": rows,
        "rounds": args.rounds,
        "note": args.note,
        "machine": machine(),
    }
    lines = [
        "# One meta-training step of quadratic-paper, five ways, against a 3x epoch's budget",
        "",
        f"The optimizer's step forward and its vector-Jacobian product backward, {n} rows, "
        f"2 layers of {hidden} (`benchmarks/speed/floor.py`); median of {args.rounds} rounds, "
        "each variant in turn, one torch thread. Budget: 1fba373's "
        f"{reference:.3f} s/epoch / 3 / {STEPS_PER_EPOCH} steps = {budget * 1e6:.0f} us per "
        "step, for everything a step does (the task's loss and gradient, the update and "
        "meta-loss too).",
        "",
        "| variant | us per step | of the 3x budget |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v['median_us']:.0f} | {v['of_budget']:.2f} |" for k, v in rows.items()]
    lines += ["", f"`plain compiled`'s first call (compilation): {first_compiled:.1f} s."]
    write_result(args.out, "speed-floor", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
