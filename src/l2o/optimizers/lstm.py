"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), "Learning to learn by gradient
descent by gradient descent", section 2.1 and Appendix A.

    [g_t, h_{t+1}] = m(grad_t, h_t; phi)        theta_{t+1} = theta_t + g_t       (paper, eq. 1-3)

m is a small multi-layer LSTM applied to every coordinate of theta independently: the weights phi
are shared by all coordinates, each coordinate keeps its own hidden and cell state. All
coordinates of all parameter tensors are flattened into one batch of N rows, so a step is one
matmul per LSTM layer whatever the number or shape of the tensors.

Beyond the paper, ``LSTMConfig.momentum`` lets the LSTM read running averages of the gradient
(momenta, bias-corrected as in Adam) besides the gradient itself, and ``LSTMConfig.rms_decay``
adds the gradient and each momentum divided by the running RMS of the gradient (Adam's
m / sqrt(v); the scaled inputs of Wichrowska et al., 2017). By default it reads the gradient
alone, as in the paper. ``LSTMConfig.time_scales`` lets it read the step number t as well, through
tanh(t / s) for each timescale s: with it, the LSTM can learn a schedule over the horizon it is
meta-trained on. ``LSTMConfig.gain`` adds a term linear in the gradient to its update:
-sum_j exp(a_j(h_t)) s_j over the gradient and each momentum s_j, with per-coordinate learning
rates exp(a_j) read off the LSTM's last hidden state (the paper's update, a bounded function of
log|g| and sign g, cannot grow in proportion to the gradient as SGD's and NAG's steps do). Given as
a list, ``gain`` sets each signal's initial rate, and with ``rms_decay`` the term can read the
RMS-scaled signals too: ``momentum=[0.9], rms_decay=0.999, gain=[0, 0, 0, lr]`` and
``zero_output=True`` start exactly as Adam at learning rate lr, which meta-training then modifies
(a nominal optimizer inside the learned one, as in Harrison et al., 2022). With
``LSTMConfig.param_input`` it also reads each coordinate's value theta_t (callers pass it:
``reads_params``), as learned_optimization's optimizers do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, flatten, unflatten

