"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), "Learning to learn by gradient
descent by gradient descent", section 2.1 and Appendix A.

    [g_t, h_{t+1}] = m(grad_t, h_t; phi)        theta_{t+1} = theta_t + g_t       (paper, eq. 1-3)

m is a small multi-layer LSTM applied to every coordinate of theta independently: the weights phi
are shared by all coordinates, each coordinate keeps its own hidden and cell state. All
coordinates of all parameter tensors are flattened into one batch of N rows, so a step is one
matmul per LSTM layer whatever the number or shape of the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten

PREPROCESSING = ("none", "log_sign")


@dataclass(frozen=True)
class LSTMConfig:
    """Architecture of the coordinatewise LSTM optimizer.

    Defaults are the paper's MNIST optimizer: 2 layers of 20 units, gradient preprocessing
    ``log_sign`` with p = 10 (Appendix A) and the LSTM output multiplied by 0.1.
    """

    num_layers: int = 2
    hidden_size: int = 20
    preprocess: str = "log_sign"
    p: float = 10.0
    output_scale: float = 0.1
    # Initial bias of the forget gate. sigmoid(1.0) = 0.73: the cell keeps most of its memory
    # at the start of meta-training. Only the initial value; the bias is meta-trained.
    forget_bias: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.num_layers, int) and self.num_layers >= 1):
            raise ValueError(f"Invalid num_layers: {self.num_layers} (must be an integer >= 1)")
        if not (isinstance(self.hidden_size, int) and self.hidden_size >= 1):
            raise ValueError(f"Invalid hidden_size: {self.hidden_size} (must be an integer >= 1)")
        if self.preprocess not in PREPROCESSING:
            raise ValueError(
                f"Invalid preprocess: {self.preprocess!r} (valid: {', '.join(PREPROCESSING)})"
            )
        if not self.p > 0:
            raise ValueError(f"Invalid p: {self.p} (must be > 0)")
        if not (math.isfinite(self.output_scale) and self.output_scale > 0):
            raise ValueError(f"Invalid output_scale: {self.output_scale} (must be finite and > 0)")
        if not math.isfinite(self.forget_bias):
            raise ValueError(f"Invalid forget_bias: {self.forget_bias} (must be finite)")

    @property
    def input_size(self) -> int:
        return 2 if self.preprocess == "log_sign" else 1


def log_sign_preprocess(grad: Tensor, p: float = 10.0) -> Tensor:
    """Appendix A: map each gradient coordinate to two inputs of similar scale.

        (log|g| / p, sign g)   if |g| >= e^-p
        (-1, e^p g)            otherwise

    ``grad``: shape (N,). Returns shape (N, 2).
    """
    magnitude = grad.abs()
    big = magnitude >= math.exp(-p)
    # Clamp inside the log so the branch not taken never produces -inf (and NaN gradients).
    log_part = torch.where(big, magnitude.clamp_min(math.exp(-p)).log() / p, -torch.ones_like(grad))
    sign_part = torch.where(big, torch.sign(grad), grad * math.exp(p))
    return torch.stack([log_part, sign_part], dim=-1)


class _Tanh(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) - 1: several times faster than torch.tanh on CPU, whose kernel is
    much slower than sigmoid's (torch 2.13), and equal to it within float rounding (absolute
    error < 2e-7 in float32, tested). The backward pass is tanh's, 1 - tanh(x)^2, from the saved
    output."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.sigmoid(2 * x).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


def tanh(x: Tensor) -> Tensor:
    """The LSTM's tanh (see ``_Tanh``); torch.tanh where it is as fast (on accelerators)."""
    return _Tanh.apply(x) if x.device.type == "cpu" else torch.tanh(x)


