"""NTM-BFGS and NTM-L-BFGS: the learned optimizers with a memory shared by all coordinates of
Andrychowicz et al. (2016), section 2.2 and its appendix on information sharing.

BFGS can be read as a set of coordinatewise processes that communicate through the inverse
Hessian estimate, a sum of outer products. NTM-BFGS gives the coordinatewise LSTM+GAC
(``l2o.optimizers.gac``) such a memory, in the manner of a Neural Turing Machine, but with only
low-rank (outer-product) writes and with the controller and its heads operating coordinatewise.
Each coordinate j of a segment (``l2o.optimizers.coupling``: its problem, or its parameter tensor)
holds one entry of every head's vectors; at step t (n = the segment's coordinates):

    x_t = [pre(grad_t); pre(i_{t-1})]                    controller input (i_0 = 0)
    h_t = LSTM+GAC(x_t, h_{t-1})                         the controller (coordinatewise)
    sigma_t = sqrt((1/n) sum_j grad_{t,j}^2)             the segment's gradient RMS
    [r_t^1..R; a_t^1..W; b_t^1..W] = V [h_t; grad_t / sigma_t] + v
                                                         heads: R read vectors, W left and
                                                         W right write vectors, each in R^n
    M_t = M_{t-1} + (1/n) sum_w a_t^w (b_t^w)^T          write: accumulate outer products
    i_t^k = M_t r_t^k                                    read: a matrix-vector product
    g_t = output_scale (w [h_t; i_t] + b)                the update

M_0 = 0, an n x n matrix per segment, is never formed: it is kept as its factors, the write
vectors, so that i_t^k = (1/n) sum_s a_s (b_s . r_t^k) (one dot product per stored pair: the
segment's coordinates communicate through it). NTM-BFGS keeps every write (``history = 0``: the
memory grows by W outer products per step, up to W T after T steps); NTM-L-BFGS keeps the last
``history`` steps' writes, as L-BFGS keeps its last pairs (s, y). The paper states that one read
head and three write heads suffice to simulate BFGS (the three outer products of its
inverse-Hessian update), given a controller that computes arbitrary coordinatewise functions
and two global averaging cells (the scalars rho = 1/(y.s) and y.Hy): the defaults.

What the paper gives: the controller (an LSTM+GAC), the read vector r_t and read result
i_t = M_t r_t fed back into the controller at the next step, the left and right write vectors
a_t, b_t whose outer product is added to the memory, one read and three write heads for BFGS,
the finite history of NTM-L-BFGS. Where it is silent we chose (and say so at each option):
  * the order within a step: write, then read (i_t reads M_t, which holds this step's writes);
  * the update: a linear read-out of the controller's top layer and of this step's read results
    (the paper: "instead of producing the update directly we attach read and write heads"), so
    that a read such as M_t grad_t / sigma_t (the direction of BFGS's step H grad) enters the
    update at once;
  * scale: the heads read the controller's top layer and the gradient divided by its RMS over
    the segment, sigma_t (a global average, as the paper's GACs compute for L2 clipping), so
    the write and read vectors, the memory and its reads stay bounded whatever the gradient's
    scale, and the update stays bounded as the coordinatewise LSTM's is. We tried two
    alternatives on the 10-d quadratics: heads that read the raw gradient (or their own read
    results) make the memory a polynomial of the gradient's scale, and an untrained NTM-BFGS
    overflowed within 5 steps, its meta-training within 3 epochs; reads multiplied by sigma_t
    in the update (so that sigma M r could be BFGS's H^-1 grad, with r = grad / sigma) make the
    update unbounded and linear in the gradient, and meta-training diverged after 20 epochs, as
    gradient descent with too large a step does;
  * the memory is the average of the outer products over the segment's coordinates (the 1/n):
    reads keep their scale whatever n, as the GACs' averages (BFGS's matrix is n times this;
    the factor is one the write vectors can absorb);
  * read results enter the controller through the same preprocessing as the gradient;
  * initialisation: the controller and the update's weights on h as the coordinatewise LSTM's,
    heads U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with zero biases, and every weight that reads a
    read result (in the controller's first layer and in the update) at zero: the untrained
    NTM-BFGS is an LSTM+GAC, and meta-training turns the memory on.

Costs, per coordinate (K = W min(t, history), or W t without a history limit): state
2 num_layers hidden + R + 2 K floats (the controller's h and c, the last read results, the
coordinate's entries of the stored write vectors). Extra work per step over LSTM+GAC: the
gradient's RMS, the heads, O((R + 2W)(hidden + 1) N); the write, a copy of the stored vectors,
O(K N); the reads, O(R K N) multiply-adds and segment sums. A dense n x n memory per segment would
cost n^2 instead of 2 K n: smaller once K > n / 2 (on 10-d quadratics after 2 steps of 3
writes), but the factored form keeps the state rows of N, which the torch.optim front-end merges
and splits per parameter, and is what makes NTM-L-BFGS's cost linear in n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from l2o.checks import check_positive_int, is_int
from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten
from l2o.optimizers.coupling import Segments, segments
from l2o.optimizers.gac import (
    check_gac_options,
    gac_layers,
    preprocess,
)
from l2o.optimizers.lstm_kernel import lstm_cells, reset_lstm_cells, zero_hidden


@dataclass(frozen=True)
class NTMBFGSConfig:
    """Architecture of NTM-BFGS (``kind = "ntm-bfgs"``, the paper's section 2.2 and appendix):
    an LSTM+GAC controller with read and write heads on a memory shared by the coordinates of a
    segment, written by outer products of left and right write vectors and read by
    matrix-vector products; ``history > 0`` gives NTM-L-BFGS, whose memory keeps only the last
    steps' writes. Defaults: the paper's MNIST LSTM as controller with 5 averaging cells per
    layer, one read and three write heads (enough to simulate BFGS, the paper says), the whole
    history."""

    num_layers: int = 2  # controller LSTM layers (the paper: 2)
    hidden_size: int = 20  # controller cells per layer, averaging cells included (the paper: 20)
    # Global averaging cells per controller layer (the last ones of each layer; see kind
    # "lstm-gac"). The paper: two suffice to simulate BFGS; it does not say how many it used.
    global_cells: int = 5
    # Which coordinates share a memory (and the GAC averages): "all" (every coordinate of the
    # problem, one memory per problem) or "tensor" (one memory per parameter tensor).
    share: str = "all"
    # Read heads: each reads i = M r for its read vector r, fed back to the controller at the
    # next step and read out into the update (the paper: 1 to simulate BFGS).
    read_heads: int = 1
    # Write heads: each adds the outer product a b^T of its left and right write vectors to the
    # memory, averaged over the segment's coordinates (the paper: 3 to simulate BFGS).
    write_heads: int = 3
    # Steps whose writes the memory keeps: 0 = all of them (NTM-BFGS: the memory grows by
    # write_heads outer products per step); k > 0 = the last k steps' (NTM-L-BFGS, as L-BFGS
    # keeps its last k pairs; state and work per step then stay 2 k write_heads per coordinate).
    history: int = 0
    # "log_sign": the gradient and the read results read as (log|v| / p, sign v) (the paper's
    # Appendix A); "none": as they are (the paper's quadratics).
    preprocess: str = "log_sign"
    p: float = 10.0  # log_sign's p: below e^-p, |v| is read as (-1, e^p v) (the paper: 10)
    output_scale: float = 0.1  # the read-out times this is the update (the paper: 0.1)
    # Initial bias of the controller's forget gates (only the initial value; it is meta-trained).
    forget_bias: float = 1.0

    def __post_init__(self) -> None:
        check_gac_options(self)
        check_positive_int("read_heads", self.read_heads)
        check_positive_int("write_heads", self.write_heads)
        if not (is_int(self.history) and self.history >= 0):
            raise InvalidInput(
                f"Invalid history: {self.history!r} (must be an integer >= 0: 0 keeps every "
                f"write, k > 0 the last k steps')"
            )

    @property
    def per_signal(self) -> int:
        """Controller inputs per signal (the gradient, each read result)."""
        return 2 if self.preprocess == "log_sign" else 1

    @property
    def input_size(self) -> int:
        return self.per_signal * (1 + self.read_heads)

    def state_floats(self, steps: int) -> int:
        """Floats of state per coordinate after ``steps`` steps (see the module doc's costs)."""
        kept = steps if self.history == 0 else min(steps, self.history)
        return (
            2 * self.num_layers * self.hidden_size + self.read_heads + 2 * self.write_heads * kept
        )


def write(left: Tensor, right: Tensor, a: Tensor, b: Tensor, history: int) -> tuple[Tensor, Tensor]:
    """M_t = M_{t-1} + (1/n) sum_w a^w (b^w)^T, kept as factors: ``left`` and ``right`` (N, K)
    hold the stored write vectors as columns, oldest first; a and b (N, W) this step's. With
    ``history`` k > 0 the oldest step's W columns make room (K = k W stays fixed)."""
    if history:
        w = a.shape[1]
        return torch.cat([left[:, w:], a], 1), torch.cat([right[:, w:], b], 1)
    return torch.cat([left, a], 1), torch.cat([right, b], 1)


def read(left: Tensor, right: Tensor, r: Tensor, shared: Segments) -> Tensor:
    """i^k = M r^k for each read vector (the columns of r, (N, R)), M = (1/n) left right^T per
    segment of ``shared``: the dot products right^T r^k over each segment's coordinates,
    averaged, then spread back and combined with ``left``. Returns (N, R)."""
    if left.shape[1] == 0:
        return torch.zeros_like(r)
    if shared.block is not None:  # equal blocks in order: products within each segment
        blocks = (shared.count, shared.block)
        rl, rr, rv = (t.reshape(*blocks, t.shape[1]) for t in (left, right, r))
        dots = torch.einsum("snk,snr->skr", rr, rv) / shared.block  # (S, K, R): b_s . r / n
        return torch.einsum("snk,skr->snr", rl, dots).reshape(r.shape)
    dots = shared.mean(right.unsqueeze(-1) * r.unsqueeze(1), dim=0)  # (N, K, R): b_s . r / n
    return (left.unsqueeze(-1) * dots).sum(1)


class NTMBFGS(StepOptimizer):
    """NTM-BFGS, or NTM-L-BFGS with ``history`` > 0 (see the module docstring).

    State: ``"step"`` (t), ``"h"`` and ``"c"`` (the controller's, one (N, hidden_size) tensor
    per layer), ``"reads"`` (N, read_heads) (i_t), ``"left"`` and ``"right"`` (N, K): the stored
    left and right write vectors, oldest first (K = write_heads t, or write_heads history with a
    history: the memory's factors), and ``"problems"`` (how many problems lead the tensors,
    ``l2o.optimizers.coupling``). All tensors are rows of the N coordinates.
    """

    couples_coordinates = True  # the memory and averages run over segments (coupling.py)

    def __init__(self, config: NTMBFGSConfig | None = None) -> None:
        super().__init__()
        self.config = config or NTMBFGSConfig()
        c = self.config
        self.cells = lstm_cells(c.input_size, c.hidden_size, c.num_layers)
        # [r; a; b] = V [h; grad / sigma] + v
        self.heads = nn.Linear(c.hidden_size + 1, c.read_heads + 2 * c.write_heads)
        # g = output_scale (w [h; i] + b)
        self.output = nn.Linear(c.hidden_size + c.read_heads, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Our choices (the paper is silent; module doc): the controller and the update's
        weights on h as the coordinatewise LSTM's, the heads U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        with zero biases, every weight on a read result zero."""
        c = self.config
        reset_lstm_cells(self.cells, c.hidden_size, c.forget_bias)
        bound = 1.0 / math.sqrt(c.hidden_size)
        with torch.no_grad():
            self.cells[0].weight[:, c.per_signal : c.input_size].zero_()  # reads -> controller
            head_bound = 1.0 / math.sqrt(self.heads.in_features)
            self.heads.weight.uniform_(-head_bound, head_bound)
            self.heads.bias.zero_()
            self.output.weight.uniform_(-bound, bound)
            self.output.weight[:, c.hidden_size :].zero_()  # reads -> update
            self.output.bias.zero_()

    def init_state(self, params: Sequence[Tensor], problems: int = 1) -> OptState:
        """Zero controller state, zero read results and an empty memory (M_0 = 0): with a
        history, k steps of zero write vectors; ``problems``: how many problems lead every
        tensor (1: the tensors are one problem's, as a model's parameters)."""
        check_positive_int("problems", problems)
        c = self.config
        ref = self.output.weight
        n = sum(p.numel() for p in params)
        zeros = zero_hidden(c.hidden_size, n, ref)
        stored = c.write_heads * c.history
        return {
            "step": 0,
            "h": [zeros] * c.num_layers,
            "c": [zeros] * c.num_layers,
            "reads": ref.new_zeros(n, c.read_heads),
            "left": ref.new_zeros(n, stored),
            "right": ref.new_zeros(n, stored),
            "problems": problems,
        }

    def step(self, grads: Sequence[Tensor], state: OptState) -> tuple[list[Tensor], OptState]:
        c = self.config
        g = flatten(grads, self.output.weight.dtype)
        shared = segments(grads, state["problems"], c.share)
        # x_t = [pre(grad_t); pre(i_{t-1})], one coordinate per column: (input_size, N)
        signals = torch.cat([g.unsqueeze(-1), state["reads"]], 1)
        x = preprocess(signals, c.preprocess, c.p).t()
        hs, cs = gac_layers(
            self.cells,
            x,
            [h.t() for h in state["h"]],
            [cell.t() for cell in state["c"]],
            shared,
            c.global_cells,
        )
        # sigma_t, the gradient's RMS over each segment (at every coordinate), and
        # [r; a; b] = V [h; grad / sigma] + v: (R + 2W, N)
        sigma = shared.mean(g * g, dim=0).clamp_min(1e-30).sqrt()
        top = torch.cat([hs[-1], (g / sigma).unsqueeze(0)])
        heads = torch.addmm(self.heads.bias.unsqueeze(1), self.heads.weight, top)
        r, a, b = heads.t().split([c.read_heads, c.write_heads, c.write_heads], dim=1)
        left, right = write(state["left"], state["right"], a, b, c.history)
        reads = read(left, right, r, shared)  # i_t = M_t r_t: (N, R)
        # g_t = output_scale (w [h; i] + b)
        out = torch.addmm(
            self.output.bias.unsqueeze(1), self.output.weight, torch.cat([hs[-1], reads.t()])
        )
        update = out.squeeze(0) * c.output_scale
        new_state = {
            "step": state["step"] + 1,
            "h": [h.t() for h in hs],
            "c": [cell.t() for cell in cs],
            "reads": reads,
            "left": left,
            "right": right,
            "problems": state["problems"],
        }
        return unflatten(update, grads), new_state

    def spec(self) -> dict[str, Any]:
        """The config, JSON-ready."""
        return {"kind": "ntm-bfgs", **asdict(self.config)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