PREPROCESSING = ("none", "log_sign")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
        if not (_is_int(self.num_layers) and self.num_layers >= 1):
            raise InvalidInput(f"Invalid num_layers: {self.num_layers} (must be an integer >= 1)")
        if not (_is_int(self.hidden_size) and self.hidden_size >= 1):
            raise InvalidInput(f"Invalid hidden_size: {self.hidden_size} (must be an integer >= 1)")
        if self.preprocess not in PREPROCESSING:
            raise InvalidInput(
                f"Invalid preprocess: {self.preprocess!r} (valid: {', '.join(PREPROCESSING)})"
            )
        self._set_number("p", lambda p: 0 < p < math.inf, "a number > 0, e.g. 10")
        self._set_number(
            "output_scale", lambda s: 0 < s < math.inf, "a finite number > 0, e.g. 0.1"
        )
        self._set_number("forget_bias", math.isfinite, "a finite number, e.g. 1.0")
        # Lists from TOML or JSON specs become tuples: the config stays hashable and frozen.
        self._set_numbers(
            "momentum", lambda b: 0 < b < 1, "a list of decays, each in (0, 1), e.g. [0.9]"
        )
        self._set_number(
            "rms_decay", lambda b: 0 <= b < 1, "a decay in (0, 1), e.g. 0.999, or 0 for none"
        )
        self._set_numbers(
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
            self._set_numbers("gain", lambda g: 0 <= g < math.inf, expected)
            if len(self.gain) not in lengths:
                raise InvalidInput(f"Invalid gain: {list(self.gain)!r} ({expected})")
        else:
            self._set_number(
                "gain",
                lambda g: 0 <= g < math.inf,
                "an initial learning rate > 0, e.g. 0.001, or 0 for none",
            )
        if not isinstance(self.zero_output, bool):
            raise InvalidInput(f"Invalid zero_output: {self.zero_output!r} (true or false)")
        if not isinstance(self.param_input, bool):
            raise InvalidInput(f"Invalid param_input: {self.param_input!r} (true or false)")

    def _set_number(self, name: str, valid, expected: str) -> None:
        """Check field ``name`` is a real number (not a bool) that ``valid`` accepts; store it
        as a float, or raise naming the value and what was ``expected``."""
        value = getattr(self, name)
        if not (_is_real(value) and valid(value)):
            raise InvalidInput(f"Invalid {name}: {value!r} ({expected})")
        object.__setattr__(self, name, float(value))

    def _set_numbers(self, name: str, valid, expected: str) -> None:
        """The same for a list of numbers, stored as a tuple of floats."""
        values = getattr(self, name)
        if not (
            isinstance(values, (list, tuple)) and all(_is_real(v) and valid(v) for v in values)
        ):
            raise InvalidInput(f"Invalid {name}: {values!r} ({expected})")
        object.__setattr__(self, name, tuple(float(v) for v in values))

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


def tanh_(x: Tensor) -> Tensor:
    """tanh in place. On CPU as 2 sigmoid(2x) - 1: several times faster than torch.tanh, whose
    kernel is much slower than sigmoid's (torch 2.13), and equal to it within float rounding
    (absolute error < 2e-7 in float32, tested)."""
    if x.device.type != "cpu":
        return x.tanh_()
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer over all coordinates, with its backward pass written out.

    Tensors are transposed, one coordinate per column: x (input_size, N), h and c (hidden, N),
    weight (4 hidden, input_size + hidden), bias (4 hidden,).

        [i; f; g; o] = W [x; h] + b
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)        h' = sigmoid(o) * tanh(c')

    Autograd through the same ops gives the same numbers (tested against torch.nn.LSTM and by
    gradcheck); writing the backward by hand keeps the four gate gradients in one block of memory
    that the weight gradient's matmul reads directly (autograd concatenates them, and copies),
    and saves the activated gates instead of every intermediate. The MNIST preset's meta-training
    went from 1.10 to 0.96 s per epoch (2800 epochs in 51.5 min before, 3300 in 52.9 min after,
    benchmarks/results/mnist.md then and now). The backward is not itself differentiable (meta-
    gradients need first derivatives of the LSTM only, second-order meta-training included).
    """

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor):
        hidden = h.shape[0]
        xh = torch.cat([x, h])
        gates = torch.addmm(bias.unsqueeze(1), weight, xh)
        gates[: 2 * hidden].sigmoid_()  # i, f
        tanh_(gates[2 * hidden : 3 * hidden])  # g
        gates[3 * hidden :].sigmoid_()  # o
        i, f, g, o = gates.chunk(4)
        c_new = torch.addcmul(f * c, i, g)
        tanh_c = tanh_(c_new.clone())
        h_new = o * tanh_c
        ctx.save_for_backward(xh, gates, c, tanh_c, weight)
        return h_new, c_new

    @staticmethod
    @once_differentiable
    def backward(ctx, dh: Tensor | None, dc_new: Tensor | None):
        xh, gates, c, tanh_c, weight = ctx.saved_tensors
        i, f, g, o = gates.chunk(4)
        dgates = torch.empty_like(gates)
        di, df, dg, do = dgates.chunk(4)
        if dh is None:
            dh = torch.zeros_like(c)
        # dL/dc' = dL/dh' o (1 - tanh(c')^2) + dL/dc' from the next step
        dc = torch.ops.aten.tanh_backward(torch.mul(dh, o, out=do), tanh_c)
        if dc_new is not None:
            dc += dc_new
        # gate gradients before the nonlinearities: sigmoid' = s (1 - s), tanh' = 1 - t^2
        torch.ops.aten.sigmoid_backward.grad_input(torch.mul(dh, tanh_c, out=do), o, grad_input=do)
        torch.ops.aten.sigmoid_backward.grad_input(torch.mul(dc, g, out=di), i, grad_input=di)
        torch.ops.aten.sigmoid_backward.grad_input(torch.mul(dc, c, out=df), f, grad_input=df)
        torch.ops.aten.tanh_backward.grad_input(torch.mul(dc, i, out=dg), g, grad_input=dg)
        dweight = dgates @ xh.t() if ctx.needs_input_grad[3] else None
        dbias = dgates.sum(1) if ctx.needs_input_grad[4] else None
        dxh = weight.t() @ dgates  # rows: x's, then h's
        n_in = xh.shape[0] - c.shape[0]
        return dxh[:n_in], dxh[n_in:], dc.mul_(f), dweight, dbias


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
        # Step features: their contribution W_t [tanh(t / s)]_s to the first layer's gates. The
        # timescales live on the module's device (not saved: the config has them).
        self.time = (
            nn.Linear(len(c.time_scales), 4 * c.hidden_size, bias=False) if c.time_scales else None
        )
        self.register_buffer("scales", torch.tensor(c.time_scales), persistent=False)
        # Linear term: log learning rates a_j h + c_j of the signals it reads.
        read = c.gain_signals
        self.gain = nn.Linear(c.hidden_size, len(read)) if read else None
        self.register_buffer("gain_signals", torch.tensor(read, dtype=torch.long), persistent=False)
        # Decided once, so a step does only the work its term needs.
        signals = 1 + len(c.momentum)
        self._gain_reads_scaled = any(j >= signals for j in read)
        self._gain_reads_all = read == tuple(range(signals))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        h = self.config.hidden_size
        bound = 1.0 / math.sqrt(h)  # the usual LSTM initialisation, U(-1/sqrt(H), 1/sqrt(H))
        with torch.no_grad():
            for cell in self.cells:
                cell.weight.uniform_(-bound, bound)
                cell.bias.zero_()
                cell.bias[h : 2 * h].fill_(self.config.forget_bias)
            # Drawn even when zeroed next: the random stream, and so every weight drawn after it
            # (e.g. the next group's LSTM), stays that of the paper's initialisation.
            self.output.weight.uniform_(-bound, bound)
            if self.config.zero_output:
                self.output.weight.zero_()
            self.output.bias.zero_()
            if self.time is not None:
                self.time.weight.zero_()
            if self.gain is not None:
                self.gain.weight.zero_()
                rates = [self.config.gain_rates[j] for j in self.config.gain_signals]
                self.gain.bias.copy_(torch.tensor(rates).log())

    @property
    def reads_params(self) -> bool:  # type: ignore[override]
        return self.config.param_input

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        n = sum(p.numel() for p in params)
        ref = self.output.weight
        # Shape (N, hidden), stored unit-major (the transpose of a contiguous (hidden, N) tensor):
        # see ``step``.
        zeros = torch.zeros(self.config.hidden_size, n, dtype=ref.dtype, device=ref.device).t()
        state: OptState = {
            "step": 0,
            "h": [zeros] * self.config.num_layers,
            "c": [zeros] * self.config.num_layers,
        }
        if self.config.momentum:
            state["momentum"] = [ref.new_zeros(n)] * len(self.config.momentum)
        if self.config.rms_decay:
            state["rms"] = [ref.new_zeros(n)]
        return state

    def preprocess(self, signal: Tensor) -> Tensor:
        """Signal of any shape (..., e.g. the flat gradient (N,)) -> shape (..., 2) for log_sign
        (Appendix A), (..., 1) for none."""
        if self.config.preprocess == "log_sign":
            return log_sign_preprocess(signal, self.config.p)
        return signal.unsqueeze(-1)

    def inputs(self, grad: Tensor, state: OptState) -> tuple[Tensor, Tensor, OptState]:
        """Flat gradient (N,) -> the LSTM's input (N, input_size), the signals ``gain``'s linear
        term reads (N, len(gain_signals)): of the gradient and each bias-corrected momentum, then
        (rms_decay) each of them RMS-scaled) and the new running averages (the state's "momentum"
        and "rms" entries, when it keeps them). The input is the preprocessed gradient, then each
        momentum preprocessed the same way, then (rms_decay) the signals divided by the
        gradient's bias-corrected RMS."""
        c = self.config
        if not (c.momentum or c.rms_decay):  # the paper's LSTM: the gradient alone
            return self.preprocess(grad), grad.unsqueeze(-1), {}
        t = state["step"] + 1
        averages: OptState = {}
        signals = [grad]
        if c.momentum:
            averages["momentum"] = [
                torch.lerp(grad, m, b) for b, m in zip(c.momentum, state["momentum"])
            ]
            signals += [m / (1 - b**t) for b, m in zip(c.momentum, averages["momentum"])]
        stacked = torch.stack(signals, dim=-1)  # (N, 1 + len(momentum))
        x = self.preprocess(stacked).flatten(1)
        if c.rms_decay:
            v = torch.lerp(grad * grad, state["rms"][0], c.rms_decay)
            averages["rms"] = [v]
            rms = (v / (1 - c.rms_decay**t)).sqrt() + 1e-8
            scaled = stacked / rms.unsqueeze(-1)
            x = torch.cat([x, scaled], dim=-1)
            if self._gain_reads_scaled:
                stacked = torch.cat([stacked, scaled], dim=-1)
        if self.gain is not None and not self._gain_reads_all:
            stacked = stacked.index_select(1, self.gain_signals)
        return x, stacked, averages

    def step(
        self,
        grads: Sequence[Tensor],
        state: OptState,
        params: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], OptState]:
        """One step; ``params`` (theta_t, shaped like ``grads``) only when it reads them
        (``config.param_input``)."""
        # The maths runs on transposes, x: (input_size, N) and h, c: (hidden, N), so that each
        # gate below is a contiguous block of memory: elementwise ops on the column slices of an
        # (N, 4 hidden) tensor are many times slower on CPU, and they dominate the step. The states
        # handed out are the (N, hidden) transposes of these contiguous tensors (no copy).
        dtype = self.output.weight.dtype
        x, signals, averages = self.inputs(flatten(grads, dtype), state)
        if self.config.param_input:
            if params is None or len(params) != len(grads):
                raise InvalidInput(
                    "this LSTM reads the parameters (param_input = true): pass "
                    "step(grads, state, params=theta_t), one tensor per gradient"
                )
            x = torch.cat([x, self.preprocess(flatten(params, dtype))], dim=-1)
        x, signals = x.t(), signals.t()
        hs = [h.t() for h in state["h"]]
        cs = [c.t() for c in state["c"]]
        n = x.shape[1]
        biases = self._gate_biases(state["step"])
        if torch.is_grad_enabled() or n <= self.chunk_size:
            update, hs, cs = self._lstm(x, hs, cs, biases, signals)
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
                    x[:, rows],
                    [h[:, rows] for h in hs],
                    [c[:, rows] for c in cs],
                    biases,
                    signals[:, rows],
                )
                update[rows] = u
                for k in range(len(hs)):
                    new_hs[k][:, rows] = h_chunk[k]
                    new_cs[k][:, rows] = c_chunk[k]
            hs, cs = new_hs, new_cs
        new_state = {"step": state["step"] + 1, "h": [h.t() for h in hs], "c": [c.t() for c in cs]}
        new_state.update(averages)
        return unflatten(update, grads), new_state

    def step_features(self, step: int) -> Tensor:
        """[tanh(t / s) for each timescale s] at step t: shape (len(time_scales),)."""
        return torch.tanh(step / self.scales)

    def _gate_biases(self, step: int) -> list[Tensor]:
        """Each layer's gate bias at step t: b, plus W_t [tanh(t / s)]_s in the first layer when
        the LSTM reads step features."""
        biases = [cell.bias for cell in self.cells]
        if self.time is not None:
            biases[0] = biases[0] + self.time(self.step_features(step))
        return biases

    def _lstm(
        self,
        x: Tensor,
        hs: list[Tensor],
        cs: list[Tensor],
        biases: list[Tensor],
        signals: Tensor,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """m(grad_t, h_t; phi) on transposed tensors: x (input_size, n), h and c (hidden, n)
        per layer, each layer's gate bias, the linear term's signals (len(gain_signals), n) ->
        update g_t (n,) and the new h and c."""
        new_hs, new_cs = [], []
        for cell, bias, h, c in zip(self.cells, biases, hs, cs):
            h, c = LSTMLayer.apply(x, h, c, cell.weight, bias)
            new_hs.append(h)
            new_cs.append(c)
            x = h
        # update = w h + b as (1, hidden) @ (hidden, n): its gradient with respect to h is then
        # (hidden, n) like the one from the next step, and adding the two stays contiguous.
        update = torch.addmm(self.output.bias.unsqueeze(1), self.output.weight, x).squeeze(0)
        update = update * self.config.output_scale
        if self.gain is not None:  # - sum_j exp(a_j h + c_j) s_j
            rates = torch.addmm(self.gain.bias.unsqueeze(1), self.gain.weight, x).exp()
            update = update - (rates * signals).sum(0)
        return update, new_hs, new_cs

    def spec(self) -> dict:
        # JSON-ready (lists, not tuples); the paper's LSTM keeps the spec it had before the
        # features beyond the paper (momentum, RMS, step features, gain) existed: records of
        # shipped checkpoints and saved torch.optim states compare it.
        spec = {
            "kind": "lstm",
            **asdict(self.config),
            "momentum": list(self.config.momentum),
            "time_scales": list(self.config.time_scales),
        }
        if isinstance(self.config.gain, tuple):
            spec["gain"] = list(self.config.gain)
        for name in ("momentum", "rms_decay", "time_scales", "gain", "zero_output", "param_input"):
            if not spec[name]:
                del spec[name]
        return spec

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
