"""Input features of coordinatewise learned optimizers beyond the gradient itself.

Each is built as optax's ``trace`` and ``scale_by_rms`` are: ``init(like) -> state`` and
``update(grad, state, step) -> (signals, state)``, a pure function of its inputs, on the flat
gradient of all N coordinates. An optimizer keeps a feature's state in its own state dict under
the feature's ``name``; so that the torch.optim front-end can merge, split and save it like any
other optimizer state (``l2o.optimizers.base``), the state is a list of per-coordinate tensors
(N,) rather than a named tuple. ``step`` is the number t = 1, 2, ... of the step being taken:
the optimizer's one count serves all its features (for the bias corrections).

Any architecture reads them the same way: the coordinatewise LSTM (``l2o.optimizers.lstm``)
feeds them to its first layer, an MLP optimizer or RNNprop would concatenate them into its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Momentum:
    """Running averages of the gradient, one per decay beta, bias-corrected as in Adam:

        m_t = beta m_{t-1} + (1 - beta) g_t        m_hat_t = m_t / (1 - beta^t)

    State: [m_t for each decay], each (N,). Signals: (N, len(decays)), m_hat_t of each decay.
    """

    decays: tuple[float, ...]
    name = "momentum"

    def init(self, like: Tensor) -> list[Tensor]:
        """m_0 = 0 for coordinates shaped like ``like`` (N,)."""
        return [torch.zeros_like(like)] * len(self.decays)

    def update(self, grad: Tensor, state: list[Tensor], step: int) -> tuple[Tensor, list[Tensor]]:
        averages = [torch.lerp(grad, m, b) for b, m in zip(self.decays, state)]
        m_hat = [m / (1 - b**step) for b, m in zip(self.decays, averages)]
        return torch.stack(m_hat, dim=-1), averages


@dataclass(frozen=True)
class RunningRMS:
    """The running RMS of the gradient, bias-corrected as in Adam:

        v_t = beta v_{t-1} + (1 - beta) g_t^2        rms_t = sqrt(v_t / (1 - beta^t)) + 1e-8

    A signal divided by it is scale-free: Adam's m_hat / sqrt(v_hat), the scaled inputs of
    Wichrowska et al. (2017) and RNNprop. State: [v_t], (N,). Signals: (N, 1), rms_t.
    """

    decay: float
    name = "rms"

    def init(self, like: Tensor) -> list[Tensor]:
        """v_0 = 0 for coordinates shaped like ``like`` (N,)."""
        return [torch.zeros_like(like)]

    def update(self, grad: Tensor, state: list[Tensor], step: int) -> tuple[Tensor, list[Tensor]]:
        v = torch.lerp(grad * grad, state[0], self.decay)
        rms = (v / (1 - self.decay**step)).sqrt() + 1e-8
        return rms.unsqueeze(-1), [v]


def step_features(step: int, time_scales: Tensor) -> Tensor:
    """[tanh(t / s) for each timescale s] at step t (0, 1, ...): the same for every coordinate,
    so that an optimizer can learn a schedule over the horizon it is meta-trained on
    (learned_optimization's training-step features). ``time_scales``: (S,). Returns (S,)."""
    return torch.tanh(step / time_scales)
