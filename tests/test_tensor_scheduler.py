"""The per-tensor scheduler of the MLP optimizer (``optimizer.scheduler_size``,
l2o.optimizers.tensor_scheduler): it starts as Adam exactly, sets one multiplier per tensor on
the whole update, passes meta-gradients, keeps its state per tensor through the torch.optim
front-end (merged, split, saved and resumed exactly) and meta-trains."""

import io
import json
import math

import pytest
import torch
from torch import Tensor, nn

import l2o
from l2o.config import load_config
from l2o.errors import InvalidInput
from l2o.evaluate import rollout
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.meta.unroll import unroll
from l2o.optim import LearnedOptimizer
from l2o.optimizers import MLPOptimizerConfig, PerParameterMLP, from_spec
from l2o.optimizers.base import PER_TENSOR
from l2o.runs import build_learned_optimizer, train
from l2o.tasks.base import Task


def _scheduled(size: int = 4, seed: int = 0, **options) -> PerParameterMLP:
    torch.manual_seed(seed)
    return PerParameterMLP(MLPOptimizerConfig(hidden_size=8, scheduler_size=size, **options))


def _wake(opt: PerParameterMLP, scale: float = 0.5, mlp: bool = True) -> PerParameterMLP:
    """Give the zero-initialised read-outs random weights (the scheduler's, and the MLP's
    unless ``mlp`` is False), so that neither is the identity."""
    with torch.no_grad():
        opt.scheduler.out_weight.normal_(0.0, scale)
        opt.scheduler.out_bias.fill_(0.1)
        if mlp:
            opt.output.weight.normal_(0.0, 0.3)
            opt.output.bias.normal_(0.0, 0.3)
    return opt


def _twin_without_scheduler(opt: PerParameterMLP) -> PerParameterMLP:
    """The same MLP (weights and options) with no scheduler."""
    options = {k: v for k, v in opt.spec().items() if k != "kind"}
    twin = from_spec({**options, "kind": "mlp", "scheduler_size": 0})
    mine = {k: v for k, v in opt.state_dict().items() if not k.startswith("scheduler.")}
    twin.load_state_dict(mine)
    return twin


class TwoTensors(Task):
    """Least squares through a weight matrix and a bias, per problem; ``scale`` makes the
    bias's gradients larger than the weight's."""

    param_names = ["w", "b"]

    def __init__(self, num_problems: int = 3, scale: float = 30.0) -> None:
        g = torch.Generator().manual_seed(0)
        self.num_problems, self.scale = num_problems, scale
        self.x = torch.randn(num_problems, 8, 4, generator=g)
        self.y = torch.randn(num_problems, 8, 3, generator=g)
        self.w0 = 0.3 * torch.randn(num_problems, 3, 4, generator=g)
        self.b0 = 0.1 * torch.randn(num_problems, 3, generator=g)

    def init_params(self) -> list[Tensor]:
        return [self.w0.clone(), self.b0.clone()]

    def loss(self, params, batch=None) -> Tensor:
        w, b = params
        out = torch.einsum("npi,noi->npo", self.x, w) + self.scale * b.unsqueeze(1)
        return (out - self.y).pow(2).mean((1, 2))


