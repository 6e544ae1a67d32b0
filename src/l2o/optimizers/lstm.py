"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), "Learning to learn by gradient
descent by gradient descent", section 2.1 and Appendix A.

    [g_t, h_{t+1}] = m(grad_t, h_t; phi)        theta_{t+1} = theta_t + g_t       (paper, eq. 1-3)

m is a small multi-layer LSTM applied to every coordinate of theta independently: the weights phi
are shared by all coordinates, each coordinate keeps its own hidden and cell state. All
coordinates of all parameter tensors are flattened into one batch of N rows, so a step is one
matmul per LSTM layer whatever the number or shape of the tensors. The gradient is preprocessed
(Appendix A, ``log_sign_preprocess``) and the LSTM's output multiplied by a constant (0.1 for
MNIST). The LSTM layer itself, with its backward pass written out for speed, and the chunked step
taken without autograd are in ``l2o.optimizers.lstm_kernel``.

Beyond the paper, each off by default (``LSTMConfig`` says what each does), the LSTM can read
more inputs, the features of ``l2o.optimizers.features``: bias-corrected momenta
(``momentum``), the gradient and each momentum divided by the gradient's running RMS
(``rms_decay``: Adam's m / sqrt(v)), step features tanh(t / s) (``time_scales``) and each
coordinate's value theta_t (``param_input``); and its update can include a nominal term
(``gain``, ``zero_output``: ``l2o.optimizers.heads.NominalTerm``), e.g. Adam's update
``momentum=[0.9], rms_decay=0.999, gain=[0, 0, 0, lr], zero_output=True``, which meta-training
then modifies (Harrison et al., 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from l2o.checks import check_positive_int, set_real, set_reals
from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten
from l2o.optimizers.features import Momentum, RunningRMS, step_features
from l2o.optimizers.heads import NominalTerm
from l2o.optimizers.lstm_kernel import (
    LSTMLayer,
    lstm_cells,
    lstm_no_grad,
    reset_lstm_cells,
    zero_hidden,
)

PREPROCESSING = ("none", "log_sign")

# The options beyond the paper. ``spec`` leaves out those that are off: the records of the
# shipped checkpoints and torch.optim state dicts saved before these options existed describe
# the paper's LSTM without them, and are compared with ``spec()`` for equality
# (``l2o.runs.initialise_from``, ``LearnedOptimizer.load_state_dict``, tests/test_pretrained.py);
# ``from_spec`` gives a left-out option its default, off.
BEYOND_THE_PAPER = ("momentum", "rms_decay", "time_scales", "gain", "zero_output", "param_input")


@dataclass(frozen=True)
class LSTMConfig:
    """Architecture of the coordinatewise LSTM optimizer.

    Defaults are the paper's MNIST optimizer: 2 layers of 20 units, gradient preprocessing
    ``log_sign`` with p = 10 (Appendix A) and the LSTM output multiplied by 0.1.
    """

    num_layers: int = 2  # LSTM layers (the paper: 2)
    hidden_size: int = 20  # hidden units per layer (the paper: 20)
    # "log_sign": each gradient coordinate read as (log|g| / p, sign g) (Appendix A; the paper's
    # MNIST, CIFAR and neural-art optimizers); "none": read as it is (the paper's quadratics).
    preprocess: str = "log_sign"
    p: float = 10.0  # log_sign's p: below e^-p, |g| is read as (-1, e^p g) (the paper: 10)
    output_scale: float = 0.1  # the LSTM's output times this is the update (the paper: 0.1)
    # Initial bias of the forget gate. sigmoid(1.0) = 0.73: the cell keeps most of its memory
    # at the start of meta-training. Only the initial value; the bias is meta-trained.
    forget_bias: float = 1.0
    # Beyond the paper: decays beta of extra inputs, running averages of the gradient (momenta)
    # m_t = beta m_{t-1} + (1 - beta) g_t, bias-corrected as in Adam (m_t / (1 - beta^t)) and
    # preprocessed like the gradient. () = the paper's LSTM, which reads the gradient alone.
    momentum: tuple[float, ...] = ()
    # Beyond the paper: decay beta of a running average of the squared gradient,
    # v_t = beta v_{t-1} + (1 - beta) g_t^2. With beta > 0 the LSTM also reads the gradient and
    # each momentum divided by sqrt(v_t / (1 - beta^t)) + 1e-8, as they are (no preprocessing:
    # they are scale-free, as in Adam's update m / sqrt(v)). 0 = off (the paper).
    rms_decay: float = 0.0
    # Beyond the paper: timescales s of step features tanh(t / s) (t = 0, 1, ... the step number;
    # learned_optimization's training-step features). The same for every coordinate, they enter
    # the first layer's gates through their own weights (``CoordinatewiseLSTM.time``, zero at
    # the start: the LSTM starts as the paper's). () = off (the paper).
    time_scales: tuple[float, ...] = ()
    # Beyond the paper: the initial learning rate of an update term linear in the signals (the
    # gradient and each momentum): update = output_scale (w h + b) - sum_j exp(a_j h + c_j) s_j,
    # with a_j = 0 and c_j = log(gain) at the start. 0 = off (the paper's update). A list gives
    # each signal's own initial rate, 0 leaving that signal out: one per signal (the gradient,
    # then each momentum) or, with rms_decay, one per signal and then one per RMS-scaled signal.
    gain: float | tuple[float, ...] = 0.0
    # Beyond the paper: start with the output weight w at zero, so that the first updates are
    # the linear term's alone (with gain on Adam's m / sqrt(v): Adam). False = the paper's
    # initialisation, U(-1/sqrt(H), 1/sqrt(H)).
    zero_output: bool = False
    # Beyond the paper: the LSTM also reads each coordinate's value theta_t, preprocessed like
    # the gradient (learned_optimization's optimizers read it too: it lets one learn terms like
    # weight decay). Callers then pass the parameters: ``step(grads, state, params=theta_t)``.
    param_input: bool = False

    def __post_init__(self) -> None:
        check_positive_int("num_layers", self.num_layers)
        check_positive_int("hidden_size", self.hidden_size)
        if self.preprocess not in PREPROCESSING:
            raise InvalidInput(
                f"Invalid preprocess: {self.preprocess!r} (valid: {', '.join(PREPROCESSING)})"
            )
        set_real(self, "p", lambda p: 0 < p < math.inf, "a number > 0, e.g. 10")
        set_real(self, "output_scale", lambda s: 0 < s < math.inf, "a finite number > 0, e.g. 0.1")
        set_real(self, "forget_bias", math.isfinite, "a finite number, e.g. 1.0")
        # Lists from TOML or JSON specs become tuples: the config stays hashable and frozen.
        set_reals(
            self, "momentum", lambda b: 0 < b < 1, "a list of decays, each in (0, 1), e.g. [0.9]"
        )
        set_real(
            self, "rms_decay", lambda b: 0 <= b < 1, "a decay in (0, 1), e.g. 0.999, or 0 for none"
        )
        set_reals(
            self,
            "time_scales",
            lambda s: 0 < s < math.inf,
            "a list of timescales in steps, each finite and > 0, e.g. [10, 30, 100]; [] for none",
        )
        if isinstance(self.gain, (list, tuple)):
            signals = 1 + len(self.momentum)
            lengths = (signals, 2 * signals) if self.rms_decay else (signals,)
            expected = (
                "a list of initial learning rates >= 0, one per signal, "
                f"{' or '.join(map(str, lengths))} in all: the gradient, then each momentum"
                + (", then each of them RMS-scaled" if self.rms_decay else "")
            )
            set_reals(self, "gain", lambda g: 0 <= g < math.inf, expected)
            if len(self.gain) not in lengths:
                raise InvalidInput(f"Invalid gain: {list(self.gain)!r} ({expected})")
        else:
            set_real(
                self,
                "gain",
                lambda g: 0 <= g < math.inf,
                "an initial learning rate > 0, e.g. 0.001, or 0 for none",
            )
        if not isinstance(self.zero_output, bool):
            raise InvalidInput(f"Invalid zero_output: {self.zero_output!r} (true or false)")
        if not isinstance(self.param_input, bool):
            raise InvalidInput(f"Invalid param_input: {self.param_input!r} (true or false)")

    @property
    def gain_rates(self) -> tuple[float, ...]:
        """The linear term's initial rate for each signal: the gradient and each momentum, then
        (with rms_decay) each of them RMS-scaled; 0 = not in the term."""
        signals = 1 + len(self.momentum)
        rates = self.gain if isinstance(self.gain, tuple) else (self.gain,) * signals
        padding = 2 * signals if self.rms_decay else signals
        return rates + (0.0,) * (padding - len(rates))

    @property
    def gain_signals(self) -> tuple[int, ...]:
        """The signals the linear term reads (those of ``gain_rates`` > 0), by index."""
        return tuple(j for j, rate in enumerate(self.gain_rates) if rate > 0)

    @property
    def input_size(self) -> int:
        # per signal (the gradient and each momentum): its preprocessing, then its RMS-scaled copy
        preprocessed = 2 if self.preprocess == "log_sign" else 1
        per_signal = preprocessed + int(self.rms_decay > 0)
        return per_signal * (1 + len(self.momentum)) + preprocessed * self.param_input


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
    number of coordinates of all parameter tensors; and the states of the input features it
    reads (``"momentum"``, ``"rms"``: lists of (N,) tensors).
    """

    # Coordinates per chunk of a step taken without autograd (see ``step``).
    chunk_size = 8192
    steps_in_place = True  # without autograd, a caller that owns the state may ask for it
    # The recurrent state, which the torch.optim front-end may store in bfloat16 (its
    # ``hidden_dtype``): a step without autograd reads it into float32 and rounds the new one.
    hidden_keys = ("h", "c")

    def __init__(self, config: LSTMConfig | None = None) -> None:
        super().__init__()
        self.config = config or LSTMConfig()
        c = self.config
        self.cells = lstm_cells(c.input_size, c.hidden_size, c.num_layers)
        self.output = nn.Linear(c.hidden_size, 1)
        # Step features: their contribution W_t [tanh(t / s)]_s to the first layer's gates. The
        # timescales live on the module's device (not saved: the config has them).
        self.time = (
            nn.Linear(len(c.time_scales), 4 * c.hidden_size, bias=False) if c.time_scales else None
        )
        self.register_buffer("scales", torch.tensor(c.time_scales), persistent=False)
        # The nominal term, on the signals of nonzero initial rate (their indices on the device).
        read = c.gain_signals
        self.gain = NominalTerm(c.hidden_size, [c.gain_rates[j] for j in read]) if read else None
        self.register_buffer("gain_signals", torch.tensor(read, dtype=torch.long), persistent=False)
        # Decided once, so a step does only the work its term needs.
        signals = 1 + len(c.momentum)
        self._gain_reads_scaled = any(j >= signals for j in read)
        self._gain_reads_all = read == tuple(range(signals))
        self.momentum = Momentum(c.momentum) if c.momentum else None
        self.rms = RunningRMS(c.rms_decay) if c.rms_decay else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        h = self.config.hidden_size
        bound = 1.0 / math.sqrt(h)  # the usual LSTM initialisation, U(-1/sqrt(H), 1/sqrt(H))
        reset_lstm_cells(self.cells, h, self.config.forget_bias)
        with torch.no_grad():
            # Drawn even when zeroed next: the random stream, and so every weight drawn after it
            # (e.g. the next group's LSTM), stays that of the paper's initialisation.
            self.output.weight.uniform_(-bound, bound)
            if self.config.zero_output:
                self.output.weight.zero_()
            self.output.bias.zero_()
            if self.time is not None:
                self.time.weight.zero_()  # the LSTM starts as the paper's at every step
            if self.gain is not None:
                self.gain.start()

    @property
    def reads_params(self) -> bool:  # type: ignore[override]
        return self.config.param_input

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        n = sum(p.numel() for p in params)
        ref = self.output.weight
        # Shape (N, hidden), stored unit-major (the transpose of a contiguous (hidden, N) tensor):
        # see ``step``.
        # One zeros tensor each (calloc'd: no memory until written), so that a step may write
        # the new state over them (``in_place``).
        layers = range(self.config.num_layers)
        state: OptState = {
            "step": 0,
            "h": [zero_hidden(self.config.hidden_size, n, ref) for _ in layers],
            "c": [zero_hidden(self.config.hidden_size, n, ref) for _ in layers],
        }
        for feature in (self.momentum, self.rms):
            if feature is not None:
                state[feature.name] = feature.init(ref.new_zeros(n))
        return state

    def preprocess(self, signal: Tensor) -> Tensor:
        """Signal of any shape (..., e.g. the flat gradient (N,)) -> shape (..., 2) for log_sign
        (Appendix A), (..., 1) for none."""
        if self.config.preprocess == "log_sign":
            return log_sign_preprocess(signal, self.config.p)
        return signal.unsqueeze(-1)

    def inputs(
        self, grad: Tensor, state: OptState, params: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, Tensor, OptState]:
        """The LSTM's input x_t and what the nominal term reads, from the flat gradient (N,).

        The paper's input is the preprocessed gradient. With the features beyond the paper, the
        signals are the gradient and each bias-corrected momentum, each preprocessed; then
        (rms_decay) the signals divided by the gradient's RMS, as they are (scale-free); then
        (param_input) theta_t, preprocessed. Returns x (N, input_size), the signals the nominal
        term reads (N, len(gain_signals)) and the features' new states ("momentum", "rms").
        """
        # The order of the ops is that of the meta-gradients' sums (second-order meta-training
        # differentiates through the inputs): tests/test_pinned_rollouts.py pins it.
        t = state["step"] + 1
        features: OptState = {}
        if self.momentum is None:
            signals = grad.unsqueeze(-1)  # (N, 1): the paper's one signal
        else:
            momenta, features["momentum"] = self.momentum.update(grad, state["momentum"], t)
            signals = torch.cat([grad.unsqueeze(-1), momenta], dim=-1)  # (N, 1 + len(momentum))
        x = self.preprocess(signals).flatten(1)
        if self.rms is not None:
            rms, features["rms"] = self.rms.update(grad, state["rms"], t)
            scaled = signals / rms
            x = torch.cat([x, scaled], dim=-1)
            if self._gain_reads_scaled:
                signals = torch.cat([signals, scaled], dim=-1)
        if self.gain is not None and not self._gain_reads_all:
            signals = signals.index_select(1, self.gain_signals)
        if self.config.param_input:
            x = torch.cat([x, self.preprocess(flatten(params, grad.dtype))], dim=-1)
        return x, signals, features

    def step(
        self,
        grads: Sequence[Tensor],
        state: OptState,
        params: Sequence[Tensor] | None = None,
        in_place: bool = False,
    ) -> tuple[list[Tensor], OptState]:
        """One step; ``params`` (theta_t, shaped like ``grads``) only when it reads them
        (``config.param_input``). Without autograd (``torch.no_grad()``: rollouts, the torch.optim
        front-end) the step takes the fast path, ``lstm_kernel.lstm_no_grad``, the same numbers
        bit for bit; there ``in_place`` (a caller that owns ``state`` and drops it) writes the
        new h and c over the old ones."""
        if self.config.param_input and (params is None or len(params) != len(grads)):
            raise InvalidInput(
                "this LSTM reads the parameters (param_input = true): pass "
                "step(grads, state, params=theta_t), one tensor per gradient"
            )
        x, signals, features = self.inputs(flatten(grads, self.output.weight.dtype), state, params)
        # The maths runs on transposes, one coordinate per column (see l2o.optimizers.
        # lstm_kernel); the states handed out are the (N, hidden) transposes of the contiguous
        # (hidden, N) tensors it makes (no copy).
        hs, cs = [h.t() for h in state["h"]], [c.t() for c in state["c"]]
        biases = self._gate_biases(state["step"])
        if torch.is_grad_enabled():
            update, hs, cs = self._m(x.t(), hs, cs, signals.t(), biases)
        else:
            update, hs, cs = lstm_no_grad(
                x.t(),
                hs,
                cs,
                [cell.weight for cell in self.cells],
                biases,
                partial(self._head, signals=signals.t()),
                self.chunk_size,
                in_place=in_place and _distinct(hs + cs),
            )
        new_state = {"step": state["step"] + 1, "h": [h.t() for h in hs], "c": [c.t() for c in cs]}
        new_state.update(features)
        return unflatten(update, grads), new_state

    def _gate_biases(self, step: int) -> list[Tensor]:
        """Each layer's gate bias at step t: b, plus W_t [tanh(t / s)]_s in the first layer when
        the LSTM reads step features."""
        biases = [cell.bias for cell in self.cells]
        if self.time is not None:
            biases[0] = biases[0] + self.time(step_features(step, self.scales))
        return biases

    def _m(
        self,
        x: Tensor,
        hs: list[Tensor],
        cs: list[Tensor],
        signals: Tensor,
        biases: list[Tensor],
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """[g_t, h_{t+1}] = m(grad_t, h_t; phi) on n coordinates, one per column: x
        (input_size, n), h and c (hidden, n) per layer, the nominal term's signals
        (len(gain_signals), n), each layer's gate bias -> the update g_t (n,) and the new h and c.
        """
        new_hs, new_cs = [], []
        for cell, bias, h, c in zip(self.cells, biases, hs, cs):
            # [i; f; g; o] = W [x; h] + b,  c' = s(f) c + s(i) tanh(g),  h' = s(o) tanh(c')
            h, c = LSTMLayer.apply(x, h, c, cell.weight, bias)
            new_hs.append(h)
            new_cs.append(c)
            x = h
        return self._head(x, signals=signals), new_hs, new_cs

    def _head(self, h: Tensor, cols: slice = slice(None), *, signals: Tensor) -> Tensor:
        """g_t = output_scale (w h + b) (+ the nominal term on the signals of the columns
        ``cols``) from the top layer's h (hidden, n)."""
        # As (1, hidden) @ (hidden, n): its gradient with respect to h is then (hidden, n) like
        # the one from the next step, and adding the two stays contiguous.
        update = torch.addmm(self.output.bias.unsqueeze(1), self.output.weight, h).squeeze(0)
        update = update * self.config.output_scale
        if self.gain is not None:
            update = update + self.gain(h, signals[:, cols])
        return update

    def spec(self) -> dict[str, Any]:
        """The config, JSON-ready (lists, not tuples), less the options beyond the paper that
        are off (see ``BEYOND_THE_PAPER``)."""
        spec: dict[str, Any] = {"kind": "lstm"}
        for name, value in asdict(self.config).items():
            value = list(value) if isinstance(value, tuple) else value
            if value or name not in BEYOND_THE_PAPER:
                spec[name] = value
        return spec

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


def _distinct(tensors: Sequence[Tensor]) -> bool:
    """Whether no two of ``tensors`` share memory: the new state can be written over them (a
    state made before ``init_state`` gave each its own zeros may share one)."""
    return len({t.untyped_storage().data_ptr() for t in tensors}) == len(tensors)
