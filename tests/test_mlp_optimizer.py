"""The per-parameter MLP optimizer (l2o.optimizers.mlp): it starts as Adam, keeps its state per
coordinate (and per tensor where the maths needs it), round-trips through specs and checkpoints,
steps torch models, passes meta-gradients to every weight and meta-trains."""

import json
import math

import pytest
import torch
from torch import nn

from l2o.checkpoint import load_checkpoint, save_checkpoint
from l2o.config import config_from_dict, load_config
from l2o.errors import InvalidInput
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.optim import LearnedOptimizer
from l2o.optimizers import MLPOptimizerConfig, PerParameterMLP, from_spec
from l2o.optimizers.mlp import FactoredRMS
from l2o.runs import build_learned_optimizer, train
from l2o.tasks import QuadraticFamily


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _wake(optimizer: PerParameterMLP, scale: float = 0.3) -> PerParameterMLP:
    """Give the last layer (zero at the start) random weights, so the MLP's update is not 0."""
    with torch.no_grad():
        optimizer.output.weight.normal_(0.0, scale)
        optimizer.output.bias.normal_(0.0, scale)
    return optimizer


def test_starts_as_torch_adam_over_several_steps():
    torch.manual_seed(1)
    ours, theirs = _model(), _model()
    theirs.load_state_dict(ours.state_dict())
    opt = LearnedOptimizer(ours.parameters(), optimizer=PerParameterMLP(MLPOptimizerConfig()))
    adam = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(6):
        for model, o in ((ours, opt), (theirs, adam)):
            o.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        # The same maths in another order of float32 roundings (exp(log lr), lerp).
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ours[0].weight, _model()[0].weight)


def test_state_is_seven_floats_per_coordinate_at_the_defaults():
    params = [torch.randn(30, 20), torch.randn(20), torch.randn(3, 4, 5, 5), torch.randn(())]
    n = sum(p.numel() for p in params)
    state = PerParameterMLP().init_state(params)
    floats = sum(t.numel() for key in ("momentum", "rms", "factored") for t in state[key])
    assert floats == 7 * n == MLPOptimizerConfig().state_floats * n
    assert floats <= 8 * n  # the target


def test_factored_moments_are_adafactor_for_matrices_and_full_for_vectors():
    b, g_m, g_v = 0.9, torch.randn(3, 5), torch.randn(4)
    feature = FactoredRMS(b)
    grad = torch.cat([g_m.reshape(-1), g_v])
    state = feature.init(grad)
    fac, state = feature.update(grad, [g_m.shape, g_v.shape], state, 1)
    r, c = (1 - b) * g_m.pow(2).mean(1), (1 - b) * g_m.pow(2).mean(0)
    v_matrix = torch.outer(r, c) / r.mean() / (1 - b)
    expected = torch.cat([v_matrix.reshape(-1), g_v.pow(2)]).sqrt() + 1e-8
    torch.testing.assert_close(fac, expected)
    # The matrix's segment holds [r, c, zeros]; the vector's its v.
    torch.testing.assert_close(state[0][:8], torch.cat([r, c]))
    assert torch.all(state[0][8:15] == 0)
    torch.testing.assert_close(state[0][15:], (1 - b) * g_v.pow(2))


def test_tensors_stepped_together_or_apart_get_the_same_updates():
    """Per-tensor statistics stay per tensor when states are concatenated, as the torch.optim
    front-end does."""
    opt = _wake(PerParameterMLP())
    params = [torch.randn(6, 5), torch.randn(5), torch.randn(2, 3, 3)]
    together, apart = opt.init_state(params), [opt.init_state([p]) for p in params]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        updates, together = opt.step(grads, together, params=params)
        for i, (g, p) in enumerate(zip(grads, params)):
            (alone,), apart[i] = opt.step([g], apart[i], params=[p])
            torch.testing.assert_close(updates[i], alone)
        assert any(u.abs().max() > 0 for u in updates)


