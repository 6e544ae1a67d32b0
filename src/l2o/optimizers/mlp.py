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
``nominal_squash = "hardtanh"`` reads min(h, 1) instead (hardtanh of h >= 0), bounded alike and
cheaper: over every hidden unit of every coordinate, tanh is about a tenth of the step without
autograd (benchmarks/speed/results/speed-generalist.md: 10.6x torch Adam against 9.5x).
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

The step without autograd
-------------------------
``step`` as written above is the reference: meta-training differentiates through it, so it
runs whenever autograd records (``torch.is_grad_enabled()``), unchanged. Without autograd (the
torch.optim front-end, evaluation rollouts) ``step`` takes a fast path, ``_fast_step``, that
computes the same numbers, the new state bit for bit (the same operations on it) and the
updates to float rounding (tests/test_mlp_fast_step.py), in about a tenth of the time and a
fifth of the peak memory at a million parameters (benchmarks/speed/results/speed-generalist.md:
9.5x torch.optim.Adam's step time instead of about 80x, 60 instead of about 300 bytes per
parameter):

- The normaliser is folded into the first layer: for tensor j, x_norm W1^T = x (diag(s_j) W1^T)
  with s_j = 1 / sqrt(1e-5 + mean_j x^2) per feature, so the normalised N x F copy is never
  built. A first pass over the coordinates takes the step of the per-coordinate state and each
  tensor's sums of the features' squares; a second builds the features again and runs the MLP
  with the first layer's weights scaled per tensor. The bias corrections of the momenta and of
  the roots (``_FastStep``), the step features (a bias), step_mult and exp_mult go into the
  weights as well.
- Both passes walk the coordinates in chunks (``chunk_size`` = 16384 on the CPU, a chunk's
  features and hidden units staying in cache; ``ChunkPlan``): a tensor larger than a chunk in
  chunks of its own (whole rows of a factored matrix), its state stepped whole beforehand,
  smaller tensors packed several to a chunk. A chunk's features are rows of one scratch block
  (no concatenation of strided columns), with a row of ones for the bias; the buffers are kept
  between steps.
- A new state is one (M + 2, N) matrix whose rows are the momenta, v and the factored slots,
  so that a chunk's momenta are one matrix for the first layer. A caller that owns the state
  (``in_place=True``: the torch.optim front-end, see ``l2o.optimizers.base``) has the new state
  written into it once it is such a matrix (from its second step on), as torch.optim does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace
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
COSINE_PIECE = 1 << 17  # coordinates per piece of the cosines without autograd (in cache)
SQUASHES = ("tanh", "hardtanh")  # what the nominal term reads of h (config.nominal_squash)


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
    # Gain beta of the hypergradient adaptation of each tensor's step size (Baydin et al.,
    # 2018, "Online learning rate adaptation with hypergradient descent", in its normalised
    # form on the log rate): per tensor, a_t = clip(a_{t-1} + beta cos(g_t, d_{t-1}),
    # +-adaptation_bound), d_{t-1} the nominal Adam direction of the previous step, and the
    # tensor's whole update is scaled by exp(a_t) (times the scheduler's exp(s_t)). beta is a
    # meta-parameter (kept > 0) that starts at this value; 0 = no adaptation.
    lr_adaptation: float = 0.0
    # Bound on a: each tensor's rate stays within [exp(-bound), exp(bound)] x its nominal one.
    adaptation_bound: float = 7.0
    # What the nominal term's log rate w s(h) + c reads of the last hidden layer h (ReLU units,
    # h >= 0), bounded either way: "tanh", s(h) = tanh(h), or "hardtanh", s(h) = min(h, 1),
    # which is cheaper (a tenth of the step without autograd at the generalist's size).
    nominal_squash: str = "tanh"

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
        set_real(
            self, "lr_adaptation", lambda x: 0 <= x <= 10, "a gain in [0, 10], e.g. 0.3; 0 = off"
        )
        set_real(self, "adaptation_bound", lambda x: 0 < x <= 20, "a number in (0, 20], e.g. 7.0")
        if self.nominal_squash not in SQUASHES:
            raise InvalidInput(
                f"Invalid nominal_squash: {self.nominal_squash!r} (valid: {', '.join(SQUASHES)})"
            )

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


@dataclass(frozen=True)
class Segment:
    """Coordinates ``start:stop`` of tensor ``tensor``, at columns ``columns`` of a chunk."""

    tensor: int
    start: int
    stop: int
    columns: slice


