"""The LSTM optimizer with global averaging cells (LSTM+GAC) of Andrychowicz et al. (2016),
section 2.2 and its appendix on information sharing between coordinates.

The paper's coordinatewise LSTM (``l2o.optimizers.lstm``) applies one small LSTM to every
coordinate independently: a diagonal method, like RMSprop or Adam. LSTM+GAC lets the coordinates
communicate: in each LSTM layer a subset of the cells are *global averaging cells*, which
"operate like normal LSTM cells, but their outgoing activations are averaged at each step across
all coordinates". Per layer l, step t and coordinate j (h and c of the layer's H cells):

    [i; f; g; o] = W_l [x_j; h_{t-1,j}] + b_l
    c_{t,j} = s(f) c_{t-1,j} + s(i) tanh(g)          h~_{t,j} = s(o) tanh(c_{t,j})
    h_{t,j}[u] = h~_{t,j}[u]                          for the H - G local cells u
    h_{t,j}[u] = (1 / n) sum_{k in S(j)} h~_{t,k}[u]  for the G global averaging cells u

h_{t,j} goes to the next layer, back into the layer at step t + 1, and (top layer) to the
output, g_t = output_scale (w h_{t,j} + b), as the paper's LSTM. S(j) is the segment of j
(``l2o.optimizers.coupling``): every coordinate of its problem (``share = "all"``, the paper's
"all coordinates") or of its parameter tensor (``share = "tensor"``). The paper notes that such
cells suffice to implement L2 gradient clipping, given an LSTM that can compute g^2.

Where the paper is silent we chose, and say so at each option: the averaging cells are the last
``global_cells`` of every layer; only their hidden activations h are averaged (the cell states c
stay per coordinate: the outgoing activation is h); the averaged h is what the cell feeds back
to itself at the next step (it is the activation the cell sends out); the initialisation is the
coordinatewise LSTM's. With ``global_cells = 0`` it is the paper's coordinatewise LSTM exactly
(same weights, same updates: tested).

Costs: state per coordinate 2 num_layers hidden_size floats, as the coordinatewise LSTM (the
averaged cells are kept per coordinate, all equal within a segment, so that the state stays
rows of N for the torch.optim front-end). Extra work per step: one segment average of G cells per
layer, O(num_layers G N), next to the LSTM's O(num_layers hidden^2 N) matmuls. Since the
averages couple every coordinate, a step without autograd cannot run in chunks of coordinates
as the coordinatewise LSTM's does: the whole (4 hidden, N) gates of a layer are in memory at
once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from l2o.checks import check_choice, check_positive_int, is_int, set_real
from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten
from l2o.optimizers.coupling import SHARING, Segments, segments
from l2o.optimizers.lstm import PREPROCESSING, log_sign_preprocess
from l2o.optimizers.lstm_kernel import LSTMLayer, lstm_cells, reset_lstm_cells, zero_hidden


@dataclass(frozen=True)
class LSTMGACConfig:
    """Architecture of the LSTM with global averaging cells (``kind = "lstm-gac"``, the paper's
    section 2.2): the coordinatewise LSTM in which, in every layer, the hidden activations of
    some cells are averaged over all coordinates at every step. Defaults are the paper's MNIST
    LSTM's (2 layers of 20 units, log_sign preprocessing, output times 0.1) with 5 averaging
    cells per layer."""

    num_layers: int = 2  # LSTM layers (the paper: 2)
    hidden_size: int = 20  # cells per layer, averaging cells included (the paper: 20)
    # Global averaging cells per layer: the last ones of each layer, whose hidden activations
    # are averaged over the coordinates of their segment at every step. The paper does not say
    # how many; 0 = the coordinatewise LSTM.
    global_cells: int = 5
    # Which coordinates an average runs over: "all" (every coordinate of the problem, all
    # parameter tensors: the paper's "all coordinates") or "tensor" (each parameter tensor's
    # own coordinates).
    share: str = "all"
    # "log_sign": each gradient coordinate read as (log|g| / p, sign g) (the paper's Appendix A);
    # "none": read as it is (the paper's quadratics).
    preprocess: str = "log_sign"
    p: float = 10.0  # log_sign's p: below e^-p, |g| is read as (-1, e^p g) (the paper: 10)
    output_scale: float = 0.1  # the LSTM's output times this is the update (the paper: 0.1)
    # Initial bias of the forget gates (only the initial value; the bias is meta-trained).
    forget_bias: float = 1.0

    def __post_init__(self) -> None:
        check_gac_options(self)

    @property
    def input_size(self) -> int:
        return 2 if self.preprocess == "log_sign" else 1

    @property
    def state_floats(self) -> int:
        """Floats of state per coordinate: h and c of every layer."""
        return 2 * self.num_layers * self.hidden_size


def check_gac_options(config: Any) -> None:
    """The checks of the options LSTM+GAC and NTM-BFGS share (one-line errors)."""
    check_positive_int("num_layers", config.num_layers)
    check_positive_int("hidden_size", config.hidden_size)
    g = config.global_cells
    if not (is_int(g) and 0 <= g <= config.hidden_size):
        raise InvalidInput(
            f"Invalid global_cells: {g!r} (must be an integer from 0 to hidden_size, "
            f"{config.hidden_size})"
        )
    check_choice("share", config.share, SHARING)
    check_choice("preprocess", config.preprocess, PREPROCESSING)
    set_real(config, "p", lambda p: 0 < p < math.inf, "a number > 0, e.g. 10")
    set_real(config, "output_scale", lambda s: 0 < s < math.inf, "a finite number > 0, e.g. 0.1")
    set_real(config, "forget_bias", math.isfinite, "a finite number, e.g. 1.0")


def preprocess(signal: Tensor, how: str, p: float) -> Tensor:
    """(N, k) signals -> (N, 2k) (log_sign, Appendix A) or (N, k) (none), in signal order."""
    if how == "log_sign":
        return log_sign_preprocess(signal, p).flatten(-2)
    return signal


def gac_layers(
    cells: nn.ModuleList,
    x: Tensor,
    hs: list[Tensor],
    cs: list[Tensor],
    shared: Segments,
    global_cells: int,
) -> tuple[list[Tensor], list[Tensor]]:
    """The LSTM+GAC stack on N coordinates, one per column: x (input_size, N), h and c
    (hidden, N) per layer -> the new h and c of every layer. The last ``global_cells`` rows of
    each layer's h are averaged over the segments of ``shared`` (module doc)."""
    new_hs, new_cs = [], []
    for cell, h, c in zip(cells, hs, cs):
        h, c = LSTMLayer.apply(x, h, c, cell.weight, cell.bias)
        if global_cells:
            local = h.shape[0] - global_cells
            h = torch.cat([h[:local], shared.mean(h[local:], dim=-1)])
        new_hs.append(h)
        new_cs.append(c)
        x = h
    return new_hs, new_cs


