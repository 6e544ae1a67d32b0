"""A per-tensor recurrent scheduler: a small LSTM, one step per parameter tensor per optimizer
step, that reads tensor-level statistics and sets a step-size multiplier for the whole tensor.

It is the tensor level of a hierarchical learned optimizer (Wichrowska et al., 2017, "Learned
optimizers that scale and generalize": a per-tensor RNN above the per-parameter network) in the
form Celo takes it (Moudgil et al., 2025, "Celo: training versatile learned optimizers on a
compute diet": a per-tensor LSTM "scheduler", 128 units there, whose linear read-out gives a
per-tensor learning-rate multiplier exp(w h + b) * 0.1 that scales the per-parameter MLP's
whole step). Celo's scheduler reads only the fraction of training done and loss features, and
VeLO's (learned_optimization's ``hyper_v2``) adds clipped logs of the tensor's momentum and
second-moment statistics and its rank; a coordinatewise optimizer here knows neither the loss
(it does not read it) nor the horizon, so this one reads, per tensor j with n_j coordinates:

    0.05 log(mean g^2 + 1e-16)                  log RMS of the gradient (x 0.1)
    0.05 log(mean m^2 + 1e-16)                  of the momentum m_hat^(0.9)
    0.05 log(mean theta^2 + 1e-16)              of the parameter
    0.05 log(mean (m / rms)^2 + 1e-16)          of Adam's direction (how consistent g is)
    0.05 log((mean u^2 + 1e-16) / (mean theta^2 + 1e-16))
                                                update-to-parameter norm ratio (LARS's trust
                                                ratio), u the update before the multiplier
    tanh(t / s) for each timescale s            ``features.step_features``, t = 0, 1, ...
    s_{t-1} / bound                             its own previous output, in [-1, 1]

(every log is bounded: 1e-16 floors it at -1.84; float32's largest value caps it at 4.4) and
outputs the log step-size multiplier

    s_t = bound tanh(w h_t + b)         update of tensor j  *=  exp(s_t)

The read-out starts at zero (w = 0, b = 0): s = 0 exactly and the multiplier exactly 1, so an
optimizer with a freshly built scheduler makes exactly the updates it makes without one, and
meta-training moves it from there. tanh keeps the multiplier within [exp(-bound), exp(bound)]
whatever the meta-updates do, so a few of them cannot blow the inner loop up.

Each tensor's multiplier depends on that tensor's history only (no pooling across tensors, unlike
Celo's ``mix_layers`` max over tensors): parameters stepped together or apart, as the
torch.optim front-end does for parameters that skip a step, get the same updates.

State: ``init_state(count)`` gives {"h": (T, H), "c": (T, H), "log_lr": (T,)} for T tensors,
one row per tensor, which an optimizer keeps under the state key ``base.PER_TENSOR``
(``"tensors"``): the torch.optim front-end merges and splits such rows by tensor, not by
coordinate (see ``l2o.optimizers.base``). 2 H + 1 floats per tensor: nothing against the
per-coordinate state of any tensor but the smallest.

The cell is written with plain differentiable ops (not ``lstm_kernel.LSTMLayer``, whose backward
is not differentiable): T is the number of tensors, so its cost does not matter, and
second-order meta-gradients pass through it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from l2o.optimizers.base import OptState

# Columns of the statistics ``TensorScheduler.forward`` reads: mean squares over each tensor.
STATISTICS = ("grad", "momentum", "param", "adam", "update")
LOG_EPS = 1e-16  # floor of the mean squares inside the logs (an RMS of 1e-8)
LOG_SCALE = 0.05  # 0.05 log(mean x^2) = 0.1 log(RMS x)


class TensorScheduler(nn.Module):
    """An LSTM cell over the tensors' statistics (see the module docstring) with a bounded
    log step-size read-out. ``time_features`` is the number S of step features it reads."""

    def __init__(
        self, hidden_size: int, time_features: int, bound: float, extra_inputs: int = 0
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.bound = bound
        self.extra_inputs = extra_inputs  # columns the optimizer adds (``forward``'s ``extra``)
        self.input_size = len(STATISTICS) + time_features + 1 + extra_inputs
        size = self.input_size + hidden_size
        self.weight = nn.Parameter(torch.empty(4 * hidden_size, size))  # [i; f; g; o]
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.out_weight = nn.Parameter(torch.empty(hidden_size))
        self.out_bias = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The LSTM's weights uniform in +-1 / sqrt(hidden) (as torch.nn.LSTM), its biases 0
        but the forget gate's 1 (as Haiku's LSTM, which Celo uses); the read-out at zero."""
        h = self.hidden_size
        with torch.no_grad():
            self.weight.uniform_(-(h**-0.5), h**-0.5)
            self.bias.zero_()
            self.bias[h : 2 * h] = 1.0
            self.out_weight.zero_()
            self.out_bias.zero_()

    def init_state(self, count: int) -> OptState:
        """Zero hidden and cell states and a zero previous output for ``count`` tensors."""
        like = self.weight
        return {
            "h": like.new_zeros(count, self.hidden_size),
            "c": like.new_zeros(count, self.hidden_size),
            "log_lr": like.new_zeros(count),
        }

    def features(
        self, mean_squares: Tensor, time: Tensor, log_lr: Tensor, extra: Tensor | None = None
    ) -> Tensor:
        """The inputs (T, input_size) from the mean squares (T, 5) of ``STATISTICS``, the step
        features (S,), the previous output (T,) and the optimizer's ``extra`` columns
        (T, extra_inputs), which it must give when it asked for them."""
        logs = LOG_SCALE * torch.log(mean_squares + LOG_EPS)  # (T, 5)
        grad_m_param_adam = logs[:, :4]
        ratio = logs[:, 4:] - logs[:, 2:3]  # log(RMS update / RMS param), x 0.1
        columns = [grad_m_param_adam, ratio, time.expand(logs.shape[0], -1)]
        columns.append((log_lr / self.bound).unsqueeze(-1))
        if self.extra_inputs:
            if extra is None or extra.shape != (logs.shape[0], self.extra_inputs):
                raise ValueError(f"the scheduler reads {self.extra_inputs} extra columns")
            columns.append(extra)
        x = torch.cat(columns, dim=-1)
        # An empty tensor's mean is NaN; keep it from reaching the weights' gradients.
        return torch.nan_to_num(x)

    def forward(
        self, mean_squares: Tensor, time: Tensor, state: OptState, extra: Tensor | None = None
    ) -> tuple[Tensor, OptState]:
        """One step for T tensors: the log multipliers s (T,) and the new state."""
        x = self.features(mean_squares, time, state["log_lr"], extra)
        gates = torch.addmm(self.bias, torch.cat([x, state["h"]], dim=-1), self.weight.t())
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * state["c"] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        log_lr = self.bound * torch.tanh(h @ self.out_weight + self.out_bias)  # (T,)
        return log_lr, {"h": h, "c": c, "log_lr": log_lr}

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"bound={self.bound}, multiplier in [{math.exp(-self.bound):.3g}, "
            f"{math.exp(self.bound):.3g}]"
        )
