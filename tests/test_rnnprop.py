"""RNNprop (l2o.optimizers.rnnprop): its state layout, its first steps against the paper's
equations written out, scale-free inputs, meta-gradients through the unroll, the torch.optim
front-end, specs and checkpoints, configs, and a meta-training run from a config."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import l2o
from l2o.cli import main
from l2o.config import config_from_dict, load_config
from l2o.errors import InvalidInput
from l2o.evaluate import rollout
from l2o.meta import init_unroll, unroll
from l2o.meta.train import validate
from l2o.optim import LearnedOptimizer
from l2o.optimizers import RNNprop, RNNpropConfig, from_spec
from l2o.runs import build_learned_optimizer
from l2o.tasks import QuadraticFamily
from learned_checks import checkpoint_round_trip, front_end_matches_direct_steps


def _perturbed(config: RNNpropConfig | None = None, scale: float = 0.3) -> RNNprop:
    """An RNNprop whose updates are far from the initialisation's (every weight perturbed)."""
    opt = RNNprop(config)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return opt


def _assert_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and torch.equal(a, b), (a - b).abs().max()


def test_state_is_h_and_c_per_layer_and_two_moments_in_rows_of_n():
    opt = RNNprop()
    params = [torch.randn(6, 5), torch.randn(5), torch.randn(2, 3, 3), torch.randn(())]
    n = sum(p.numel() for p in params)
    state = opt.init_state(params)
    assert state["step"] == 0 and set(state) == {"step", "h", "c", "momentum", "rms"}
    assert [tuple(t.shape) for t in state["h"] + state["c"]] == [(n, 20)] * 4
    assert [tuple(t.shape) for t in state["momentum"] + state["rms"]] == [(n,)] * 2
    for _ in range(2):
        grads = [torch.randn_like(p) for p in params]
        updates, state = opt.step(grads, state)
    assert [u.shape for u in updates] == [p.shape for p in params]
    assert all(u.abs().max() <= 0.1 for u in updates)  # |update| <= alpha
    assert state["step"] == 2
    floats = sum(t.numel() for key in ("h", "c", "momentum", "rms") for t in state[key])
    assert floats == RNNpropConfig().state_floats * n == 82 * n
    assert all(t.shape[0] == n for key in ("h", "c", "momentum", "rms") for t in state[key])


