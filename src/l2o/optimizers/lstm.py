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


class CoordinatewiseLSTM(StepOptimizer):
    """The paper's learned optimizer. ``step`` maps gradients of any shapes to updates.

    State per coordinate: (h, c) for every layer, each of shape (N, hidden_size), N = total
    number of coordinates of all parameter tensors.
    """

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
        zeros = torch.zeros(n, self.config.hidden_size, dtype=ref.dtype, device=ref.device)
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
        x = self.preprocess(flatten(grads, self.output.weight.dtype))
        hs, cs = [], []
        for cell, h, c in zip(self.cells, state["h"], state["c"]):
            i, f, g, o = cell(torch.cat([x, h], dim=-1)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            cs.append(c)
            x = h
        update = self.output(x).squeeze(-1) * self.config.output_scale  # g_t
        return unflatten(update, grads), {"step": state["step"] + 1, "h": hs, "c": cs}

    def spec(self) -> dict:
        return {"kind": "lstm", **asdict(self.config)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
