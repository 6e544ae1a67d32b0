"""RNNprop: the coordinatewise LSTM optimizer of Lv, Jiang & Li (2017), "Learning Gradient
Descent: Better Generalization and Longer Horizons" (ICML), section 4 and the authors' code
(github.com/vfleaking/rnnprop, ``nn_opt/rnn.py``).

Like the LSTM of Andrychowicz et al. (``l2o.optimizers.lstm``), a small LSTM is applied to every
coordinate independently (weights phi shared, hidden and cell state per coordinate), but it
reads Adam's normalised moments instead of the gradient itself, so that its input does not
depend on the gradient's scale, and its update is bounded. Per coordinate, at step t = 1, 2, ...:

    m_t = beta1 m_{t-1} + (1 - beta1) g_t           m_hat_t = m_t / (1 - beta1^t)
    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2         v_hat_t = v_t / (1 - beta2^t)
    g~_t = g_t / (sqrt(v_hat_t) + eps)              m~_t = m_hat_t / (sqrt(v_hat_t) + eps)
    x_t = ELU(W_in [g~_t, m~_t] + b_in)             the input layer (preprocessing)
    h_t, c_t = LSTM(x_t, h_{t-1}, c_{t-1})          2 layers of 20 units
    update_t = - alpha tanh(w h_t + b)              theta_{t+1} = theta_t + update_t

(m_0 = v_0 = 0, h_0 = c_0 = 0). Each update is at most alpha in every coordinate. The moments
are ``features.Momentum`` and ``features.RunningRMS`` (whose sqrt(v_hat) + 1e-8 is the
denominator), the LSTM layer is ``lstm_kernel.LSTMLayer``, the step without autograd runs in
chunks (``lstm_kernel.in_column_chunks``), as the paper's LSTM's does.

Defaults are the paper's and the authors' code's: beta1 = beta2 = 0.95, alpha = 0.1, 2 LSTM
layers of 20 units, an input layer of 20 ELU units, eps = 1e-8. Where the paper is silent we
chose (and say so at each option): the order of the inputs, [g~, m~], as in the authors' code;
the initialisation (the LSTM layers as ``CoordinatewiseLSTM``'s, U(-1/sqrt(H), 1/sqrt(H)) with
the forget gate's bias at 1.0, which is what TensorFlow's LSTMCell adds to it in the authors'
code, here a trained bias that starts there; the input and output layers U(-1/sqrt(fan_in),
1/sqrt(fan_in)), zero biases); zero initial hidden and cell states (TensorFlow's zero_state).

The paper's "random scaling" trick (each coordinate of the training problems scaled by
exp(U(-3, 3)) for every new problem, so that the optimizer cannot fit one scale of gradients) is
an augmentation of the meta-training tasks, not part of the optimizer: it is not here (l2o's
task mixture does scale augmentation). Nor is its "combination with convex functions" (training
problems with a quadratic added).

State per coordinate: h and c of every layer, 2 num_layers hidden_size floats, and m and v,
2 floats: 2 num_layers hidden_size + 2 floats in all, 82 at the defaults
(``RNNpropConfig.state_floats``). All are rows of N (``l2o.optimizers.base``), so the torch.optim
front-end merges and splits them like the LSTM's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from l2o.checks import check_positive_int, set_real
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten
from l2o.optimizers.features import Momentum, RunningRMS
from l2o.optimizers.lstm_kernel import (
    LSTMLayer,
    in_column_chunks,
    lstm_cells,
    reset_lstm_cells,
    zero_hidden,
)

INPUTS = 2  # g~ and m~


@dataclass(frozen=True)
class RNNpropConfig:
    """Architecture of RNNprop (``kind = "rnnprop"``, Lv, Jiang & Li, 2017): a coordinatewise
    2-layer LSTM that reads Adam's normalised gradient g / sqrt(v_hat) and momentum
    m_hat / sqrt(v_hat) through an ELU input layer, and whose update is -alpha tanh(w h + b).
    Defaults are the paper's (and its authors' code's)."""

    num_layers: int = 2  # LSTM layers (the paper: 2)
    hidden_size: int = 20  # hidden units per LSTM layer (the paper: 20)
    # Units of the input layer x = ELU(W_in [g~, m~] + b_in) that feeds the first LSTM layer
    # (the paper: 20).
    preprocess_size: int = 20
    # Decay of the running average of the gradient m_t, bias-corrected (Adam's beta1; the paper:
    # 0.95).
    beta1: float = 0.95
    # Decay of the running average of the squared gradient v_t, bias-corrected, whose root
    # (+ 1e-8) divides g and m_hat (Adam's beta2; the paper: 0.95).
    beta2: float = 0.95
    # The update is -alpha tanh(w h + b): at most alpha per coordinate and step (the paper: 0.1).
    alpha: float = 0.1
    # Initial bias of the LSTM's forget gates; the bias is meta-trained. The paper is silent;
    # 1.0 is what TensorFlow's LSTMCell adds in the authors' code (as the LSTM's forget_bias).
    forget_bias: float = 1.0

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "preprocess_size"):
            check_positive_int(name, getattr(self, name))
        for name in ("beta1", "beta2"):
            set_real(self, name, lambda b: 0 < b < 1, "a decay in (0, 1), e.g. 0.95")
        set_real(self, "alpha", lambda a: 0 < a < math.inf, "a finite number > 0, e.g. 0.1")
        set_real(self, "forget_bias", math.isfinite, "a finite number, e.g. 1.0")

    @property
    def state_floats(self) -> int:
        """Floats of state per coordinate: h and c of every layer, m and v."""
        return 2 * self.num_layers * self.hidden_size + 2