def _lstm_cell(cell: nn.Linear, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """One LSTM layer written out, one coordinate per row: x (n, in), h and c (n, hidden)."""
    i, f, g, o = (cell.weight @ torch.cat([x, h], 1).t() + cell.bias.unsqueeze(1)).t().chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_first_two_steps_are_the_papers_equations():
    """m, v and their bias corrections, g~ = g / (sqrt(v_hat) + eps), m~ = m_hat / (...), the
    ELU input layer, two LSTM layers and -alpha tanh(w h + b), written out by hand."""
    config = RNNpropConfig(hidden_size=3, preprocess_size=4, beta1=0.9, beta2=0.99, alpha=0.2)
    opt = _perturbed(config)
    b1, b2, eps = 0.9, 0.99, 1e-8
    grads = [torch.tensor([0.5, -2.0, 1e-3]), torch.tensor([0.1, 3.0, -1e-3])]
    m = v = torch.zeros(3)
    h = c = [torch.zeros(3, 3)] * 2
    state = opt.init_state([torch.zeros(3)])
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        g_tilde, m_tilde = g / (v_hat.sqrt() + eps), m_hat / (v_hat.sqrt() + eps)
        if t == 1:  # m_hat = g, v_hat = g^2: both read sign(g)
            torch.testing.assert_close(g_tilde, torch.sign(g))
            torch.testing.assert_close(m_tilde, torch.sign(g))
        x = F.elu(torch.stack([g_tilde, m_tilde], 1) @ opt.input.weight.t() + opt.input.bias)
        h1, c1 = _lstm_cell(opt.cells[0], x, h[0], c[0])
        h2, c2 = _lstm_cell(opt.cells[1], h1, h[1], c[1])
        h, c = [h1, h2], [c1, c2]
        expected = -0.2 * torch.tanh(h2 @ opt.output.weight.t() + opt.output.bias).squeeze(1)
        with torch.no_grad():
            (update,), state = opt.step([g], state)
        torch.testing.assert_close(update, expected)
        torch.testing.assert_close(state["momentum"][0], m)
        torch.testing.assert_close(state["rms"][0], v)
        for got, want in zip(state["h"] + state["c"], h + c):
            torch.testing.assert_close(got, want)
    assert update.abs().min() > 1e-3  # the perturbed network really moves every coordinate


def test_updates_do_not_depend_on_the_scale_of_the_gradients():
    """Its inputs g / sqrt(v_hat) and m_hat / sqrt(v_hat) are scale-free (up to eps)."""
    opt = _perturbed()
    params = [torch.randn(4, 3), torch.randn(7)]
    states = {k: opt.init_state(params) for k in (1e-3, 1.0, 1e3)}
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        with torch.no_grad():
            updates = {}
            for k in states:
                updates[k], states[k] = opt.step([k * g for g in grads], states[k])
        for k in (1e-3, 1e3):
            for a, b in zip(updates[k], updates[1.0]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_meta_gradient_of_a_two_step_unroll_reaches_every_weight():
    opt = RNNprop(RNNpropConfig(hidden_size=8, preprocess_size=6))
    task = QuadraticFamily(dim=5, num_problems=4).sample(0)
    result = unroll(task, opt, init_unroll(task, opt), weights=[1.0, 1.0])
    grads = torch.autograd.grad(result.meta_loss, list(opt.parameters()))
    names = [name for name, _ in opt.named_parameters()]
    assert names == [
        "input.weight", "input.bias",
        "cells.0.weight", "cells.0.bias", "cells.1.weight", "cells.1.bias",
        "output.weight", "output.bias",
    ]  # fmt: skip
    for name, grad in zip(names, grads):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def test_learned_optimizer_on_a_module_gives_the_updates_of_direct_step_calls():
    opt, model = _perturbed(), _model()
    front, params, reference = front_end_matches_direct_steps(opt, model, 5)
    assert not torch.equal(params["0.weight"], reference[0].weight)  # the parameters moved
    # Its state is saved per parameter, with the optimizer's spec, and resumes.
    saved = front.state_dict()
    assert saved["param_groups"][0]["optimizer"]["kind"] == "rnnprop"
    again = LearnedOptimizer(model.parameters(), optimizer=opt)
    again.load_state_dict(saved)
    assert again.state[model[0].weight]["step"] == 5
    assert again.state[model[0].weight]["h"][0].shape == (model[0].weight.numel(), 20)


def test_learned_optimizer_matches_the_core_unroll_and_rollout_on_a_task():
    opt = _perturbed()
    task = QuadraticFamily(dim=6, num_problems=4).sample(seed=11)
    theta = task.init_params()[0].clone().requires_grad_()
    front = LearnedOptimizer([theta], optimizer=opt)
    losses = []
    for t in range(8):
        loss = task.loss([theta], task.batch(t))
        losses.append(loss.detach())
        loss.sum().backward()
        front.step()
        front.zero_grad()
    losses.append(task.loss([theta]).detach())
    core = unroll(task, opt, init_unroll(task, opt), weights=[1.0] * 8)
    _assert_equal([theta.detach()], [p.detach() for p in core.state.params])
    assert torch.equal(torch.stack(losses), rollout(opt, task, steps=8).losses)
    assert not torch.equal(theta.detach(), task.init_params()[0])


def test_a_step_without_autograd_in_chunks_is_the_step_in_one_go(monkeypatch):
    opt = _perturbed()
    params = [torch.randn(50), torch.randn(7, 3)]
    grads = [torch.randn_like(p) for p in params]
    with torch.no_grad():
        whole, whole_state = opt.step(grads, opt.init_state(params))
        monkeypatch.setattr(RNNprop, "chunk_size", 16)
        chunked, chunked_state = opt.step(grads, opt.init_state(params))
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)
    for key in ("h", "c"):
        for a, b in zip(whole_state[key], chunked_state[key]):
            torch.testing.assert_close(a, b)


def test_spec_and_checkpoint_round_trip(tmp_path):
    config = RNNpropConfig(num_layers=1, hidden_size=5, preprocess_size=3, beta1=0.9, alpha=0.05)
    opt = _perturbed(config)
    spec = json.loads(json.dumps(opt.spec()))
    assert spec == {"kind": "rnnprop", **{k: getattr(config, k) for k in spec if k != "kind"}}
    rebuilt = from_spec(spec)
    assert isinstance(rebuilt, RNNprop) and rebuilt.config == config and rebuilt.spec() == spec
    checkpoint_round_trip(opt, spec, RNNprop, tmp_path / "rnnprop")


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"num_layers": 0}, "num_layers"),
        ({"hidden_size": "20"}, "hidden_size"),
        ({"preprocess_size": 2.5}, "preprocess_size"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta2": -0.1}, "beta2"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": math.inf}, "alpha"),
        ({"forget_bias": math.nan}, "forget_bias"),
    ],
)
def test_bad_values_are_one_line_errors_naming_them(options, name):
    with pytest.raises(InvalidInput, match=f"^Invalid {name}: ") as error:
        RNNpropConfig(**options)
    assert "\n" not in str(error.value) and repr(options[name]) in str(error.value)