class CoordinatewiseLSTM(StepOptimizer):
    """The paper's learned optimizer. ``step`` maps gradients of any shapes to updates.

    State per coordinate: (h, c) for every layer, each of shape (N, hidden_size), N = total
    number of coordinates of all parameter tensors.
    """

    # Coordinates per chunk of a step taken without autograd (see ``step``).
    chunk_size = 8192

    def __init__(self, config: LSTMConfig | None = None) -> None:
        super().__init__()
        self.config = config or LSTMConfig()
        c = self.config
        sizes = [c.input_size] + [c.hidden_size] * c.num_layers
        # One fused linear map per layer computes the four gates from [input, h]:
        # gates = W [x_t, h_{t-1}] + b, split as (input i, forget f, cell g, output o).
        self.cells = nn.ModuleList(
            nn.Linear(sizes[k] + c.hidden_size, 4 * c.hidden_size) for k in range(c.num_layers)
        )
        self.output = nn.Linear(c.hidden_size, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        h = self.config.hidden_size
        bound = 1.0 / math.sqrt(h)  # the usual LSTM initialisation, U(-1/sqrt(H), 1/sqrt(H))
        with torch.no_grad():
            for cell in self.cells:
                cell.weight.uniform_(-bound, bound)
                cell.bias.zero_()
                cell.bias[h : 2 * h].fill_(self.config.forget_bias)
            self.output.weight.uniform_(-bound, bound)
            self.output.bias.zero_()

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        n = sum(p.numel() for p in params)
        ref = self.output.weight
        # Shape (N, hidden), stored unit-major (the transpose of a contiguous (hidden, N) tensor):
        # see ``step``.
        zeros = torch.zeros(self.config.hidden_size, n, dtype=ref.dtype, device=ref.device).t()
        return {
            "step": 0,
            "h": [zeros] * self.config.num_layers,
            "c": [zeros] * self.config.num_layers,
        }

    def preprocess(self, grad: Tensor) -> Tensor:
        """Flat gradient (N,) -> LSTM input (N, input_size)."""
        if self.config.preprocess == "log_sign":
            return log_sign_preprocess(grad, self.config.p)
        return grad.unsqueeze(-1)

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        # The maths runs on transposes, x: (input_size, N) and h, c: (hidden, N), so that each
        # gate below is a contiguous block of memory: elementwise ops on the column slices of an
        # (N, 4 hidden) tensor are many times slower on CPU, and they dominate the step. The states
        # handed out are the (N, hidden) transposes of these contiguous tensors (no copy).
        x = self.preprocess(flatten(grads, self.output.weight.dtype)).t()
        hs = [h.t() for h in state["h"]]
        cs = [c.t() for c in state["c"]]
        n = x.shape[1]
        if torch.is_grad_enabled() or n <= self.chunk_size:
            update, hs, cs = self._lstm(x, hs, cs)
        else:
            # Without a graph to keep, coordinates go through in chunks whose temporaries (the
            # gates: 4 hidden floats per coordinate and layer) stay in cache and out of the
            # peak memory (benchmarks/results/optim_overhead.md: the cost of a step by size).
            update = x.new_empty(n)
            new_hs = [torch.empty_like(h, memory_format=torch.contiguous_format) for h in hs]
            new_cs = [torch.empty_like(c, memory_format=torch.contiguous_format) for c in cs]
            for s in range(0, n, self.chunk_size):
                rows = slice(s, s + self.chunk_size)
                u, h_chunk, c_chunk = self._lstm(
                    x[:, rows], [h[:, rows] for h in hs], [c[:, rows] for c in cs]
                )
                update[rows] = u
                for k in range(len(hs)):
                    new_hs[k][:, rows] = h_chunk[k]
                    new_cs[k][:, rows] = c_chunk[k]
            hs, cs = new_hs, new_cs
        state = {"step": state["step"] + 1, "h": [h.t() for h in hs], "c": [c.t() for c in cs]}
        return unflatten(update, grads), state

    def _lstm(
        self, x: Tensor, hs: list[Tensor], cs: list[Tensor]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """m(grad_t, h_t; phi) on transposed tensors: x (input_size, n), h and c (hidden, n)
        per layer -> update g_t (n,) and the new h and c."""
        new_hs, new_cs = [], []
        for cell, h, c in zip(self.cells, hs, cs):
            # gates = W [x_t; h_{t-1}] + b, split as (input i, forget f, cell g, output o)
            gates = torch.addmm(cell.bias.unsqueeze(1), cell.weight, torch.cat([x, h]))
            i, f, g, o = gates.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * tanh(g)
            h = torch.sigmoid(o) * tanh(c)
            new_hs.append(h)
            new_cs.append(c)
            x = h
        update = torch.addmm(self.output.bias, x.t(), self.output.weight.t()).squeeze(-1)
        return update * self.config.output_scale, new_hs, new_cs

    def spec(self) -> dict:
        return {"kind": "lstm", **asdict(self.config)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