class RNNprop(StepOptimizer):
    """RNNprop (see the module docstring). ``step`` maps gradients of any shapes to updates.

    State: ``"step"`` (t), ``"h"`` and ``"c"`` (one (N, hidden_size) tensor per layer),
    ``"momentum"`` ([m_t], (N,)) and ``"rms"`` ([v_t], (N,)), N = total number of coordinates:
    ``config.state_floats`` floats per coordinate (82 at the defaults).
    """

    # Coordinates per chunk of a step taken without autograd (as ``CoordinatewiseLSTM``'s).
    chunk_size = 8192

    def __init__(self, config: RNNpropConfig | None = None) -> None:
        super().__init__()
        self.config = config or RNNpropConfig()
        c = self.config
        self.input = nn.Linear(INPUTS, c.preprocess_size)
        self.cells = lstm_cells(c.preprocess_size, c.hidden_size, c.num_layers)
        self.output = nn.Linear(c.hidden_size, 1)
        self.momentum = Momentum((c.beta1,))
        self.rms = RunningRMS(c.beta2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Our choice (the paper is silent): the LSTM layers as ``CoordinatewiseLSTM``'s,
        U(-1/sqrt(H), 1/sqrt(H)) with zero biases but the forget gate's at ``forget_bias``; the
        input and output layers U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with zero biases."""
        with torch.no_grad():
            for layer in (self.input, self.output):
                fan_in = layer.weight.shape[1]
                layer.weight.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))
                layer.bias.zero_()
        reset_lstm_cells(self.cells, self.config.hidden_size, self.config.forget_bias)

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        n = sum(p.numel() for p in params)
        ref = self.output.weight
        zeros = zero_hidden(self.config.hidden_size, n, ref)
        like = ref.new_zeros(n)
        return {
            "step": 0,
            "h": [zeros] * self.config.num_layers,
            "c": [zeros] * self.config.num_layers,
            self.momentum.name: self.momentum.init(like),
            self.rms.name: self.rms.init(like),
        }

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        g = flatten(grads, self.output.weight.dtype)
        t = state["step"] + 1
        m_hat, momentum = self.momentum.update(g, state["momentum"], t)  # (N, 1)
        rms, v = self.rms.update(g, state["rms"], t)  # (N, 1): sqrt(v_hat) + 1e-8
        # [g~; m~], one coordinate per column: (2, N)
        x = (torch.cat([g.unsqueeze(-1), m_hat], dim=-1) / rms).t()
        args = (x, [h.t() for h in state["h"]], [c.t() for c in state["c"]])
        if torch.is_grad_enabled() or x.shape[1] <= self.chunk_size:
            update, hs, cs = self._m(*args)
        else:  # no graph to keep: the coordinates go through in chunks
            update, hs, cs = in_column_chunks(self._m, args, self.chunk_size)
        new_state = {
            "step": t,
            "h": [h.t() for h in hs],
            "c": [c.t() for c in cs],
            self.momentum.name: momentum,
            self.rms.name: v,
        }
        return unflatten(update, grads), new_state

    def _m(
        self, x: Tensor, hs: list[Tensor], cs: list[Tensor]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The network on n coordinates, one per column: x = [g~; m~] (2, n), h and c
        (hidden, n) per layer -> the update (n,) and the new h and c."""
        # x_t = ELU(W_in [g~, m~] + b_in): (preprocess_size, n)
        x = F.elu(torch.addmm(self.input.bias.unsqueeze(1), self.input.weight, x))
        new_hs, new_cs = [], []
        for cell, h, c in zip(self.cells, hs, cs):
            h, c = LSTMLayer.apply(x, h, c, cell.weight, cell.bias)
            new_hs.append(h)
            new_cs.append(c)
            x = h
        # update = -alpha tanh(w h + b)
        out = torch.addmm(self.output.bias.unsqueeze(1), self.output.weight, x).squeeze(0)
        return torch.tanh(out) * -self.config.alpha, new_hs, new_cs

    def spec(self) -> dict[str, Any]:
        """The config, JSON-ready."""
        return {"kind": "rnnprop", **asdict(self.config)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
