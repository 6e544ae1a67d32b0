"""The coordinatewise LSTM optimizer: Appendix A preprocessing, coordinatewise structure, config;
its kernel (the LSTM layer, the chunked step), input features and nominal term."""

import dataclasses
import json
import math

import pytest
import torch

from l2o.optimizers import Adam, CoordinatewiseLSTM, LSTMConfig, from_spec, log_sign_preprocess
from l2o.optimizers.features import Momentum, RunningRMS, step_features
from l2o.optimizers.heads import NominalTerm
from l2o.optimizers.lstm import BEYOND_THE_PAPER
from l2o.optimizers.lstm_kernel import LSTMLayer, in_column_chunks


def _appendix_a(g: float, p: float) -> tuple[float, float]:
    if abs(g) >= math.exp(-p):
        return math.log(abs(g)) / p, math.copysign(1.0, g) if g != 0 else 0.0
    return -1.0, math.exp(p) * g


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_log_sign_preprocessing_matches_appendix_a(p):
    values = [3.0, -0.5, 1e-3, -2e-4, 1e-5, -4e-6, 1e-9, -1e-12, 0.0, math.exp(-p), -math.exp(-p)]
    got = log_sign_preprocess(torch.tensor(values, dtype=torch.float64), p)
    want = torch.tensor([_appendix_a(v, p) for v in values], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # Both branches are used by these values.
    assert (got[:, 0] == -1).any() and (got[:, 0] > -1).any()


def test_log_sign_preprocessing_has_finite_gradients_at_zero():
    g = torch.tensor([0.0, 1e-9, 2.0], requires_grad=True)
    log_sign_preprocess(g).sum().backward()
    assert torch.isfinite(g.grad).all()


@pytest.mark.parametrize("preprocess", ["none", "log_sign"])
def test_permuting_coordinates_permutes_updates(preprocess):
    opt = CoordinatewiseLSTM(LSTMConfig(preprocess=preprocess)).double()
    grads = [torch.randn(5, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    state = opt.init_state(grads)
    for _ in range(3):  # build up a non-trivial hidden state
        _, state = opt.step([torch.randn_like(g) for g in grads], state)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])
    perm = torch.randperm(flat_grad.numel())
    u, _ = opt.step([flat_grad], state)
    permuted_state = {
        "step": state["step"],
        "h": [h[perm] for h in state["h"]],
        "c": [c[perm] for c in state["c"]],
    }
    u_perm, _ = opt.step([flat_grad[perm]], permuted_state)
    # Equal up to float64 rounding (matmul blocking may differ with the row order).
    torch.testing.assert_close(u_perm[0], u[0][perm], rtol=1e-13, atol=1e-15)


def test_updates_have_the_shapes_of_the_gradients_and_one_state_row_per_coordinate():
    opt = CoordinatewiseLSTM(LSTMConfig(num_layers=1, hidden_size=7))
    grads = [torch.randn(2, 3, 4), torch.randn(5), torch.randn(())]
    state = opt.init_state(grads)
    updates, state = opt.step(grads, state)
    assert [u.shape for u in updates] == [g.shape for g in grads]
    assert len(state["h"]) == 1 and state["h"][0].shape == (24 + 5 + 1, 7)


def test_output_scale_scales_the_update():
    torch.manual_seed(3)
    a = CoordinatewiseLSTM(LSTMConfig(output_scale=0.1))
    torch.manual_seed(3)
    b = CoordinatewiseLSTM(LSTMConfig(output_scale=1.0))
    g = [torch.randn(10)]
    ua, _ = a.step(g, a.init_state(g))
    ub, _ = b.step(g, b.init_state(g))
    torch.testing.assert_close(ua[0] * 10, ub[0])


def test_forget_bias_initialises_the_forget_gate_only():
    opt = CoordinatewiseLSTM(LSTMConfig(hidden_size=4, forget_bias=2.5))
    for cell in opt.cells:
        torch.testing.assert_close(cell.bias[4:8], torch.full((4,), 2.5))
        assert torch.count_nonzero(cell.bias[:4]) == 0 and torch.count_nonzero(cell.bias[8:]) == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"hidden_size": 0}, "Invalid hidden_size: 0"),
        ({"num_layers": 0}, "Invalid num_layers: 0"),
        ({"preprocess": "log"}, "Invalid preprocess: 'log' (valid: none, log_sign)"),
        ({"p": -1.0}, "Invalid p: -1.0"),
        ({"output_scale": 0.0}, "Invalid output_scale: 0.0"),
        (
            {"momentum": (0.9, 1.0)},
            "Invalid momentum: (0.9, 1.0) (a list of decays, each in (0, 1)",
        ),
        ({"momentum": (0,)}, "Invalid momentum: (0,)"),
        ({"momentum": 0.9}, "Invalid momentum: 0.9"),
        ({"momentum": ["0.9"]}, "Invalid momentum: ['0.9']"),
        ({"rms_decay": 1.0}, "Invalid rms_decay: 1.0 (a decay in (0, 1), e.g. 0.999, or 0"),
        ({"rms_decay": -0.5}, "Invalid rms_decay: -0.5"),
        ({"rms_decay": "0.9"}, "Invalid rms_decay: '0.9'"),
        ({"time_scales": (10, 0)}, "Invalid time_scales: (10, 0) (a list of timescales in steps"),
        ({"time_scales": 10}, "Invalid time_scales: 10"),
        ({"time_scales": [float("inf")]}, "Invalid time_scales: [inf]"),
        ({"time_scales": [True]}, "Invalid time_scales: [True]"),
        ({"gain": -0.1}, "Invalid gain: -0.1 (an initial learning rate > 0, e.g. 0.001, or 0 for"),
        ({"gain": float("inf")}, "Invalid gain: inf"),
        ({"gain": "0.1"}, "Invalid gain: '0.1'"),
        ({"gain": [0.1, 0.1]}, "Invalid gain: [0.1, 0.1] (a list of initial learning rates >= 0"),
        (
            {"momentum": [0.9], "rms_decay": 0.99, "gain": [0, 0.1, 0]},
            "Invalid gain: [0.0, 0.1, 0.0] (a list of initial learning rates >= 0, one per signal, "
            "2 or 4 in all: the gradient, then each momentum, then each of them RMS-scaled)",
        ),
        (
            {"gain": [-1.0]},
            "Invalid gain: [-1.0] (a list of initial learning rates >= 0, one per signal, 1 in",
        ),
        ({"zero_output": 1}, "Invalid zero_output: 1 (true or false)"),
        ({"param_input": "yes"}, "Invalid param_input: 'yes' (true or false)"),
    ],
)
def test_invalid_config_names_the_value(kwargs, message):
    with pytest.raises(ValueError) as e:
        LSTMConfig(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "num_layers,preprocess,momentum,rms_decay",
    [
        (2, "log_sign", (), 0.0),
        (1, "none", (), 0.0),
        (2, "log_sign", (0.9, 0.5), 0.0),
        (2, "log_sign", (), 0.99),
        (1, "log_sign", (0.9, 0.5), 0.8),
    ],
)
def test_step_equals_torch_lstm_with_the_same_weights(num_layers, preprocess, momentum, rms_decay):
    """Each coordinate is one sequence of torch.nn.LSTM (batch = coordinates), with the same
    weights: updates, hidden and cell states and the meta-gradient agree. With momentum and RMS
    inputs, torch.nn.LSTM reads the gradient, its bias-corrected running averages and (RMS) these
    divided by the bias-corrected RMS of the gradient, all made by hand here."""
    torch.manual_seed(0)
    config = LSTMConfig(
        num_layers=num_layers,
        hidden_size=6,
        preprocess=preprocess,
        momentum=momentum,
        rms_decay=rms_decay,
    )
    opt = CoordinatewiseLSTM(config).double()
    ref = torch.nn.LSTM(config.input_size, 6, num_layers=num_layers).double()
    with torch.no_grad():
        for k, cell in enumerate(opt.cells):
            n_in = cell.weight.shape[1] - 6
            getattr(ref, f"weight_ih_l{k}").copy_(cell.weight[:, :n_in])
            getattr(ref, f"weight_hh_l{k}").copy_(cell.weight[:, n_in:])
            getattr(ref, f"bias_ih_l{k}").copy_(cell.bias)
            getattr(ref, f"bias_hh_l{k}").zero_()
    grads = [torch.randn(7, 3, dtype=torch.float64) for _ in range(4)]  # 4 steps, 21 coords
    state = opt.init_state(grads[:1])
    total = 0
    for g in grads:
        (u,), state = opt.step([g], state)
        total = total + (u * torch.arange(21.0, dtype=u.dtype).view(7, 3)).sum()
    signals = [[g.reshape(-1)] for g in grads]  # per step: the gradient, then each momentum
    for beta in momentum:
        m = torch.zeros(21, dtype=torch.float64)
        for t, g in enumerate(grads, start=1):
            m = beta * m + (1 - beta) * g.reshape(-1)
            signals[t - 1].append(m / (1 - beta**t))
    inputs = [torch.cat([opt.preprocess(s) for s in step], -1) for step in signals]
    if rms_decay:
        v = torch.zeros(21, dtype=torch.float64)
        for t, g in enumerate(grads, start=1):
            v = rms_decay * v + (1 - rms_decay) * g.reshape(-1) ** 2
            rms = (v / (1 - rms_decay**t)).sqrt() + 1e-8
            inputs[t - 1] = torch.cat(
                [inputs[t - 1], *(s.unsqueeze(-1) / rms[:, None] for s in signals[t - 1])], -1
            )
        assert state["rms"][0].shape == (21,)
        torch.testing.assert_close(state["rms"][0], v, rtol=1e-12, atol=0)
    inputs = torch.stack(inputs)
    assert inputs.shape == (4, 21, config.input_size)  # (steps, N, in)
    out, (h, c) = ref(inputs)
    ref_updates = (opt.output(out).squeeze(-1) * config.output_scale).view(4, 7, 3)
    ref_total = (ref_updates * torch.arange(21.0, dtype=u.dtype).view(7, 3)).sum()
    torch.testing.assert_close(u, ref_updates[-1], rtol=1e-10, atol=1e-12)
    for k in range(num_layers):
        torch.testing.assert_close(state["h"][k], h[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(state["c"][k], c[k], rtol=1e-10, atol=1e-12)
    # and the same gradient with respect to all of phi
    mine = torch.autograd.grad(total, list(opt.parameters()))
    theirs = torch.autograd.grad(ref_total, list(ref.parameters()) + list(opt.output.parameters()))
    for k in range(num_layers):
        w_ih, w_hh, b_ih, _ = theirs[4 * k : 4 * k + 4]
        torch.testing.assert_close(mine[2 * k], torch.cat([w_ih, w_hh], 1), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(mine[2 * k + 1], b_ih, rtol=1e-9, atol=1e-12)
    for a, b in zip(mine[-2:], theirs[-2:]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert mine[0][:, : config.input_size].abs().sum() > 0


@pytest.mark.parametrize("needs", [(True, True, True, True, True), (False, True, True, True, True)])
def test_lstm_layer_backward_passes_gradcheck(needs):
    """The hand-written backward against finite differences, with respect to every input: the
    LSTM input x too (second-order meta-training differentiates through it)."""
    torch.manual_seed(0)
    shapes = [(3, 5), (4, 5), (4, 5), (16, 7), (16,)]
    inputs = [
        torch.randn(*shape, dtype=torch.float64, requires_grad=need)
        for shape, need in zip(shapes, needs)
    ]
    assert torch.autograd.gradcheck(LSTMLayer.apply, inputs)
    # only h' used, then only c' used: the other output's gradient is None
    assert torch.autograd.gradcheck(lambda *t: LSTMLayer.apply(*t)[0], inputs)
    assert torch.autograd.gradcheck(lambda *t: LSTMLayer.apply(*t)[1], inputs)


def test_a_step_without_autograd_goes_in_chunks_with_the_same_result():
    torch.manual_seed(1)
    opt = CoordinatewiseLSTM(LSTMConfig(hidden_size=5)).double()
    grads = [torch.randn(30, 4, dtype=torch.float64), torch.randn(13, dtype=torch.float64)]
    state = opt.init_state(grads)
    (u1, _), s1 = opt.step(grads, state)  # with autograd: one batch of 133 coordinates
    chunked = CoordinatewiseLSTM(LSTMConfig(hidden_size=5)).double()
    chunked.load_state_dict(opt.state_dict())
    chunked.chunk_size = 16  # 133 coordinates: 9 chunks, the last one of 5
    with torch.no_grad():
        (u2, _), s2 = chunked.step(grads, state)
        # and the chunked state feeds the next step like any other
        (u3, _), _ = chunked.step(grads, s2)
    (u4, _), _ = opt.step(grads, s1)
    torch.testing.assert_close(u2, u1.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(u3, u4.detach(), rtol=1e-12, atol=1e-14)
    for key in ("h", "c"):
        for a, b in zip(s2[key], s1[key]):
            assert a.shape == b.shape == (133, 5)
            torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)


def test_a_step_in_place_writes_the_same_new_state_over_the_old_one():
    torch.manual_seed(2)
    opt = CoordinatewiseLSTM(LSTMConfig(hidden_size=6, momentum=[0.9], gain=0.01))
    opt.chunk_size = 32  # 101 coordinates: 4 chunks, the last one of 5
    grads = [torch.randn(20, 4), torch.randn(21)]
    with torch.no_grad():
        state = opt.init_state(grads)
        for _ in range(2):  # from a fresh state (its own zeros for each h and c), then a later one
            expected_updates, expected = opt.step(grads, state)
            # in either layout of h and c: ours, (hidden, N) rows seen as (N, hidden), and the
            # (N, hidden) rows the front-end may merge and load
            for layout in ("ours", "rows"):
                old = {
                    k: [t.contiguous() if layout == "rows" else t.clone() for t in v]
                    if k in ("h", "c")
                    else v
                    for k, v in state.items()
                }
                if layout == "ours":
                    old["h"] = [t.t().contiguous().t() for t in old["h"]]
                    old["c"] = [t.t().contiguous().t() for t in old["c"]]
                memory = [t.untyped_storage().data_ptr() for t in old["h"] + old["c"]]
                updates, new = opt.step(grads, old, in_place=True)
                assert [t.untyped_storage().data_ptr() for t in new["h"] + new["c"]] == memory
                assert all(torch.equal(a, b) for a, b in zip(updates, expected_updates))
                for key in ("h", "c"):
                    assert all(torch.equal(a, b) for a, b in zip(new[key], expected[key]))
            state = expected
        # a state whose h and c share memory is not written over
        shared = dict(state, h=[state["h"][0]] * 2, c=[state["h"][0]] * 2)
        kept = state["h"][0].clone()
        opt.step(grads, shared, in_place=True)
        assert torch.equal(state["h"][0], kept)


def test_momentum_inputs_from_toml_lists_and_specs_are_tuples_and_widen_the_input():
    config = LSTMConfig(momentum=[0.9, 0.99])  # a TOML or JSON list
    assert config.momentum == (0.9, 0.99) and hash(config)
    assert config.input_size == 6 and LSTMConfig(preprocess="none", momentum=[0.9]).input_size == 2
    opt = CoordinatewiseLSTM(config)
    assert opt.cells[0].weight.shape == (80, 6 + 20)
    assert opt.spec() == json.loads(json.dumps(opt.spec()))  # JSON-ready: a list, not a tuple
    rebuilt = from_spec(json.loads(json.dumps(opt.spec())))
    assert rebuilt.config == config
    # The paper's LSTM has the spec it had before momentum inputs (shipped records compare it).
    assert "momentum" not in CoordinatewiseLSTM().spec()
    state = opt.init_state([torch.zeros(4, 3), torch.zeros(2)])
    assert [m.shape for m in state["momentum"]] == [(14,), (14,)]
    _, state = opt.step([torch.ones(4, 3), torch.ones(2)], state)
    torch.testing.assert_close(state["momentum"][1], torch.full((14,), 0.01))
    assert "momentum" not in CoordinatewiseLSTM().init_state([torch.zeros(3)])  # the paper's


def test_rms_inputs_widen_the_input_are_in_the_spec_and_normalise_the_signals():
    config = LSTMConfig(momentum=[0.9], rms_decay=0.99)
    # log_sign gives 2 inputs per signal, the RMS-scaled copy 1 more: (gradient, momentum) x 3
    assert config.input_size == 6 and LSTMConfig(rms_decay=0.9).input_size == 3
    assert LSTMConfig(preprocess="none", rms_decay=0.9).input_size == 2
    opt = CoordinatewiseLSTM(config)
    assert from_spec(json.loads(json.dumps(opt.spec()))).config == config
    assert "rms_decay" not in CoordinatewiseLSTM().spec()
    assert "rms" not in CoordinatewiseLSTM().init_state([torch.zeros(3)])
    grads = [torch.tensor([3.0, -1e-2, 0.0])]
    state = opt.init_state(grads)
    assert [v.shape for v in state["rms"]] == [(3,)]
    x, _, averages = opt.inputs(grads[0], state)
    # First step: the bias-corrected RMS is |g|, so g / rms and m / rms are the signs of g
    # (0 for g = 0: the 1e-8 keeps it finite).
    torch.testing.assert_close(x[:, 4:], torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]]))
    torch.testing.assert_close(averages["rms"][0], 0.01 * grads[0] ** 2)
    # Scale-free: gradients 1000 times larger give the same RMS inputs.
    big, _, _ = opt.inputs(1000 * grads[0], state)
    torch.testing.assert_close(big[:, 4:], x[:, 4:])


def test_rms_and_momentum_inputs_are_differentiable_in_the_gradient():
    """Second-order meta-training differentiates the update with respect to the gradient it
    read: through the momenta and the RMS scaling too (finite differences agree)."""
    torch.manual_seed(2)
    opt = CoordinatewiseLSTM(LSTMConfig(hidden_size=4, momentum=(0.5,), rms_decay=0.9)).double()
    state = opt.init_state([torch.zeros(5, dtype=torch.float64)])
    _, state = opt.step([torch.randn(5, dtype=torch.float64)], state)  # t = 2: state not zero

    def update(g):
        (u,), _ = opt.step([g], state)
        return u

    g = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(update, (g,))


def _time_lstm(**kwargs) -> CoordinatewiseLSTM:
    torch.manual_seed(3)
    opt = CoordinatewiseLSTM(LSTMConfig(hidden_size=6, time_scales=[3, 30], **kwargs)).double()
    with torch.no_grad():
        opt.time.weight.normal_()  # not the (zero) initialisation
    return opt


def test_step_features_start_at_zero_weight_and_are_in_the_spec():
    config = LSTMConfig(time_scales=[10, 100])  # a TOML or JSON list
    assert config.time_scales == (10.0, 100.0) and hash(config)
    opt, paper = CoordinatewiseLSTM(config), CoordinatewiseLSTM()
    assert opt.time.weight.shape == (80, 2) and not opt.time.weight.any()
    assert paper.time is None and "time_scales" not in paper.spec()
    assert from_spec(json.loads(json.dumps(opt.spec()))).config == config
    # At initialisation it is the paper's LSTM at every step.
    paper.load_state_dict({k: v for k, v in opt.state_dict().items() if not k.startswith("time")})
    grads = [torch.randn(7, 3)]
    state = opt.init_state(grads)
    for step in (0, 5, 1000):
        state["step"] = step
        (u,), _ = opt.step(grads, state)
        (want,), _ = paper.step(grads, state)
        assert torch.equal(u, want)
    torch.testing.assert_close(step_features(30, opt.scales), torch.tanh(torch.tensor([3.0, 0.3])))


def test_step_features_shift_the_first_layers_gates_by_their_weights():
    """At step t the LSTM reading step features is the paper's LSTM whose first-layer bias is
    b + W_t [tanh(t / s)]_s; the update changes with t for the same gradient and state."""
    opt = _time_lstm()
    grads = [torch.randn(5, 4, dtype=torch.float64)]
    state = opt.init_state(grads)
    _, state = opt.step(grads, state)
    updates = []
    for step in (1, 7, 60):
        state["step"] = step
        (u,), new_state = opt.step(grads, state)
        assert new_state["step"] == step + 1
        paper = CoordinatewiseLSTM(dataclasses.replace(opt.config, time_scales=())).double()
        paper.load_state_dict({k: v for k, v in opt.state_dict().items() if k != "time.weight"})
        features = torch.tanh(step / torch.tensor([3.0, 30.0], dtype=torch.float64))
        with torch.no_grad():
            paper.cells[0].bias += opt.time.weight @ features
        (want,), _ = paper.step(grads, state)
        torch.testing.assert_close(u, want, rtol=1e-12, atol=1e-14)
        updates.append(u)
    assert not torch.allclose(updates[0], updates[1]) and not torch.allclose(updates[1], updates[2])


def test_step_features_get_meta_gradients_and_go_through_the_chunked_step():
    opt = _time_lstm(momentum=[0.9])
    grads = [torch.randn(40, 3, dtype=torch.float64)]
    state = opt.init_state(grads)
    (u,), s1 = opt.step(grads, state)
    (u,), _ = opt.step(grads, s1)
    (d_time,) = torch.autograd.grad(u.square().sum(), [opt.time.weight])
    assert d_time.abs().sum() > 0
    chunked = _time_lstm(momentum=[0.9])
    chunked.chunk_size = 16  # 120 coordinates: 8 chunks
    with torch.no_grad():
        (c,), s2 = chunked.step(grads, state)
        (c,), _ = chunked.step(grads, s2)
    torch.testing.assert_close(c, u.detach(), rtol=1e-12, atol=1e-14)


def test_gain_adds_a_term_linear_in_the_gradient_and_each_momentum():
    """At the start the update is the paper's minus gain * (g + each bias-corrected momentum);
    the per-coordinate learning rates exp(a h + c) then follow the LSTM's hidden state."""
    torch.manual_seed(4)
    config = LSTMConfig(hidden_size=6, momentum=[0.5], gain=0.01)
    opt = CoordinatewiseLSTM(config).double()
    assert opt.gain.weight.shape == (2, 6) and not opt.gain.weight.any()
    assert from_spec(json.loads(json.dumps(opt.spec()))).config == config
    assert "gain" not in CoordinatewiseLSTM().spec() and CoordinatewiseLSTM().gain is None
    plain = CoordinatewiseLSTM(dataclasses.replace(config, gain=0.0)).double()
    plain.load_state_dict({k: v for k, v in opt.state_dict().items() if "gain" not in k})
    g1, g2 = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    state = opt.init_state([g1])
    (u1,), s1 = opt.step([g1], state)
    (p1,), _ = plain.step([g1], state)
    torch.testing.assert_close(u1, p1 - 0.01 * (g1 + g1))  # m_hat = g at the first step
    (u2,), _ = opt.step([g2], s1)
    (p2,), _ = plain.step([g2], s1)
    m_hat = (0.5 * (0.5 * g1) + 0.5 * g2) / (1 - 0.25)
    torch.testing.assert_close(u2, p2 - 0.01 * (g2 + m_hat))
    # Meta-gradients reach the rates' weights; the chunked step gives the same update.
    with torch.no_grad():
        opt.gain.weight.normal_()
    (u,), s = opt.step([g1], state)
    (u,), _ = opt.step([g2], s)
    d_weight, d_bias = torch.autograd.grad(u.square().sum(), [opt.gain.weight, opt.gain.bias])
    assert d_weight.abs().sum() > 0 and d_bias.abs().sum() > 0
    opt.chunk_size = 4  # 9 coordinates: 3 chunks
    with torch.no_grad():
        (c,), s = opt.step([g1], state)
        (c,), _ = opt.step([g2], s)
    torch.testing.assert_close(c, u.detach(), rtol=1e-12, atol=1e-14)


def test_gain_on_the_rms_scaled_momentum_with_zero_output_starts_as_adam():
    """gain = [0, 0, 0, lr] reads only m_hat / sqrt(v_hat) (momentum 0.9, RMS decay 0.999) and,
    with the output weight at zero, the learned optimizer's first steps are Adam's at lr. The
    rate of that one signal is meta-trained, and so is the LSTM's output once it moves off 0."""
    torch.manual_seed(5)
    config = LSTMConfig(
        hidden_size=5, momentum=[0.9], rms_decay=0.999, gain=[0, 0, 0, 0.003], zero_output=True
    )
    opt = CoordinatewiseLSTM(config).double()
    assert opt.gain.weight.shape == (1, 5)
    assert not opt.output.weight.any() and opt.cells[0].weight.any()
    spec = json.loads(json.dumps(opt.spec()))
    assert spec["gain"] == [0, 0, 0, 0.003] and spec["zero_output"] is True
    assert from_spec(spec).config == config
    adam = Adam(lr=0.003)
    params = [torch.randn(4, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)]
    state, adam_state = opt.init_state(params), adam.init_state(params)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        updates, state = opt.step(grads, state)
        want, adam_state = adam.step(grads, adam_state)
        for u, w in zip(updates, want):  # the rate exp(log lr) was rounded to float32
            torch.testing.assert_close(u, w, rtol=1e-6, atol=0)
    # Meta-gradients reach the rate and the output weight (the LSTM's cells only once w != 0).
    (u,), _ = opt.step([grads[1]], opt.init_state([params[1]]))
    d_rate, d_out = torch.autograd.grad(u.sum(), [opt.gain.bias, opt.output.weight])
    assert d_rate.abs().sum() > 0 and d_out.abs().sum() > 0


def test_gain_list_sets_each_signals_rate_and_leaves_out_the_zeros():
    """A list gives each signal its own initial rate; a float gives every raw signal the same one
    (the term as it was before lists), so both build the same parameters."""
    as_float = LSTMConfig(hidden_size=4, momentum=[0.5], gain=0.01)
    as_list = LSTMConfig(hidden_size=4, momentum=[0.5], gain=[0.01, 0.01])
    assert as_float.gain_rates == as_list.gain_rates == (0.01, 0.01)
    assert LSTMConfig(momentum=[0.5], rms_decay=0.9, gain=0.01).gain_rates == (0.01, 0.01, 0, 0)
    torch.manual_seed(6)
    a = CoordinatewiseLSTM(as_float).double()
    b = CoordinatewiseLSTM(as_list).double()
    b.load_state_dict(a.state_dict())
    g = [torch.randn(6, dtype=torch.float64)]
    torch.testing.assert_close(a.step(g, a.init_state(g))[0], b.step(g, b.init_state(g))[0])
    # Only the momentum, at 0.02: the update is the paper's minus 0.02 m_hat (= g at step 1).
    only = CoordinatewiseLSTM(dataclasses.replace(as_list, gain=[0, 0.02])).double()
    plain = CoordinatewiseLSTM(dataclasses.replace(as_list, gain=0.0)).double()
    plain.load_state_dict({k: v for k, v in only.state_dict().items() if "gain" not in k})
    assert only.gain.weight.shape == (1, 4)
    (u,), _ = only.step(g, only.init_state(g))
    (p,), _ = plain.step(g, plain.init_state(g))
    torch.testing.assert_close(u, p - 0.02 * g[0])
    # All zero: no term at all.
    assert CoordinatewiseLSTM(dataclasses.replace(as_list, gain=[0, 0])).gain is None


def test_param_input_reads_theta_preprocessed_like_the_gradient():
    """param_input adds theta_t to the LSTM's input (log_sign: 2 more columns); a step then needs
    the parameters, the updates depend on them, and meta-gradients reach their input weights."""
    config = LSTMConfig(hidden_size=6, param_input=True)
    assert (
        config.input_size == 4 and LSTMConfig(preprocess="none", param_input=True).input_size == 2
    )
    torch.manual_seed(8)
    opt = CoordinatewiseLSTM(config).double()
    assert opt.reads_params and not CoordinatewiseLSTM(LSTMConfig()).reads_params
    spec = json.loads(json.dumps(opt.spec()))
    assert spec["param_input"] is True and from_spec(spec).config == config
    assert "param_input" not in CoordinatewiseLSTM(LSTMConfig()).spec()  # the paper's spec
    grads = [torch.randn(5, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    theta = [torch.randn_like(g) for g in grads]
    state = opt.init_state(theta)
    with pytest.raises(ValueError, match="reads the parameters"):
        opt.step(grads, state)
    updates, _ = opt.step(grads, state, params=theta)
    other, _ = opt.step(grads, state, params=[-t for t in theta])
    assert all(u.shape == g.shape for u, g in zip(updates, grads))
    assert not torch.equal(updates[0], other[0])  # theta's sign changes the update
    # The first layer's weights for theta's two columns (after the gradient's) get meta-gradients.
    (d_weight,) = torch.autograd.grad(sum(u.sum() for u in updates), [opt.cells[0].weight])
    assert d_weight[:, 2:4].abs().sum() > 0
    # With theta's input weights at zero it is the paper's LSTM with the other weights.
    plain = CoordinatewiseLSTM(dataclasses.replace(config, param_input=False)).double()
    weights = opt.state_dict()
    first = weights["cells.0.weight"]
    weights["cells.0.weight"] = torch.cat([first[:, :2], first[:, 4:]], 1)
    plain.load_state_dict(weights)
    with torch.no_grad():
        first[:, 2:4] = 0
    (a, _), _ = opt.step(grads, state, params=theta)
    (b, _), _ = plain.step(grads, plain.init_state(theta))
    torch.testing.assert_close(a, b)


def test_weight_names_and_order_are_those_of_the_shipped_checkpoints():
    """Checkpoints load by these names; the meta-optimizer's state follows this order."""
    config = LSTMConfig(num_layers=2, momentum=[0.9], rms_decay=0.9, time_scales=[10], gain=0.1)
    names = [name for name, _ in CoordinatewiseLSTM(config).named_parameters()]
    assert names == [
        "cells.0.weight",
        "cells.0.bias",
        "cells.1.weight",
        "cells.1.bias",
        "output.weight",
        "output.bias",
        "time.weight",
        "gain.weight",
        "gain.bias",
    ]
    assert list(CoordinatewiseLSTM(config).state_dict()) == names  # no buffer is saved


def test_spec_holds_the_papers_options_and_the_others_only_when_set():
    paper = {
        "kind": "lstm",
        "num_layers": 2,
        "hidden_size": 20,
        "preprocess": "log_sign",
        "p": 10.0,
        "output_scale": 0.1,
        "forget_bias": 1.0,
    }
    assert CoordinatewiseLSTM().spec() == paper  # as in the shipped checkpoints' records
    fields = {f.name for f in dataclasses.fields(LSTMConfig)}
    assert set(BEYOND_THE_PAPER) == fields - set(paper)
    config = LSTMConfig(forget_bias=0.0, momentum=[0.5], gain=[0.0, 0.0], zero_output=True)
    spec = CoordinatewiseLSTM(config).spec()
    assert spec["forget_bias"] == 0.0 and spec["gain"] == [0.0, 0.0]  # set, though 0
    assert "rms_decay" not in spec and "time_scales" not in spec and "param_input" not in spec
    assert from_spec(json.loads(json.dumps(spec))).config == config


def test_momentum_and_rms_features_make_adam_as_torch_optim_does():
    """The features on their own, as another architecture would use them: Adam's update is
    -lr m_hat / rms, step for step that of torch.optim.Adam (its eps is added to sqrt(v_hat)
    as RunningRMS's 1e-8)."""
    torch.manual_seed(9)
    theta = torch.randn(12, dtype=torch.float64)
    reference = theta.clone().requires_grad_()
    adam = torch.optim.Adam([reference], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    momentum, rms = Momentum((0.9,)), RunningRMS(0.999)
    m_state, v_state = momentum.init(theta), rms.init(theta)
    assert [m.shape for m in m_state] == [(12,)] and [v.shape for v in v_state] == [(12,)]
    for t in range(1, 6):
        grad = torch.randn(12, dtype=torch.float64)
        m_hat, m_state = momentum.update(grad, m_state, t)
        r, v_state = rms.update(grad, v_state, t)
        assert m_hat.shape == r.shape == (12, 1)
        theta = theta - 0.01 * (m_hat / r).squeeze(-1)
        reference.grad = grad.clone()
        adam.step()
        torch.testing.assert_close(theta, reference.detach(), rtol=1e-12, atol=1e-15)


def test_momentum_feature_keeps_one_average_per_decay():
    momentum = Momentum((0.5, 0.9))
    state = momentum.init(torch.zeros(3))
    grad = torch.tensor([1.0, -2.0, 4.0])
    m_hat, state = momentum.update(grad, state, 1)
    torch.testing.assert_close(m_hat, torch.stack([grad, grad], -1))  # bias-corrected: g at t=1
    torch.testing.assert_close(state[0], 0.5 * grad)
    torch.testing.assert_close(state[1], 0.1 * grad)


def test_step_features_are_tanh_of_t_over_each_timescale():
    scales = torch.tensor([3.0, 30.0])
    torch.testing.assert_close(step_features(0, scales), torch.zeros(2))
    torch.testing.assert_close(step_features(30, scales), torch.tanh(torch.tensor([10.0, 1.0])))


def test_nominal_term_starts_as_its_hand_designed_update_whatever_h():
    term = NominalTerm(4, [0.1, 0.02]).double()
    assert term.weight.shape == (2, 4) and not term.weight.any()
    signals = torch.randn(2, 9, dtype=torch.float64)
    for h in (torch.zeros(4, 9), torch.randn(4, 9)):
        got = term(h.double(), signals)
        torch.testing.assert_close(got, -(0.1 * signals[0] + 0.02 * signals[1]))
    # The rates then follow h: exp(a h + c) per coordinate.
    with torch.no_grad():
        term.weight.normal_()
    h = torch.randn(4, 9, dtype=torch.float64)
    rates = torch.exp(term.weight @ h + term.bias[:, None])
    torch.testing.assert_close(term(h, signals), -(rates * signals).sum(0))


def test_nominal_term_draws_the_random_numbers_of_a_linear_layer():
    """A seed gives the weights it always gave, those of the LSTM after the term too."""
    torch.manual_seed(10)
    NominalTerm(5, [0.1, 0.2, 0.3])
    after_term = torch.rand(3)
    torch.manual_seed(10)
    torch.nn.Linear(5, 3)
    torch.testing.assert_close(after_term, torch.rand(3), rtol=0, atol=0)


def test_in_column_chunks_equals_one_call_on_all_columns():
    def fn(x, hs, s):
        return x.sum(0) * s[0], [h * 2 for h in hs]

    x, s = torch.randn(3, 11), torch.randn(2, 11)
    hs = [torch.randn(4, 11), torch.randn(5, 11).t().contiguous().t()]  # a strided one too
    want_sum, want_hs = fn(x, hs, s)
    for chunk in (1, 4, 11, 100):
        got_sum, got_hs = in_column_chunks(fn, (x, hs, s), chunk)
        assert torch.equal(got_sum, want_sum)
        assert all(torch.equal(a, b) for a, b in zip(got_hs, want_hs))