def test_config_kind_rnnprop_builds_it_and_writes_its_kind():
    config = load_config(None, ['optimizer.kind="rnnprop"', "optimizer.alpha=0.05"])
    assert config.optimizer == RNNpropConfig(alpha=0.05)
    assert isinstance(build_learned_optimizer(config), RNNprop)
    data = config.to_dict()
    assert data["optimizer"] == {"kind": "rnnprop", **json.loads(json.dumps(data["optimizer"]))}
    assert data["optimizer"]["kind"] == "rnnprop"
    assert config_from_dict(json.loads(json.dumps(data))) == config
    for overrides, message in [
        (["optimizer.beta2=1"], r"^Invalid beta2: 1\.0 "),
        (['optimizer.preprocess="none"'], r"unknown key.*optimizer\.preprocess"),
        (['optimizer.groups.all.params=["*"]'], r"^optimizer.groups is not available"),
    ]:
        with pytest.raises(InvalidInput, match=message) as error:
            load_config(None, ['optimizer.kind="rnnprop"', *overrides])
        assert "\n" not in str(error.value)


def test_meta_training_from_a_config_runs_improves_and_its_checkpoint_reloads(tmp_path):
    config_file = tmp_path / "rnnprop.toml"
    config_file.write_text(
        "[task]\n"
        'name = "quadratic"\n'
        "dim = 5\n"
        "num_problems = 8\n"
        "[optimizer]\n"
        'kind = "rnnprop"\n'
        "hidden_size = 8\n"
        "preprocess_size = 8\n"
        "[meta]\n"
        "epochs = 12\n"
        "horizon = 20\n"
        "truncation = 10\n"
        "meta_lr = 0.01\n"
        'meta_loss = "relative"\n'
        "validate_every = 12\n"
        "validation_tasks = 2\n"
    )
    run = tmp_path / "run"
    assert main(["train", str(config_file), "--run-dir", str(run), "--quiet"]) == 0
    config = load_config(config_file)
    start = build_learned_optimizer(config)
    trained = l2o.load(run)
    assert isinstance(trained, RNNprop) and trained.spec() == start.spec()
    assert trained.config == RNNpropConfig(hidden_size=8, preprocess_size=8)
    assert not torch.equal(trained.output.weight, start.output.weight)  # phi was meta-trained
    before = validate(start, config.task, config.meta)["final_loss"]
    after = validate(trained, config.task, config.meta)["final_loss"]
    assert math.isfinite(after) and after < 0.5 * before