def test_spec_round_trip_and_one_line_errors():
    config = MLPOptimizerConfig(hidden_size=8, momentum=[0.5, 0.9], time_scales=[10, 100])
    opt = PerParameterMLP(config)
    spec = json.loads(json.dumps(opt.spec()))
    assert spec["kind"] == "mlp" and spec["momentum"] == [0.5, 0.9]
    rebuilt = from_spec(spec)
    assert isinstance(rebuilt, PerParameterMLP) and rebuilt.config == config
    assert rebuilt.spec() == spec
    for options, name in [
        ({"hidden_size": 0}, "hidden_size"),
        ({"momentum": [0.5, 0.99]}, "momentum"),
        ({"rms_decay": 1.0}, "rms_decay"),
        ({"exp_mult": -1}, "exp_mult"),
        ({"nominal_lr": "fast"}, "nominal_lr"),
    ]:
        with pytest.raises(InvalidInput, match=f"^Invalid {name}: ") as error:
            MLPOptimizerConfig(**options)
        assert "\n" not in str(error.value)


def test_checkpoint_save_and_load(tmp_path):
    opt = _wake(PerParameterMLP(MLPOptimizerConfig(hidden_size=8)))
    path = save_checkpoint(tmp_path / "mlp", opt, {"note": "test"})
    loaded, record = load_checkpoint(path)
    assert record["optimizer"] == opt.spec() and record["note"] == "test"
    for (name, a), (_, b) in zip(opt.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    params = [torch.randn(4, 3)]
    grads = [torch.randn(4, 3)]
    expected, _ = opt.step(grads, opt.init_state(params), params=params)
    got, _ = loaded.step(grads, loaded.init_state(params), params=params)
    torch.testing.assert_close(got[0], expected[0])


def test_learned_optimizer_trains_a_torch_model_and_saves_its_state():
    torch.manual_seed(0)
    model = _model()
    opt = LearnedOptimizer(model.parameters(), optimizer=_wake(PerParameterMLP(), 0.1), lr=10.0)
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    state = opt.state_dict()
    assert state["param_groups"][0]["optimizer"]["kind"] == "mlp"
    again = LearnedOptimizer(model.parameters(), optimizer=opt.param_groups[0]["optimizer"])
    again.load_state_dict(state)
    assert again.state[model[0].weight]["step"] == 30


def test_meta_gradient_reaches_every_weight():
    opt = _wake(PerParameterMLP(MLPOptimizerConfig(hidden_size=8)), 0.1)
    task = QuadraticFamily(num_problems=4).sample(0)
    result = TruncatedBPTT().meta_gradient(opt, task, init_unroll(task, opt), [1.0] * 5)
    assert result.finite
    names = [name for name, _ in opt.named_parameters()]
    assert len(result.grads) == len(names) == 8  # 2 hidden layers, output, nominal term
    for name, grad in zip(names, result.grads):
        assert grad.abs().sum() > 0, name


def test_meta_gradient_at_the_start_reaches_the_last_layer():
    """With the last layer at zero, only it (and the nominal term's bias) move first."""
    opt = PerParameterMLP(MLPOptimizerConfig(hidden_size=8))
    task = QuadraticFamily(num_problems=4).sample(0)
    result = TruncatedBPTT().meta_gradient(opt, task, init_unroll(task, opt), [1.0] * 5)
    grads = dict(zip([n for n, _ in opt.named_parameters()], result.grads))
    assert grads["output.weight"].abs().sum() > 0
    assert grads["nominal.bias"].abs().sum() > 0


def test_config_kind_mlp_builds_it_and_the_default_stays_the_lstm():
    config = load_config(None, ['optimizer.kind="mlp"', "optimizer.hidden_size=16"])
    assert config.optimizer == MLPOptimizerConfig(hidden_size=16)
    assert isinstance(build_learned_optimizer(config), PerParameterMLP)
    data = config.to_dict()
    assert data["optimizer"]["kind"] == "mlp"
    assert config_from_dict(json.loads(json.dumps(data))) == config
    assert "kind" not in load_config(None).to_dict()["optimizer"]
    with pytest.raises(InvalidInput, match=r"^Invalid optimizer.kind: 'rnn'"):
        load_config(None, ['optimizer.kind="rnn"'])
    with pytest.raises(InvalidInput, match=r"unknown key.*optimizer\.preprocess"):
        load_config(None, ['optimizer.kind="mlp"', 'optimizer.preprocess="none"'])
    with pytest.raises(InvalidInput, match=r"^optimizer.groups is not available"):
        load_config(None, ['optimizer.kind="mlp"', 'optimizer.groups.all.params=["*"]'])


def test_meta_training_lowers_the_validation_loss(tmp_path):
    overrides = [
        'optimizer.kind="mlp"',
        "optimizer.hidden_size=16",
        "optimizer.nominal_lr=0.01",
        "task.num_problems=16",
        "meta.epochs=20",
        "meta.horizon=20",
        "meta.truncation=10",
        "meta.meta_lr=0.01",
        'meta.meta_loss="relative"',
        "meta.validate_every=20",
        "meta.validation_tasks=2",
    ]
    config = load_config(None, overrides)
    start = build_learned_optimizer(config)
    from l2o.meta.train import validate

    before = validate(start, config.task, config.meta)["final_loss"]
    state = train(config, tmp_path / "run", quiet=True, tensorboard=False)
    assert state.epoch == 20
    assert math.isfinite(state.best_validation)
    assert state.best_validation < 0.9 * before


def _adam_hd(params, grads_per_step, lr, beta, bound):
    """The hypergradient rule by hand, per tensor: a += beta cos(g_t, d_{t-1}) (clipped),
    update = -lr exp(a) m_hat / (sqrt(v_hat) + 1e-8), d the previous step's Adam direction."""
    b1, b2 = 0.9, 0.999
    m = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    v = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    a = [0.0] * len(params)
    direction = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    out = []
    for t, grads in enumerate(grads_per_step, start=1):
        step = []
        for j, g in enumerate(grads):
            g = g.double()
            d = direction[j]
            cos = float(g.flatten() @ d.flatten() / (g.norm() * d.norm() + 1e-30)) if t > 1 else 0
            a[j] = min(max(a[j] + beta * cos, -bound), bound)
            m[j] = b1 * m[j] + (1 - b1) * g
            v[j] = b2 * v[j] + (1 - b2) * g * g
            direction[j] = (m[j] / (1 - b1**t)) / ((v[j] / (1 - b2**t)).sqrt() + 1e-8)
            step.append(-lr * math.exp(a[j]) * direction[j])
        out.append((step, list(a)))
    return out


@pytest.mark.parametrize("autograd", [True, False])
def test_lr_adaptation_untrained_is_the_hypergradient_rule_by_hand(autograd):
    """A fresh optimizer with ``lr_adaptation`` (no scheduler) makes Adam-HD's updates: each
    tensor's rate rises while g_t and the previous direction agree and falls when they oppose,
    within the bound; the reference step (autograd) and the step without it alike."""
    torch.manual_seed(3)
    opt = PerParameterMLP(MLPOptimizerConfig(hidden_size=8, nominal_lr=0.01, lr_adaptation=0.4,
                                             adaptation_bound=1.0))  # fmt: skip
    params = [torch.randn(5, 4), torch.randn(7)]
    target = [torch.randn(5, 4), torch.randn(7)]
    grads_per_step = []
    # Tensor 0: a gradient that keeps its direction (its rate climbs to the bound); tensor 1:
    # one that flips sign every step (its rate falls).
    for t in range(8):
        grads_per_step.append([params[0] - target[0] + 0.01 * t, (-1) ** t * (params[1] + 1)])
    want = _adam_hd(params, grads_per_step, lr=0.01, beta=0.4, bound=1.0)
    state = opt.init_state(params)
    with torch.set_grad_enabled(autograd):
        for grads, (expected, adapt) in zip(grads_per_step, want):
            updates, state = opt.step(grads, state, params=params)
            for u, e in zip(updates, expected):
                torch.testing.assert_close(u.double(), e, rtol=2e-5, atol=1e-9)
            torch.testing.assert_close(state["tensors"]["adapt"].double(),
                                       torch.tensor(adapt, dtype=torch.float64), atol=1e-5, rtol=0)  # fmt: skip
    assert want[-1][1][0] == 1.0 and want[-1][1][1] < -0.5  # the rule did both things


def test_lr_adaptation_gain_is_a_meta_parameter_with_a_gradient_and_the_spec_keeps_it():
    config = MLPOptimizerConfig(hidden_size=8, lr_adaptation=0.3, scheduler_size=4)
    opt = _wake(PerParameterMLP(config), 0.1)
    assert opt.adaptation_log_gain is not None
    assert math.isclose(float(opt.adaptation_log_gain.detach()), math.log(0.3), rel_tol=1e-6)
    assert opt.scheduler is not None and opt.scheduler.extra_inputs == 2
    task = QuadraticFamily(num_problems=2).sample(0)
    result = TruncatedBPTT().meta_gradient(opt, task, init_unroll(task, opt), [1.0] * 5)
    names = [name for name, _ in opt.named_parameters()]
    assert result.finite
    assert result.grads[names.index("adaptation_log_gain")].abs() > 0
    spec = json.loads(json.dumps(opt.spec()))
    assert spec["lr_adaptation"] == 0.3 and spec["adaptation_bound"] == 7.0
    assert from_spec(spec).config == config
    plain = PerParameterMLP(MLPOptimizerConfig(hidden_size=8)).spec()
    assert "lr_adaptation" not in plain and "adaptation_bound" not in plain  # as saved before
    for options, name in [({"lr_adaptation": -0.1}, "lr_adaptation"),
                          ({"adaptation_bound": 0}, "adaptation_bound")]:  # fmt: skip
        with pytest.raises(InvalidInput, match=f"^Invalid {name}: ") as error:
            MLPOptimizerConfig(**options)
        assert "\n" not in str(error.value)


def test_nominal_squash_hardtanh_reads_min_h_1_and_the_spec_keeps_it():
    # The nominal term's log rate reads min(h, 1) of the (ReLU) hidden units instead of
    # tanh(h): the same start (Adam), a different update once its weights move.
    torch.manual_seed(0)
    params = [torch.randn(6, 5), torch.randn(5)]
    grads = [torch.randn_like(p) for p in params]
    updates = {}
    for squash in ("tanh", "hardtanh"):
        config = MLPOptimizerConfig(hidden_size=8, num_layers=1, nominal_squash=squash)
        torch.manual_seed(1)
        opt = PerParameterMLP(config)
        fresh = opt.step(grads, opt.init_state(params), params=params)[0]
        with torch.no_grad():
            opt.nominal.weight.fill_(3.0)  # every hidden unit raises the log rate
        with torch.enable_grad():
            updates[squash] = opt.step(grads, opt.init_state(params), params=params)[0]
        updates[squash + "-fresh"] = fresh
        spec = json.loads(json.dumps(opt.spec()))
        assert from_spec(spec).config == config
        assert ("nominal_squash" in spec) == (squash == "hardtanh")  # earlier specs: tanh
    torch.testing.assert_close(updates["tanh-fresh"], updates["hardtanh-fresh"])
    assert not torch.allclose(updates["tanh"][0], updates["hardtanh"][0])
    with pytest.raises(
        InvalidInput, match=r"^Invalid nominal_squash: 'relu' \(valid: tanh, hardtanh\)$"
    ):
        MLPOptimizerConfig(nominal_squash="relu")


def test_lr_adaptation_in_the_front_end_keeps_one_rate_per_tensor_through_a_state_dict():
    torch.manual_seed(0)
    model = _model()
    config = MLPOptimizerConfig(hidden_size=8, nominal_lr=0.01, lr_adaptation=0.3)
    opt = LearnedOptimizer(model.parameters(), optimizer=PerParameterMLP(config))
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    rates = [opt.state[p]["tensors"]["adapt"] for p in model.parameters()]
    assert all(r.shape == (1,) for r in rates) and any(float(r) != 0 for r in rates)
    again = LearnedOptimizer(model.parameters(), optimizer=opt.param_groups[0]["optimizer"])
    again.load_state_dict(opt.state_dict())
    for p in model.parameters():
        assert torch.equal(again.state[p]["tensors"]["adapt"], opt.state[p]["tensors"]["adapt"])