@dataclass(frozen=True)
class Chunk:
    """Flat coordinates ``start:stop`` (of all tensors, in order): one or more segments.
    ``own``: a piece of a tensor larger than a chunk (its state steps whole, before the chunks)."""

    start: int
    stop: int
    segments: tuple[Segment, ...]
    own: bool


@dataclass(frozen=True)
class ChunkPlan:
    """How the step without autograd walks the coordinates: in chunks of at most
    ``chunk_size`` (or one row of a factored matrix, if longer). A tensor larger than that
    (``large``) is cut into chunks of its own (whole rows of a factored matrix); smaller ones
    are packed whole, in order, several to a chunk."""

    shapes: tuple[torch.Size, ...]
    chunks: tuple[Chunk, ...]
    offsets: tuple[int, ...]  # each tensor's first flat coordinate
    large: tuple[int, ...]  # the tensors cut into chunks of their own
    tensor_of_segment: tuple[int, ...]  # the tensor of every segment, chunk after chunk
    width: int  # the widest chunk (at least 1)

    @classmethod
    def build(cls, shapes: Sequence[torch.Size], chunk_size: int) -> ChunkPlan:
        numels = [math.prod(s) for s in shapes]
        offsets = list(itertools.accumulate(numels, initial=0))
        chunks: list[Chunk] = []
        pack: list[tuple[int, int, int]] = []  # (tensor, start, stop) of whole small tensors
        packed = 0  # coordinates in ``pack``

        def add(pieces: list[tuple[int, int, int]], own: bool) -> None:
            segments, column = [], 0
            for j, start, stop in pieces:
                segments.append(Segment(j, start, stop, slice(column, column + stop - start)))
                column += stop - start
            start = offsets[pieces[0][0]] + pieces[0][1]
            chunks.append(Chunk(start, start + column, tuple(segments), own))

        large = []
        for j, (shape, n) in enumerate(zip(shapes, numels)):
            if n <= chunk_size:
                if pack and packed + n > chunk_size:
                    add(pack, False)
                    pack, packed = [], 0
                pack.append((j, 0, n))
                packed += n
                continue
            if pack:
                add(pack, False)
                pack, packed = [], 0
            large.append(j)
            matrix = _matrix_shape(shape)
            size = chunk_size if matrix is None else max(1, chunk_size // matrix[1]) * matrix[1]
            for start in range(0, n, size):
                add([(j, start, min(start + size, n))], True)
        if pack:
            add(pack, False)
        width = max((chunk.stop - chunk.start for chunk in chunks), default=1)
        return cls(
            shapes=tuple(shapes),
            chunks=tuple(chunks),
            offsets=tuple(offsets[:-1]),
            large=tuple(large),
            tensor_of_segment=tuple(s.tensor for chunk in chunks for s in chunk.segments),
            width=max(width, 1),
        )


def fast_feature_order(moments: int) -> list[int]:
    """The reference's feature column (``PerParameterMLP.step``: g, theta, the momenta, rms,
    momenta / rms, fac, momenta / fac) of each feature of the step without autograd, in its
    order: the rows of its scratch block, then the momenta (rows of the state),

        g, theta, rms, fac, m^(b) / rms for each b, m^(b) / fac for each b, m^(b) for each b.
    """
    m = moments
    ratios = [*range(3 + m, 3 + 2 * m), *range(4 + 2 * m, 4 + 3 * m)]
    return [0, 1, 2 + m, 3 + 2 * m, *ratios, *range(2, 2 + m)]


def _state_block(tensors: Sequence[Tensor]) -> Tensor | None:
    """The (len(tensors), N) matrix whose rows are ``tensors``, in order, if they are the rows
    of one (as the step without autograd makes its state), else None."""
    first = tensors[0]
    if any(t.dim() != 1 or t.stride(0) != 1 for t in tensors):
        return None
    n, size, start = first.shape[0], first.element_size(), first.data_ptr()
    gap = (tensors[1].data_ptr() - start) // size if len(tensors) > 1 else n
    for i, t in enumerate(tensors):
        if (
            t.shape[0] != n
            or t.dtype != first.dtype
            or t.device != first.device
            or t.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
            or t.data_ptr() != start + i * gap * size
        ):
            return None
    return first.as_strided((len(tensors), n), (gap, 1)) if gap >= n else None


class _Scratch:
    """The buffers of the step without autograd, kept between steps, and their views for each
    chunk width: ``x``, the feature rows but the momenta (``fast_feature_order``; see
    ``_FastStep`` for their scales) and a row of ones (the first layer's bias); ``h`` and
    ``h2``, a hidden layer's units and a row of ones (the next layer's bias); ``out``: the
    direction, the magnitude and the nominal term's log rate; ``tmp``: a row of
    temporaries."""

    def __init__(
        self, moments: int, hidden: int, width: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        rows = 4 + 2 * moments
        self.moments, self.hidden, self.width = moments, hidden, width
        self.dtype, self.device = dtype, device

        def empty(count: int) -> Tensor:
            return torch.empty(count, width, dtype=dtype, device=device)

        self.x, self.h, self.h2 = empty(rows + 1), empty(hidden + 1), empty(hidden + 1)
        for ones in (self.x[rows], self.h[hidden], self.h2[hidden]):
            ones.fill_(1.0)
        self.out, self.tmp = empty(3), empty(1)
        self._views: dict[int, SimpleNamespace] = {}

    def fits(self, width: int, dtype: torch.dtype, device: torch.device) -> bool:
        return width <= self.width and dtype == self.dtype and device == self.device

    def at(self, width: int) -> SimpleNamespace:
        """Views for a chunk of ``width`` coordinates (made once per width)."""
        views = self._views.get(width)
        if views is None:
            m, hidden = self.moments, self.hidden
            x, tmp, out = self.x[:, :width], self.tmp[:, :width], self.out[:, :width]
            views = SimpleNamespace(
                x=x,
                features=x[:-1],
                derived=x[2:-1],  # rms, fac and the ratios
                g=x[0],
                theta=x[1],
                rms=x[2],
                fac=x[3],
                roots=x[2:4],  # rms and fac
                ratios=x[4 : 4 + 2 * m].unflatten(0, (2, m)),  # (2, M, width)
                roots_3d=x[2:4].unsqueeze(1),  # (2, 1, width)
                tmp0=tmp[0],
                layers=[
                    SimpleNamespace(units=h[:hidden, :width], with_ones=h[:, :width])
                    for h in (self.h, self.h2)
                ],
                direction=out[0],
                magnitude=out[1],
                direction_magnitude=out[:2],
                rate=out[2:],
                rate_row=out[2],
                exps=out[1:],
            )
            self._views[width] = views
        return views


class _FastStep:
    """One step without autograd over a ``ChunkPlan`` (see ``PerParameterMLP._fast_step``).
    ``old``: the per-coordinate state [momenta..., v, factored slot] before the step; ``new``:
    the (M + 2, N) matrix whose rows are the state after it (``old``'s rows when the step is
    taken in place): the momenta of a chunk are then one (M, width) matrix for the first layer.

    Its features are the reference's feature columns up to a factor each (``factors``, in
    ``fast_feature_order``), which the first layer's weights take instead: the momenta m^(b) are
    not bias-corrected (m_hat = m / (1 - b^t)), and the roots leave their corrections out,

        rms' = sqrt(v) + 1e-8 sqrt(1 - b2^t) = rms sqrt(1 - b2^t),

    likewise fac' = fac sqrt(1 - b_fac^t) (for a factored matrix the outer product of
    sqrt(r / mean(r)) and sqrt(c), plus that epsilon), so that a root is one ``sqrt``."""

    def __init__(
        self,
        config: MLPOptimizerConfig,
        plan: ChunkPlan,
        grads: list[Tensor],
        params: list[Tensor],
        old: list[Tensor],
        new: Tensor,
        t: int,
    ) -> None:
        self.plan, self.grads, self.params, self.old = plan, grads, params, old
        m = self.moments = len(config.momentum)
        self.rows = list(new.unbind())  # views made once: the chunks slice them
        self.momenta = new[:m]
        self.momenta_3d = self.momenta.unsqueeze(0)
        self.v, self.slot = self.rows[m], self.rows[m + 1]
        self.decays, self.rms_decay = config.momentum, config.rms_decay
        self.fac_decay = config.adafactor_decay
        momenta = [1 / (1 - b**t) for b in config.momentum]
        rms, fac = math.sqrt(1 - config.rms_decay**t), math.sqrt(1 - config.adafactor_decay**t)
        self.roots_eps = new.new_tensor([[1e-8 * rms], [1e-8 * fac]])
        self.factors = [
            *(1.0, 1.0, 1 / rms, 1 / fac),
            *(rms * k for k in momenta),
            *(fac * k for k in momenta),
            *momenta,
        ]
        self.matrices: dict[int, tuple[int, Tensor, Tensor]] = {}

    def whole_tensors(self, sums: Tensor) -> None:
        """Before the chunks: the state step of every tensor larger than a chunk, whole, with
        the operations of ``Momentum``, ``RunningRMS`` and ``FactoredRMS``, and its sums of
        g^2, theta^2 and m^2 (into ``sums``, (T, features)); the factored moments of every
        matrix, kept as sqrt(r / mean(r)) and sqrt(c), whose outer product is the fac row's."""
        plan, m, b = self.plan, self.moments, self.fac_decay
        large = set(plan.large)
        for j, (g, shape) in enumerate(zip(self.grads, plan.shapes)):
            matrix = _matrix_shape(shape)
            if j not in large and matrix is None:
                continue  # steps in its chunk
            o = plan.offsets[j]
            span = slice(o, o + g.numel())
            g2 = g * g
            if j in large:
                for i, decay in enumerate(self.decays):
                    torch.lerp(g, self.old[i][span], decay, out=self.rows[i][span])
                torch.lerp(g2, self.old[m][span], self.rms_decay, out=self.v[span])
                if matrix is None:
                    torch.lerp(g2, self.old[-1][span], b, out=self.slot[span])
                theta = self.params[j]
                sums[j, 0] = g2.sum()
                sums[j, 1] = theta.dot(theta)
            if matrix is not None:
                rows, cols = matrix
                g2 = g2.view(rows, cols)
                r = torch.lerp(
                    g2.mean(1), self.old[-1][o : o + rows], b, out=self.slot[o : o + rows]
                )
                end = o + rows + cols
                c = torch.lerp(
                    g2.mean(0), self.old[-1][o + rows : end], b, out=self.slot[o + rows : end]
                )
                self.matrices[j] = (cols, (r / (r.mean() + 1e-30)).sqrt(), c.sqrt())

    def features(self, chunk: Chunk, v: SimpleNamespace, pass_: int) -> Tensor:
        """Fill the chunk's feature rows; return its momenta, (M, width). In pass 1 a chunk of
        small tensors first takes their state step (those of large ones stepped whole) and
        the rows g and theta of large ones are left out (their sums are taken whole); pass 2
        reads the new state."""
        a, b = chunk.start, chunk.stop
        segments, grads = chunk.segments, self.grads
        g = v.g
        if pass_ == 2 or not chunk.own:
            if len(segments) == 1:
                s = segments[0]
                g.copy_(grads[s.tensor][s.start : s.stop])
                v.theta.copy_(self.params[s.tensor][s.start : s.stop])
            else:
                for s in segments:
                    g[s.columns].copy_(grads[s.tensor][s.start : s.stop])
                    v.theta[s.columns].copy_(self.params[s.tensor][s.start : s.stop])
        write = pass_ == 1 and not chunk.own
        if write:
            old, new = self.old, self.rows
            for i, decay in enumerate(self.decays):
                torch.lerp(g, old[i][a:b], decay, out=new[i][a:b])
            m = self.moments
            g2 = torch.mul(g, g, out=v.tmp0)
            torch.lerp(g2, old[m][a:b], self.rms_decay, out=self.v[a:b])
        torch.sqrt(self.v[a:b], out=v.rms)
        for s in segments:
            fac = v.fac if len(segments) == 1 else v.fac[s.columns]
            matrix = self.matrices.get(s.tensor)
            if matrix is not None:
                cols, root_r, root_c = matrix
                rows = root_r[s.start // cols : s.stop // cols]
                torch.outer(rows, root_c, out=fac.view(-1, cols))
                continue
            o = self.plan.offsets[s.tensor]
            slot = slice(o + s.start, o + s.stop)
            if write:
                gs = grads[s.tensor][s.start : s.stop]
                g2 = torch.mul(gs, gs, out=fac)
                torch.lerp(g2, self.old[-1][slot], self.fac_decay, out=self.slot[slot])
            torch.sqrt(self.slot[slot], out=fac)
        v.roots.add_(self.roots_eps)  # rms' and fac' (see the class docstring)
        torch.div(self.momenta_3d[:, :, a:b], v.roots_3d, out=v.ratios)  # m / rms', m / fac'
        return self.momenta[:, a:b]


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
    steps_in_place = True  # without autograd, a caller that owns the state may ask for it
    # Coordinates per chunk of a step taken without autograd (see the module docstring): on
    # the CPU, so that a chunk's features and hidden units stay in cache; on an accelerator,
    # to bound the scratch memory (about 50 floats per coordinate of a chunk at the defaults).
    chunk_size = 16384
    accelerator_chunk_size = 1 << 20

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
        # log beta of the hypergradient adaptation (config.lr_adaptation; no RNG drawn)
        self.adaptation_log_gain: nn.Parameter | None = None
        if c.lr_adaptation:
            self.adaptation_log_gain = nn.Parameter(torch.tensor(math.log(c.lr_adaptation)))
        self.reset_parameters()
        if c.scheduler_size:  # drawn after the MLP: a seed gives it the same weights either way
            self.scheduler = TensorScheduler(
                c.scheduler_size,
                len(c.time_scales),
                c.scheduler_bound,
                extra_inputs=2 if c.lr_adaptation else 0,  # cos(g_t, d_{t-1}) and a_t / bound
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
            if self.adaptation_log_gain is not None:
                self.adaptation_log_gain.fill_(math.log(self.config.lr_adaptation))
        if self.scheduler is not None:
            self.scheduler.reset_parameters()

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        like = self.output.weight.new_zeros(sum(p.numel() for p in params))
        state: OptState = {"step": 0}
        for feature in (self.momentum, self.rms, self.factored):
            state[feature.name] = feature.init(like)
        per_tensor: OptState = {}
        if self.scheduler is not None:
            per_tensor.update(self.scheduler.init_state(len(params)))
        if self.adaptation_log_gain is not None:
            per_tensor["adapt"] = like.new_zeros(len(params))  # a_0 = 0: the nominal rate
        if per_tensor:
            state[PER_TENSOR] = per_tensor
        return state

    def _log_multipliers(
        self, cosines: Tensor | None, stats: Tensor | None, time: Tensor, state: OptState
    ) -> tuple[Tensor | None, OptState]:
        """Each tensor's log step-size multiplier (T,), the adaptation's a_t plus the
        scheduler's s_t (either alone when the other is off; None when both are), and the new
        per-tensor state. ``cosines``: cos(g_t, d_{t-1}) per tensor (``_cosines``); ``stats``:
        the scheduler's mean squares (T, 5), given when it has one."""
        log_multiplier, extra, adapt = None, None, None
        if cosines is not None:
            # a_t = clip(a_{t-1} + beta cos, +-bound); the scheduler reads cos and a_t / bound
            bound = self.config.adaptation_bound
            gain = torch.exp(self.adaptation_log_gain)
            adapt = (state[PER_TENSOR]["adapt"] + gain * cosines).clamp(-bound, bound)
            extra = torch.stack([cosines, adapt / bound], dim=-1)
            log_multiplier = adapt
        per_tensor: OptState = {}
        if self.scheduler is not None:
            log_lr, per_tensor = self.scheduler(stats, time, state[PER_TENSOR], extra)
            log_multiplier = log_lr if log_multiplier is None else log_multiplier + log_lr
        if adapt is not None:
            per_tensor["adapt"] = adapt
        return log_multiplier, per_tensor

    def _cosines(
        self, grads: Sequence[Tensor], momentum: Tensor, v: Tensor, step: int
    ) -> Tensor | None:
        """Per tensor j, cos(g_t, d_{t-1}) over its coordinates: d_{t-1} = m_{t-1}^(0.9) /
        (sqrt(v_{t-1}) + 1e-8 sqrt(1 - b2^(t-1))), the previous step's Adam direction up to a
        positive factor (its bias corrections, which a cosine does not see), from the state
        before the step (``momentum``, ``v``: flat, (N,)); ``grads``: flat, one per tensor.
        All zeros at the first step (no previous direction); None when the adaptation is off.
        Our choice where Baydin et al. use the previous update itself: the nominal direction
        needs no state of its own, and the MLP's part of the update starts at zero."""
        if self.adaptation_log_gain is None:
            return None
        if step == 0:
            return momentum.new_zeros(len(grads))
        eps = 1e-8 * math.sqrt(1 - self.config.rms_decay**step)
        if not torch.is_grad_enabled():  # the same maths in one buffer (no allocation per op)
            return self._cosines_no_grad(grads, momentum, v, eps)
        out, start = [], 0
        for g in grads:
            n = g.numel()
            d = momentum[start : start + n] / (v[start : start + n].sqrt() + eps)
            start += n
            out.append(
                g.dot(d) / (torch.linalg.vector_norm(g) * torch.linalg.vector_norm(d) + 1e-30)
            )
        return torch.stack(out)

    def _cosines_no_grad(
        self, grads: Sequence[Tensor], momentum: Tensor, v: Tensor, eps: float
    ) -> Tensor:
        """``_cosines`` without autograd: d computed piece by piece into one buffer, kept
        between steps, each piece's sums taken while it is in cache (pieces of at most
        ``COSINE_PIECE`` coordinates within a tensor)."""
        width = min(v.numel(), COSINE_PIECE)
        buffer = self.__dict__.get("_cosine_buffer")
        if buffer is None or buffer.numel() < width or buffer.dtype != v.dtype:
            buffer = self.__dict__["_cosine_buffer"] = v.new_empty(width)
        sums = v.new_zeros(len(grads), 3)  # g.d, d.d, g.g per tensor
        piece = v.new_empty(3)  # a later piece's sums, added to its tensor's
        start = 0
        for j, g in enumerate(grads):
            for a in range(0, g.numel(), COSINE_PIECE):
                b = min(a + COSINE_PIECE, g.numel())
                out = sums[j] if a == 0 else piece
                d = torch.sqrt(v[start + a : start + b], out=buffer[: b - a]).add_(eps)
                torch.div(momentum[start + a : start + b], d, out=d)
                torch.dot(g[a:b], d, out=out[0])
                torch.dot(d, d, out=out[1])
                torch.dot(g[a:b], g[a:b], out=out[2])
                if a:
                    sums[j] += piece
            start += g.numel()
        return sums[:, 0] / ((sums[:, 1] * sums[:, 2]).sqrt() + 1e-30)

    def step(
        self,
        grads: Sequence[Tensor],
        state: OptState,
        params: Sequence[Tensor] | None = None,
        in_place: bool = False,
    ) -> tuple[list[Tensor], OptState]:
        """One step; ``params``: theta_t, shaped like ``grads``. Without autograd the step
        takes the fast path (see the module docstring), which with ``in_place`` (a caller that
        owns ``state``, see ``l2o.optimizers.base``) writes the new state into ``state``'s
        tensors."""
        if params is None or len(params) != len(grads):
            raise InvalidInput(
                "the MLP optimizer reads the parameters: pass step(grads, state, "
                "params=theta_t), one tensor per gradient"
            )
        if not torch.is_grad_enabled():
            return self._fast_step(grads, state, params, in_place)
        dtype = self.output.weight.dtype
        g = flatten(grads, dtype)
        t = state["step"] + 1
        shapes = [x.shape for x in grads]
        numels = [x.numel() for x in grads]
        c = self.config
        cosines = self._cosines(
            g.split(numels), state["momentum"][c.momentum.index(ADAM_BETA1)], state["rms"][0],
            state["step"],
        )  # fmt: skip
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
        update = direction * torch.exp(magnitude * c.exp_mult) * c.step_mult
        if self.nominal is not None:
            # - exp(w s(h) + c) m_hat^(0.9) / rms: Adam's update at the start (w = 0)
            adam = momenta[:, c.momentum.index(ADAM_BETA1)] / rms.squeeze(-1)
            squashed = torch.tanh(x) if c.nominal_squash == "tanh" else x.clamp(max=1.0)
            update = update + self.nominal(squashed.t(), adam.unsqueeze(0))
        new_state = {
            "step": t,
            "momentum": momentum_state,
            "rms": rms_state,
            "factored": factored_state,
        }
        if self.scheduler is None and cosines is None:
            return unflatten(update, grads), new_state
        pieces = update.split(numels)
        stats = None
        if self.scheduler is not None:
            # The per-tensor scheduler reads the mean squares of g, m_hat^(0.9), theta and
            # m_hat^(0.9) / rms (the normaliser's: columns of ``features``) and of the update.
            m = c.momentum.index(ADAM_BETA1)
            columns = [0, 2 + m, 1, 3 + len(c.momentum) + m]
            stats = torch.stack(
                [
                    torch.cat([ms[columns], (u.dot(u) / max(u.numel(), 1)).unsqueeze(0)])
                    for ms, u in zip(mean_squares, pieces)
                ]
            )  # (T, 5), the columns of tensor_scheduler.STATISTICS
        log_multiplier, new_state[PER_TENSOR] = self._log_multipliers(cosines, stats, time, state)
        multipliers = torch.exp(log_multiplier).unbind()  # one per tensor
        updates = [
            (u * k).reshape(grad.shape).to(grad.dtype)
            for u, k, grad in zip(pieces, multipliers, grads)
        ]
        return updates, new_state

    def _fast_step(
        self, grads: Sequence[Tensor], state: OptState, params: Sequence[Tensor], in_place: bool
    ) -> tuple[list[Tensor], OptState]:
        """``step`` without autograd (see the module docstring): the same maths, chunk by
        chunk, the normaliser folded into the first layer's weights per tensor."""
        c = self.config
        weight = self.output.weight
        dtype, device = weight.dtype, weight.device
        m = len(c.momentum)
        rows = 4 + 2 * m  # the scratch block's feature rows (the momenta are the state's)
        step = state["step"]
        t = step + 1
        numels = [g.numel() for g in grads]
        total = sum(numels)
        plan = self._plan([g.shape for g in grads], device)
        old = [*state["momentum"], *state["rms"], *state["factored"]]
        new = _state_block(old) if in_place else None
        if new is None:  # a new state, its rows one matrix (in place from the next step on)
            new = torch.empty(m + 2, total, dtype=old[0].dtype, device=old[0].device)
            new[-1].zero_()  # the factored slots' unused tail
        run = _FastStep(
            c,
            plan,
            [g.detach().reshape(-1).to(dtype) for g in grads],
            [p.detach().reshape(-1).to(dtype) for p in params],
            old,
            new,
            t,
        )
        # Before the state is stepped (in place, it is overwritten): cos(g_t, d_{t-1}).
        cosines = self._cosines(run.grads, old[c.momentum.index(ADAM_BETA1)], old[m], step)
        sums = torch.zeros(len(grads), rows + m, dtype=dtype, device=device)
        run.whole_tensors(sums)
        scratch = self._scratch(plan.width, dtype, device)

        # Pass 1: the new state, and the norm of every feature over each segment (of large
        # tensors, but for g, theta and the momenta, whose sums are taken whole).
        segments = len(plan.tensor_of_segment)
        norms_x = torch.zeros(segments, rows, dtype=dtype, device=device)
        norms_m = torch.zeros(segments, m, dtype=dtype, device=device)
        norms_derived = norms_x[:, 2:]
        norm = torch.linalg.vector_norm
        k = 0
        for chunk in plan.chunks:
            v = scratch.at(chunk.stop - chunk.start)
            momenta = run.features(chunk, v, 1)
            if chunk.own:
                norm(v.derived, dim=1, out=norms_derived[k])
                norm(momenta, dim=1, out=norms_m[k])
                k += 1
                continue
            for s in chunk.segments:
                norm(v.features[:, s.columns], dim=1, out=norms_x[k])
                norm(momenta[:, s.columns], dim=1, out=norms_m[k])
                k += 1
        segment_tensor = torch.tensor(plan.tensor_of_segment, device=device)
        norms = torch.cat([norms_x, norms_m], dim=1)
        sums.index_add_(0, segment_tensor, norms.square())
        counts = torch.tensor(numels, dtype=dtype, device=device).unsqueeze(1)
        # A feature times its factor is the reference's column: the normaliser and the factor
        # go into the first layer's weights, one copy per tensor.
        factors = torch.tensor(run.factors, dtype=dtype, device=device)
        mean_squares = sums / counts * factors.square()  # (T, features): the reference's
        first = self.hidden[0]
        time = step_features(step, self.scales).to(dtype)
        bias = first.bias
        if len(c.time_scales):  # the step features, the same for every coordinate
            bias = bias + first.weight[:, 4 + 3 * m :] @ time
        order = torch.tensor(fast_feature_order(m), device=device)
        scaled = first.weight.index_select(1, order).unsqueeze(0) * (
            torch.rsqrt(1e-5 + mean_squares) * factors
        ).unsqueeze(1)  # (T, hidden, features)
        weights = torch.cat([scaled[:, :, :rows], bias.expand(len(grads), -1)[:, :, None]], 2)
        weights_m = scaled[:, :, rows:].contiguous()  # of the momenta
        weights, weights_m = weights.unbind(), weights_m.unbind()  # one per tensor
        layers = [torch.cat([a.weight, a.bias.unsqueeze(1)], dim=1) for a in self.hidden[1:]]
        # The read-outs of [h; 1]: d step_mult and a exp_mult; the nominal term's log rate
        # w s(h) + c of [s(h); 1].
        multipliers = self.output.weight.new_tensor([c.step_mult, c.exp_mult]).unsqueeze(1)
        out = torch.cat([self.output.weight, self.output.bias.unsqueeze(1)], dim=1) * multipliers
        nominal = None
        if self.nominal is not None:
            nominal = torch.cat([self.nominal.weight, self.nominal.bias.unsqueeze(1)], dim=1)
        adam = 4 + c.momentum.index(ADAM_BETA1)  # the row of m^(0.9) / rms'
        adam_factor = -run.factors[adam]

        # Pass 2: the MLP on each chunk's features.
        update = torch.empty(total, dtype=dtype, device=device)
        squares = norms.new_empty(segments) if self.scheduler else None
        k = 0
        for chunk in plan.chunks:
            v = scratch.at(chunk.stop - chunk.start)
            momenta = run.features(chunk, v, 2)
            h, spare = v.layers
            if len(chunk.segments) == 1:
                j = chunk.segments[0].tensor
                torch.mm(weights[j], v.x, out=h.units).addmm_(weights_m[j], momenta)
            else:
                for s in chunk.segments:
                    units = h.units[:, s.columns]
                    torch.mm(weights[s.tensor], v.x[:, s.columns], out=units)
                    units.addmm_(weights_m[s.tensor], momenta[:, s.columns])
            h.units.relu_()
            for layer in layers:
                torch.mm(layer, h.with_ones, out=spare.units).relu_()
                h, spare = spare, h
            torch.mm(out, h.with_ones, out=v.direction_magnitude)
            u = update[chunk.start : chunk.stop]
            if nominal is None:
                torch.mul(v.direction, v.magnitude.exp_(), out=u)
            else:  # d exp(a) - exp(w s(h) + c) m_hat / rms
                if c.nominal_squash == "tanh":
                    h.units.tanh_()
                else:
                    h.units.clamp_max_(1.0)
                torch.mm(nominal, h.with_ones, out=v.rate)
                v.exps.exp_()
                torch.mul(v.direction, v.magnitude, out=u)
                u.addcmul_(v.rate_row, v.x[adam], value=adam_factor)
            if squares is None:
                continue
            if len(chunk.segments) == 1:
                torch.dot(u, u, out=squares[k])
                k += 1
                continue
            for s in chunk.segments:
                piece = u[s.columns]
                torch.dot(piece, piece, out=squares[k])
                k += 1

        momentum_state = list(new[:m].unbind())
        new_state = {
            "step": t,
            "momentum": momentum_state,
            "rms": [new[m]],
            "factored": [new[m + 1]],
        }
        stats = None
        if squares is not None:
            per_tensor = squares.new_zeros(len(grads)).index_add_(0, segment_tensor, squares)
            # The mean squares of g, m_hat^(0.9), theta, m_hat^(0.9) / rms and the update.
            columns = [0, rows + c.momentum.index(ADAM_BETA1), 1, adam]
            stats = torch.cat(
                [mean_squares[:, columns], (per_tensor / counts.squeeze(1).clamp(min=1))[:, None]],
                dim=1,
            )
        if self.scheduler is not None or cosines is not None:
            log_multiplier, new_state[PER_TENSOR] = self._log_multipliers(
                cosines, stats, time, state
            )
            for piece, k_ in zip(update.split(numels), torch.exp(log_multiplier).unbind()):
                piece.mul_(k_)
        updates = [
            u.view(g.shape) if g.dtype == dtype else u.view(g.shape).to(g.dtype)
            for u, g in zip(update.split(numels), grads)
        ]
        return updates, new_state

    def _plan(self, shapes: list[torch.Size], device: torch.device) -> ChunkPlan:
        """The chunks of the step without autograd (made once per list of shapes)."""
        chunk_size = self.chunk_size if device.type == "cpu" else self.accelerator_chunk_size
        cache = self.__dict__.setdefault("_chunk_plans", {})
        key = (tuple(shapes), chunk_size)
        plan = cache.get(key)
        if plan is None:
            if len(cache) >= 16:
                cache.clear()
            plan = cache[key] = ChunkPlan.build(shapes, chunk_size)
        return plan

    def _scratch(self, width: int, dtype: torch.dtype, device: torch.device) -> _Scratch:
        """The step without autograd's buffers, kept between steps."""
        scratch = self.__dict__.get("_scratch_space")
        if scratch is None or not scratch.fits(width, dtype, device):
            c = self.config
            scratch = _Scratch(len(c.momentum), c.hidden_size, width, dtype, device)
            self.__dict__["_scratch_space"] = scratch
        return scratch

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_scratch_space", None)  # made again on use
        state.pop("_chunk_plans", None)
        state.pop("_cosine_buffer", None)
        return state

    def spec(self) -> dict[str, Any]:
        """The config, JSON-ready (lists, not tuples). Without a scheduler its options are left
        out, so that the spec is the one saved before the scheduler existed (checkpoints and
        saved front-end states compare specs)."""
        spec: dict[str, Any] = {"kind": "mlp"}
        for name, value in asdict(self.config).items():
            if name.startswith("scheduler_") and not self.config.scheduler_size:
                continue
            if name in ("lr_adaptation", "adaptation_bound") and not self.config.lr_adaptation:
                continue  # specs saved before the adaptation existed stay as they were
            if name == "nominal_squash" and value == "tanh":
                continue  # likewise: the default is what every earlier spec had
            spec[name] = list(value) if isinstance(value, tuple) else value
        return spec

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
