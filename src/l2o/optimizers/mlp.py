"""A per-parameter MLP optimizer over normalised features, after learned_optimization's
``MLPLOpt`` and ``AdafacMLPLOpt`` (Metz et al., 2020-2022), with a nominal Adam term
(Harrison et al., 2022).

Every coordinate i of every parameter tensor reads the same small MLP (weights shared by all
coordinates, no recurrent state of its own). Its inputs, per coordinate:

    g_i, theta_i                                  the gradient and the parameter
    m_hat_i^(b) for each momentum decay b         ``features.Momentum``
    rms_i = sqrt(v_hat_i) + 1e-8                  ``features.RunningRMS``
    m_hat_i^(b) / rms_i                           Adam-like, scale-free
    fac_i = sqrt(v_fac_i) + 1e-8                  Adafactor's factored second moment
    m_hat_i^(b) / fac_i

each divided by its RMS over the coordinates of its tensor (learned_optimization's
``second_moment_normalizer``: x / sqrt(1e-5 + mean_tensor x^2)), then the step features
tanh(t / s) (``features.step_features``), the same for every coordinate and not normalised.
The MLP (ReLU hidden layers) has two outputs, a direction d and a magnitude a; the update is

    u_i = d_i exp(a_i exp_mult) step_mult  -  exp(w tanh(h_i) + c) m_hat_i^(0.9) / rms_i

where the second term is ``heads.NominalTerm`` on the last hidden layer h: it starts
(w = 0, c = log nominal_lr) as Adam's update with lr = nominal_lr and betas (0.9, rms_decay).
It reads tanh(h), bounded as the LSTM's h is: ReLU units are not, and a coordinate whose
features are far out (a problem that starts to diverge) would otherwise get a learning rate
exp(w h) times the rest, which makes the inner loop explode within a few meta-updates.
The MLP's last layer starts at zero (d = a = 0), so the first updates are exactly Adam's, and
meta-training moves both terms from there.

Adafactor's factored second moment (Shazeer & Stern, 2018): a tensor of at least two dimensions
with a first dimension R >= 2 and C = numel / R >= 2 is read as an R x C matrix (a conv weight
(out, in, kh, kw) as (out, in kh kw)); it keeps running averages of g^2 over its rows and its
columns,

    r_t = b r_{t-1} + (1 - b) mean_j g_ij^2    (R,)      c_t = b c_{t-1} + (1 - b) mean_i g_ij^2  (C,)
    v_fac_ij = r_i c_j / mean(r) / (1 - b^t)

Vectors, scalars and matrices with a side of 1 keep the full second moment instead,
v_fac_i = (b v_{t-1} + (1 - b) g_i^2) / (1 - b^t), as RMSprop does. Either fits in one float per
coordinate: the state ``"factored"`` is an (N,) vector whose segment for an R x C matrix holds
[r, c, zeros] (R + C <= R C) and for any other tensor its v. Per-coordinate state is then
len(momentum) + 2 floats (7 at the defaults), rows of N as ``l2o.optimizers.base`` asks, so the
torch.optim front-end merges and splits it like the LSTM's.

Optionally (``scheduler_size`` > 0) a per-tensor recurrent scheduler sets each parameter
tensor's step size over time (``l2o.optimizers.tensor_scheduler``: the tensor-level RNN of
Wichrowska et al., 2017, as Celo's per-tensor LSTM scheduler, Moudgil et al., 2025). Once per
step and tensor, an LSTM of ``scheduler_size`` units reads the log RMS of the tensor's gradient,
momentum m_hat^(0.9), parameter and Adam direction m_hat^(0.9) / rms, the log ratio of the
update's RMS to the parameter's, the step features and its own previous output, and outputs a
log step-size multiplier s = scheduler_bound tanh(.); the tensor's whole update u (the MLP's and
the nominal term) becomes u exp(s). Its read-out starts at zero (s = 0, a multiplier of exactly
1), so the optimizer still starts as Adam exactly. Its state, an LSTM's h and c and the previous
s, is per tensor (2 scheduler_size + 1 floats per tensor, under the state key ``"tensors"``; see
``l2o.optimizers.base``), not per coordinate; the extra work per step is the LSTM over the T
tensors and one more reduction and one multiplication per tensor (the other mean squares are the
normaliser's).

The per-tensor statistics (normaliser, factored moments, the scheduler's inputs) are taken over
the whole tensor. Tasks that batch independent problems in one tensor (``l2o.tasks``: a leading
problem dimension) therefore share them across their problems, as problems in one batch share
batch norm's; the scheduler likewise gives all problems of a tensor one multiplier.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from l2o.checks import check_positive_int, is_int, set_real, set_reals
from l2o.errors import InvalidInput
from l2o.optimizers.base import PER_TENSOR, OptState, StepOptimizer, flatten, unflatten
from l2o.optimizers.features import Momentum, RunningRMS, step_features
from l2o.optimizers.heads import NominalTerm
from l2o.optimizers.tensor_scheduler import TensorScheduler

ADAM_BETA1 = 0.9  # the nominal term is Adam's update, on the momentum of this decay


@dataclass(frozen=True)
class MLPOptimizerConfig:
    """Architecture of the per-parameter MLP optimizer (``kind = "mlp"``). Defaults after
    learned_optimization's MLPLOpt (2 hidden layers of 32, exp_mult = step_mult = 0.001), with
    a nominal Adam term of learning rate 0.001 that it starts as."""

    hidden_size: int = 32  # units per hidden layer of the MLP shared by all coordinates
    num_layers: int = 2  # hidden layers (ReLU)
    # Decays b of the bias-corrected momenta m_t = b m_{t-1} + (1 - b) g_t it reads; must
    # include 0.9, which the nominal Adam term uses.
    momentum: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99, 0.999)
    # Decay of the running average of g^2 whose bias-corrected root divides the momenta (Adam's
    # beta2 in the nominal term).
    rms_decay: float = 0.999
    # Decay of Adafactor's row and column averages of g^2 (full second moment for vectors).
    adafactor_decay: float = 0.999
    # Timescales s of the step features tanh(t / s) (t = 0, 1, ... the step number).
    time_scales: tuple[float, ...] = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
    # update = direction * exp(magnitude * exp_mult) * step_mult + the nominal term.
    exp_mult: float = 0.001
    step_mult: float = 0.001  # the scale of the MLP's own update (see exp_mult)
    # Initial learning rate of the nominal Adam term (betas 0.9 and rms_decay, eps 1e-8) that
    # the optimizer starts as; 0 = no nominal term (the MLP's update alone).
    nominal_lr: float = 0.001
    # Hidden units of the per-tensor LSTM scheduler, which reads tensor-level statistics (log
    # RMS of the gradient, momentum, parameter and Adam direction, update-to-parameter ratio,
    # step features, its previous output) and multiplies each parameter tensor's whole update
    # by exp(s), s its bounded output (Celo's per-tensor learning-rate multiplier; it starts at
    # exactly 1); 0 = no scheduler.
    scheduler_size: int = 0
    # Bound on the scheduler's log multiplier: s = scheduler_bound tanh(.), so each tensor's
    # update is scaled by a factor in [exp(-scheduler_bound), exp(scheduler_bound)].
    scheduler_bound: float = 2.0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers"):
            check_positive_int(name, getattr(self, name))
        set_reals(
            self, "momentum", lambda b: 0 < b < 1, "a list of decays, each in (0, 1), with 0.9"
        )
        if ADAM_BETA1 not in self.momentum:
            raise InvalidInput(
                f"Invalid momentum: {list(self.momentum)!r} (must include 0.9, the nominal "
                f"Adam term's beta1)"
            )
        for name in ("rms_decay", "adafactor_decay"):
            set_real(self, name, lambda b: 0 < b < 1, "a decay in (0, 1), e.g. 0.999")
        set_reals(
            self,
            "time_scales",
            lambda s: 0 < s < math.inf,
            "a list of timescales in steps, each finite and > 0, e.g. [10, 100]; [] for none",
        )
        for name in ("exp_mult", "step_mult"):
            set_real(self, name, lambda x: 0 < x < math.inf, "a finite number > 0, e.g. 0.001")
        set_real(
            self, "nominal_lr", lambda x: 0 <= x < math.inf, "a learning rate >= 0, e.g. 0.001"
        )
        if not (is_int(self.scheduler_size) and self.scheduler_size >= 0):
            raise InvalidInput(
                f"Invalid scheduler_size: {self.scheduler_size!r} (must be an integer >= 0; "
                f"0 = no per-tensor scheduler)"
            )
        set_real(self, "scheduler_bound", lambda x: 0 < x <= 20, "a number in (0, 20], e.g. 2.0")

    @property
    def input_size(self) -> int:
        """g, theta, the momenta, rms, momenta / rms, fac, momenta / fac; the step features."""
        return 4 + 3 * len(self.momentum) + len(self.time_scales)

    @property
    def state_floats(self) -> int:
        """Floats of state per coordinate: the momenta, v and the factored slot (the
        scheduler's, 2 scheduler_size + 1 per tensor, come on top)."""
        return len(self.momentum) + 2


def _matrix_shape(shape: torch.Size) -> tuple[int, int] | None:
    """(R, C) when a tensor of ``shape`` keeps factored moments (R = shape[0] >= 2,
    C = numel / R >= 2), else None (a full second moment)."""
    if len(shape) < 2:
        return None
    rows, cols = shape[0], math.prod(shape[1:])
    return (rows, cols) if rows >= 2 and cols >= 2 else None


@dataclass(frozen=True)
class FactoredRMS:
    """Adafactor's factored second moment (see the module docstring), one float of state per
    coordinate. ``update`` takes the flat gradient (N,), the tensors' shapes and the step
    t = 1, 2, ...; returns fac = sqrt(v_fac) + 1e-8, (N,), and the new state [slot (N,)]."""

    decay: float
    name = "factored"

    def init(self, like: Tensor) -> list[Tensor]:
        """Zero accumulators for coordinates shaped like ``like`` (N,)."""
        return [torch.zeros_like(like)]

    def update(
        self, grad: Tensor, shapes: Sequence[torch.Size], state: list[Tensor], step: int
    ) -> tuple[Tensor, list[Tensor]]:
        b = self.decay
        numels = [math.prod(s) for s in shapes]
        slots, v_fac = [], []
        # One pass per tensor: the row and column means depend on each tensor's shape.
        for g, slot, shape in zip(grad.split(numels), state[0].split(numels), shapes):
            matrix = _matrix_shape(shape)
            if matrix is None:
                v = torch.lerp(g * g, slot, b)
                slots.append(v)
                v_fac.append(v)
                continue
            rows, cols = matrix
            g2 = (g * g).view(rows, cols)
            r = torch.lerp(g2.mean(1), slot[:rows], b)  # (R,)
            c = torch.lerp(g2.mean(0), slot[rows : rows + cols], b)  # (C,)
            slots.append(torch.cat([r, c, slot.new_zeros(g.numel() - rows - cols)]))
            # 1e-30 keeps an all-zero gradient from giving 0 / 0.
            v_fac.append((torch.outer(r, c) / (r.mean() + 1e-30)).reshape(-1))
        fac = (torch.cat(v_fac) / (1 - b**step)).sqrt() + 1e-8
        return fac, [torch.cat(slots)]


def tensor_mean_squares(x: Tensor, numels: Sequence[int]) -> list[Tensor]:
    """The mean of x^2 over each tensor's coordinates, per feature column. ``x``: (N, F), its
    rows the coordinates of tensors of ``numels`` in order. Returns one (F,) per tensor."""
    # One slice per tensor (far faster on CPU than a scatter of the sums into segments).
    return [t.square().mean(0) for t in x.split(numels)]


def tensor_rms_normalise(
    x: Tensor,
    numels: Sequence[int],
    eps: float = 1e-5,
    mean_squares: Sequence[Tensor] | None = None,
) -> Tensor:
    """x / sqrt(eps + mean of x^2 over each tensor's coordinates), per feature column.
    ``x``: (N, F), its rows the coordinates of tensors of ``numels`` in order;
    ``mean_squares``: ``tensor_mean_squares(x, numels)`` if already taken. Returns (N, F)."""
    if mean_squares is None:
        mean_squares = tensor_mean_squares(x, numels)
    return torch.cat([t * torch.rsqrt(eps + ms) for t, ms in zip(x.split(numels), mean_squares)])


class PerParameterMLP(StepOptimizer):
    """A small MLP applied to every coordinate's normalised features (see the module
    docstring). ``step(grads, state, params=theta_t)`` maps gradients of any shapes to
    updates; it reads the parameters (``reads_params``).

    State: ``"step"``, ``"momentum"`` (len(momentum) tensors (N,)), ``"rms"`` ([(N,)]) and
    ``"factored"`` ([(N,)]), N = total number of coordinates; with the scheduler also
    ``"tensors"``: {"h", "c": (T, scheduler_size), "log_lr": (T,)}, T = number of tensors.
    """

    reads_params = True
    per_tensor_statistics = True  # batched problems are stepped apart (optimizers.problems)

    def __init__(self, config: MLPOptimizerConfig | None = None) -> None:
        super().__init__()
        self.config = config or MLPOptimizerConfig()
        c = self.config
        sizes = [c.input_size] + [c.hidden_size] * c.num_layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.output = nn.Linear(c.hidden_size, 2)  # (direction, magnitude)
        self.nominal = NominalTerm(c.hidden_size, [c.nominal_lr]) if c.nominal_lr else None
        self.register_buffer("scales", torch.tensor(c.time_scales), persistent=False)
        self.momentum = Momentum(c.momentum)
        self.rms = RunningRMS(c.rms_decay)
        self.factored = FactoredRMS(c.adafactor_decay)
        self.scheduler: TensorScheduler | None = None
        self.reset_parameters()
        if c.scheduler_size:  # drawn after the MLP: a seed gives it the same weights either way
            self.scheduler = TensorScheduler(
                c.scheduler_size, len(c.time_scales), c.scheduler_bound
            )

    def reset_parameters(self) -> None:
        """Hidden layers: truncated normal, std 1 / sqrt(fan_in), zero biases (as
        learned_optimization); the last layer at zero; the nominal term at Adam; then the
        scheduler's LSTM, its read-out at zero."""
        with torch.no_grad():
            for layer in self.hidden:
                nn.init.trunc_normal_(layer.weight, std=layer.in_features**-0.5)
                layer.bias.zero_()
            self.output.weight.zero_()
            self.output.bias.zero_()
            if self.nominal is not None:
                self.nominal.start()
        if self.scheduler is not None:
            self.scheduler.reset_parameters()

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        like = self.output.weight.new_zeros(sum(p.numel() for p in params))
        state: OptState = {"step": 0}
        for feature in (self.momentum, self.rms, self.factored):
            state[feature.name] = feature.init(like)
        if self.scheduler is not None:
            state[PER_TENSOR] = self.scheduler.init_state(len(params))
        return state

    def step(
        self,
        grads: Sequence[Tensor],
        state: OptState,
        params: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], OptState]:
        """One step; ``params``: theta_t, shaped like ``grads``."""
        if params is None or len(params) != len(grads):
            raise InvalidInput(
                "the MLP optimizer reads the parameters: pass step(grads, state, "
                "params=theta_t), one tensor per gradient"
            )
        dtype = self.output.weight.dtype
        g = flatten(grads, dtype)
        t = state["step"] + 1
        shapes = [x.shape for x in grads]
        numels = [x.numel() for x in grads]
        momenta, momentum_state = self.momentum.update(g, state["momentum"], t)  # (N, M)
        rms, rms_state = self.rms.update(g, state["rms"], t)  # (N, 1)
        fac, factored_state = self.factored.update(g, shapes, state["factored"], t)  # (N,)
        fac = fac.unsqueeze(-1)
        theta = flatten(params, dtype).unsqueeze(-1)
        features = [g.unsqueeze(-1), theta, momenta, rms, momenta / rms, fac, momenta / fac]
        x = torch.cat(features, dim=-1)  # (N, 4 + 3 M)
        mean_squares = tensor_mean_squares(x, numels)  # T of (4 + 3 M,)
        x = tensor_rms_normalise(x, numels, mean_squares=mean_squares)
        time = step_features(state["step"], self.scales).to(dtype)
        if len(self.config.time_scales):
            x = torch.cat([x, time.expand(x.shape[0], -1)], dim=-1)
        for layer in self.hidden:
            x = torch.relu(layer(x))  # (N, hidden)
        direction, magnitude = self.output(x).unbind(-1)
        # u = d exp(a exp_mult) step_mult
        c = self.config
        update = direction * torch.exp(magnitude * c.exp_mult) * c.step_mult
        if self.nominal is not None:
            # - exp(w tanh(h) + c) m_hat^(0.9) / rms: Adam's update at the start (w = 0)
            adam = momenta[:, c.momentum.index(ADAM_BETA1)] / rms.squeeze(-1)
            update = update + self.nominal(torch.tanh(x).t(), adam.unsqueeze(0))
        new_state = {
            "step": t,
            "momentum": momentum_state,
            "rms": rms_state,
            "factored": factored_state,
        }
        if self.scheduler is None:
            return unflatten(update, grads), new_state
        # The per-tensor scheduler reads the mean squares of g, m_hat^(0.9), theta and
        # m_hat^(0.9) / rms (the normaliser's: columns of ``features``) and of the update.
        m = c.momentum.index(ADAM_BETA1)
        columns = [0, 2 + m, 1, 3 + len(c.momentum) + m]
        pieces = update.split(numels)
        stats = torch.stack(
            [
                torch.cat([ms[columns], (u.dot(u) / max(u.numel(), 1)).unsqueeze(0)])
                for ms, u in zip(mean_squares, pieces)
            ]
        )  # (T, 5), the columns of tensor_scheduler.STATISTICS
        log_lr, new_state[PER_TENSOR] = self.scheduler(stats, time, state[PER_TENSOR])
        multipliers = torch.exp(log_lr).unbind()  # one per tensor
        updates = [
            (u * k).reshape(grad.shape).to(grad.dtype)
            for u, k, grad in zip(pieces, multipliers, grads)
        ]
        return updates, new_state

    def spec(self) -> dict[str, Any]:
        """The config, JSON-ready (lists, not tuples). Without a scheduler its options are left
        out, so that the spec is the one saved before the scheduler existed (checkpoints and
        saved front-end states compare specs)."""
        spec: dict[str, Any] = {"kind": "mlp"}
        for name, value in asdict(self.config).items():
            if name.startswith("scheduler_") and not self.config.scheduler_size:
                continue
            spec[name] = list(value) if isinstance(value, tuple) else value
        return spec

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