def test_starts_as_adam_exactly():
    """A fresh scheduler multiplies by exactly 1: the updates are those of the same MLP
    without it, bit for bit, and before meta-training those are Adam's."""
    opt = _scheduled()
    with torch.no_grad():  # the MLP's own term woken: the equality is not only Adam's
        opt.output.weight.normal_(0.0, 0.3)
    twin = _twin_without_scheduler(opt)
    params = [torch.randn(5, 4), torch.randn(4), torch.randn(())]
    state, twin_state = opt.init_state(params), twin.init_state(params)
    for _ in range(4):
        grads = [torch.randn_like(p) for p in params]
        updates, state = opt.step(grads, state, params=params)
        expected, twin_state = twin.step(grads, twin_state, params=params)
        for u, e in zip(updates, expected):
            assert torch.equal(u, e)
        assert torch.equal(state[PER_TENSOR]["log_lr"], torch.zeros(3))
        params = [p + u for p, u in zip(params, updates)]

    # Through the front-end, the first steps are torch.optim.Adam's.
    torch.manual_seed(1)
    ours = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    theirs = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    theirs.load_state_dict(ours.state_dict())
    opt = LearnedOptimizer(ours.parameters(), optimizer=_scheduled())
    adam = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(3):
        for model, o in ((ours, opt), (theirs, adam)):
            o.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_seed_gives_the_mlp_the_same_weights_with_or_without_scheduler():
    with_it, without = _scheduled(seed=3), _scheduled(size=0, seed=3)
    assert without.scheduler is None
    theirs = without.state_dict()
    mine = {k: v for k, v in with_it.state_dict().items() if not k.startswith("scheduler.")}
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_one_multiplier_per_tensor_on_the_whole_update():
    """Each coordinate's update is the no-scheduler update times its tensor's multiplier
    exp(s); tensors with different gradient scales get different multipliers; |s| <= bound."""
    opt = _wake(_scheduled())
    twin = _twin_without_scheduler(opt)
    params = [torch.randn(6, 5), 0.1 * torch.randn(7)]
    state, twin_state = opt.init_state(params), twin.init_state(params)
    for _ in range(3):
        grads = [torch.randn(6, 5), 100.0 * torch.randn(7)]
        updates, state = opt.step(grads, state, params=params)
        expected, twin_state = twin.step(grads, twin_state, params=params)
        log_lr = state[PER_TENSOR]["log_lr"].detach()
        assert log_lr.shape == (2,)
        for u, e, s in zip(updates, expected, log_lr):
            torch.testing.assert_close(u, e * torch.exp(s), rtol=1e-6, atol=0.0)
        assert abs(float(log_lr[0] - log_lr[1])) > 1e-3
        params = [p + u for p, u in zip(params, updates)]
    # Bounded whatever the read-out's weights: s = bound tanh(.).
    with torch.no_grad():
        opt.scheduler.out_weight.fill_(1e3)
    _, state = opt.step(grads, state, params=params)
    assert float(state[PER_TENSOR]["log_lr"].detach().abs().max()) <= 2.0


def test_state_is_per_tensor_and_per_coordinate_state_stays_seven_floats():
    opt = _scheduled(size=6)
    params = [torch.randn(30, 20), torch.randn(20), torch.randn(3, 4, 5, 5), torch.randn(())]
    n = sum(p.numel() for p in params)
    state = opt.init_state(params)
    floats = sum(t.numel() for key in ("momentum", "rms", "factored") for t in state[key])
    assert floats == 7 * n <= 8 * n
    per_tensor = state[PER_TENSOR]
    assert per_tensor["h"].shape == per_tensor["c"].shape == (4, 6)
    assert per_tensor["log_lr"].shape == (4,)


def test_tensors_stepped_together_or_apart_get_the_same_updates():
    """No pooling across tensors: a tensor's multiplier depends on its own history only."""
    opt = _wake(_scheduled())
    params = [torch.randn(6, 5), torch.randn(5), torch.randn(2, 3, 3)]
    together, apart = opt.init_state(params), [opt.init_state([p]) for p in params]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        updates, together = opt.step(grads, together, params=params)
        for i, (g, p) in enumerate(zip(grads, params)):
            (alone,), apart[i] = opt.step([g], apart[i], params=[p])
            torch.testing.assert_close(updates[i], alone)
    merged = torch.cat([s[PER_TENSOR]["h"] for s in apart])
    torch.testing.assert_close(together[PER_TENSOR]["h"], merged)


def test_meta_gradients_reach_the_scheduler_through_an_unroll():
    task = TwoTensors()
    opt = _scheduled()
    result = unroll(task, opt, init_unroll(task, opt), [1.0] * 4)
    result.meta_loss.backward()
    # At the start the read-out is zero: it (and the nominal term's bias) moves first.
    assert opt.scheduler.out_weight.grad.abs().sum() > 0
    assert opt.scheduler.out_bias.grad.abs() > 0
    assert not opt.scheduler.weight.grad.any()  # nothing reaches h through a zero read-out
    opt.zero_grad()
    _wake(opt, mlp=False)
    result = unroll(task, opt, init_unroll(task, opt), [1.0] * 4)
    result.meta_loss.backward()
    for name, p in opt.scheduler.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name
    # Second-order meta-gradients pass through the cell too.
    second = TruncatedBPTT(second_order=True).meta_gradient(
        opt, task, init_unroll(task, opt), [1.0] * 3
    )
    assert second.finite


def _loss(params, x, y):
    w1, b1, w2, b2 = params
    return nn.functional.mse_loss(torch.tanh(x @ w1.t() + b1) @ w2.t() + b2, y)