class LSTMGAC(StepOptimizer):
    """LSTM+GAC (see the module docstring). ``step`` maps gradients of any shapes to updates.

    State: ``"step"`` (t), ``"h"`` and ``"c"`` (one (N, hidden_size) tensor per layer, rows of
    the N coordinates) and ``"problems"`` (how many problems lead the tensors,
    ``l2o.optimizers.coupling``): ``config.state_floats`` floats per coordinate.
    """

    couples_coordinates = True  # averages run over segments of coordinates (coupling.py)

    def __init__(self, config: LSTMGACConfig | None = None) -> None:
        super().__init__()
        self.config = config or LSTMGACConfig()
        c = self.config
        self.cells = lstm_cells(c.input_size, c.hidden_size, c.num_layers)
        self.output = nn.Linear(c.hidden_size, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The coordinatewise LSTM's initialisation (drawn in the same order, so that equal
        seeds give equal weights)."""
        reset_lstm_cells(self.cells, self.config.hidden_size, self.config.forget_bias)
        bound = 1.0 / math.sqrt(self.config.hidden_size)
        with torch.no_grad():
            self.output.weight.uniform_(-bound, bound)
            self.output.bias.zero_()

    def init_state(self, params: Sequence[Tensor], problems: int = 1) -> OptState:
        """Zero h and c; ``problems``: how many problems lead every tensor (1: the tensors are
        one problem's, as a model's parameters)."""
        check_positive_int("problems", problems)
        n = sum(p.numel() for p in params)
        zeros = zero_hidden(self.config.hidden_size, n, self.output.weight)
        layers = self.config.num_layers
        return {"step": 0, "h": [zeros] * layers, "c": [zeros] * layers, "problems": problems}

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        c = self.config
        g = flatten(grads, self.output.weight.dtype)
        shared = segments(grads, state["problems"], c.share)
        x = preprocess(g.unsqueeze(-1), c.preprocess, c.p).t()  # (input_size, N)
        hs, cs = gac_layers(
            self.cells,
            x,
            [h.t() for h in state["h"]],
            [cell.t() for cell in state["c"]],
            shared,
            c.global_cells,
        )
        # g_t = output_scale (w h + b), as (1, hidden) @ (hidden, N)
        update = torch.addmm(self.output.bias.unsqueeze(1), self.output.weight, hs[-1])
        update = update.squeeze(0) * c.output_scale
        new_state = {
            "step": state["step"] + 1,
            "h": [h.t() for h in hs],
            "c": [cell.t() for cell in cs],
            "problems": state["problems"],
        }
        return unflatten(update, grads), new_state

    def spec(self) -> dict[str, Any]:
        """The config, JSON-ready."""
        return {"kind": "lstm-gac", **asdict(self.config)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