def test_front_end_matches_the_functional_step_and_resumes_exactly():
    opt = _wake(_scheduled())
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    params = [p.detach().clone() for p in model.parameters()]
    front = LearnedOptimizer(model.parameters(), optimizer=opt)
    state = opt.init_state(params)
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    for step in range(6):
        if step == 3:  # save, and go on with a new front-end from the saved state
            buffer = io.BytesIO()
            torch.save(front.state_dict(), buffer)
            buffer.seek(0)
            front = LearnedOptimizer(model.parameters(), optimizer=opt)
            front.load_state_dict(torch.load(buffer, weights_only=True))
        front.zero_grad()
        _loss(list(model.parameters()), x, y).backward()
        front.step()
        theta = [p.requires_grad_() for p in params]
        grads = torch.autograd.grad(_loss(theta, x, y), theta)
        with torch.no_grad():
            updates, state = opt.step(grads, state, params=[p.detach() for p in params])
        params = [p.detach() + u.detach() for p, u in zip(params, updates)]
        for ours, theirs in zip(model.parameters(), params):
            assert torch.equal(ours, theirs), step
    for i, p in enumerate(model.parameters()):
        view = front.state[p][PER_TENSOR]
        assert view["h"].shape == (1, 4) and view["log_lr"].shape == (1,)
        assert torch.equal(view["log_lr"], state[PER_TENSOR]["log_lr"][i : i + 1].detach())


def test_front_end_keeps_a_skipped_parameters_scheduler_state():
    """A parameter without a gradient keeps its state and steps in its own cohort afterwards:
    the same updates as stepping each parameter alone."""
    opt = _wake(_scheduled())
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    params = [p.detach().clone() for p in model.parameters()]
    front = LearnedOptimizer(model.parameters(), optimizer=opt)
    apart = [opt.init_state([p]) for p in params]
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    for step in range(5):
        front.zero_grad()
        _loss(list(model.parameters()), x, y).backward()
        grads = torch.autograd.grad(_loss([p.requires_grad_() for p in params], x, y), params)
        skipped = 1 if step == 2 else None
        if skipped is not None:
            model[0].bias.grad = None
        front.step()
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                if i != skipped:
                    (u,), apart[i] = opt.step([g], apart[i], params=[p.detach()])
                    params[i] = p.detach() + u
        for ours, theirs in zip(model.parameters(), params):
            torch.testing.assert_close(ours, theirs.detach())
    assert front.state[model[0].bias]["step"] == 4 and front.state[model[0].weight]["step"] == 5


def test_config_spec_and_errors():
    config = load_config(None, ['optimizer.kind="mlp"', "optimizer.scheduler_size=8"])
    assert config.optimizer.scheduler_size == 8
    opt = build_learned_optimizer(config)
    assert isinstance(opt, PerParameterMLP) and opt.scheduler is not None
    spec = json.loads(json.dumps(opt.spec()))
    assert spec["scheduler_size"] == 8 and spec["scheduler_bound"] == 2.0
    assert from_spec(spec).spec() == spec
    # Without a scheduler the spec is the one saved before it existed.
    assert not any(k.startswith("scheduler_") for k in PerParameterMLP().spec())
    for options, name in [
        ({"scheduler_size": -1}, "scheduler_size"),
        ({"scheduler_size": 2.5}, "scheduler_size"),
        ({"scheduler_bound": 0}, "scheduler_bound"),
    ]:
        with pytest.raises(InvalidInput, match=f"^Invalid {name}: ") as error:
            MLPOptimizerConfig(**options)
        assert "\n" not in str(error.value)


def test_meta_training_with_the_scheduler_runs_and_its_checkpoint_reloads(tmp_path):
    overrides = [
        'optimizer.kind="mlp"',
        "optimizer.hidden_size=8",
        "optimizer.scheduler_size=4",
        "task.num_problems=4",
        "meta.epochs=4",
        "meta.horizon=10",
        "meta.truncation=5",
        "meta.meta_lr=0.01",
        "meta.validate_every=2",
        "meta.validation_tasks=1",
    ]
    config = load_config(None, overrides)
    state = train(config, tmp_path / "run", quiet=True, tensorboard=False)
    assert state.epoch == 4 and math.isfinite(state.best_validation)
    loaded = l2o.load(tmp_path / "run")
    assert isinstance(loaded, PerParameterMLP) and loaded.config == config.optimizer
    assert loaded.scheduler.out_weight.abs().sum() > 0  # meta-trained from zero
    losses = rollout(loaded, config.task.sample(123), 10).losses
    assert torch.isfinite(losses).all()
