"""The torch.optim front-end: same updates as the core, torch.optim conventions, exact resume."""

import copy
import io

import pytest
import torch
from torch import nn
from torch.func import functional_call

import l2o
from l2o.errors import CheckpointError, InvalidInput
from l2o.evaluate import rollout
from l2o.meta.unroll import init_unroll, unroll
from l2o.optim import LearnedOptimizer
from l2o.optimizers import (
    SGD,
    Adam,
    CoordinatewiseLSTM,
    GroupedOptimizer,
    LSTMConfig,
    StepOptimizer,
)
from l2o.optimizers.base import call_step
from l2o.tasks import QuadraticFamily


def _lstm(**config):
    """A learned optimizer whose updates are far from the initialisation's (weights perturbed)."""
    opt = CoordinatewiseLSTM(LSTMConfig(**config))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return opt


def _mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def _data():
    g = torch.Generator().manual_seed(4)
    return torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)


def _loss(model, x, y):
    return (model(x) - y).pow(2).mean()


def _train(model, opt, steps, data=None):
    x, y = data or _data()
    for _ in range(steps):
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def _assert_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and torch.equal(a, b), (a - b).abs().max()


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"momentum": (0.9, 0.5)},
        {"momentum": (0.9,), "rms_decay": 0.99},
        {"time_scales": (3, 30)},
        {"momentum": (0.9,), "gain": 0.01},
        {"momentum": (0.9,), "rms_decay": 0.999, "gain": (0, 0.01, 0, 0.001)},
        {"param_input": True},
    ],
)
def test_usual_loop_gives_the_updates_of_direct_step_calls(config):
    lstm, model = _lstm(**config), _mlp()
    reference = copy.deepcopy(model)
    opt = LearnedOptimizer(model.parameters(), optimizer=lstm)
    x, y = _data()
    params = {n: p.detach().clone() for n, p in reference.named_parameters()}
    state = lstm.init_state(list(params.values()))
    for _ in range(5):
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
        leaves = {n: p.requires_grad_() for n, p in params.items()}
        loss = (functional_call(reference, leaves, (x,)) - y).pow(2).mean()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            theta = [p.detach() for p in leaves.values()]  # read by param_input LSTMs only
            updates, state = call_step(lstm, grads, state, params=theta)
            params = {n: p.detach() + u for (n, p), u in zip(leaves.items(), updates)}
        _assert_equal([p.detach() for p in model.parameters()], list(params.values()))
    first = next(iter(reference.parameters()))
    assert not torch.equal(params["0.weight"], first)  # the parameters really moved


def test_usual_loop_matches_the_core_unroll_and_rollout_on_a_task():
    lstm = _lstm()
    task = QuadraticFamily(dim=6, num_problems=4).sample(seed=11)
    theta = task.init_params()[0].clone().requires_grad_()
    opt = LearnedOptimizer([theta], optimizer=lstm)
    losses = []
    for t in range(8):
        loss = task.loss([theta], task.batch(t))
        losses.append(loss.detach())
        loss.sum().backward()
        opt.step()
        opt.zero_grad()
    losses.append(task.loss([theta]).detach())
    core = unroll(task, lstm, init_unroll(task, lstm), weights=[1.0] * 8)
    _assert_equal([theta.detach()], [p.detach() for p in core.state.params])
    assert torch.equal(torch.stack(losses), rollout(lstm, task, steps=8).losses)
    assert not torch.equal(theta.detach(), task.init_params()[0])


def _grad_problem(dtype):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(7, 7, generator=g, dtype=dtype)
    params0 = [
        torch.randn(7, generator=g, dtype=dtype),
        torch.randn(3, 2, generator=g, dtype=dtype),
    ]

    def set_grads(params):
        x, w = (p.detach() for p in params)
        params[0].grad = A.T @ torch.tanh(A @ x)
        params[1].grad = torch.sin(w) + torch.tanh(3 * w)

    return params0, set_grads


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_hand_designed_groups_follow_torch_optim_trajectories(dtype, tol):
    params0, set_grads = _grad_problem(dtype)
    ours = [p.clone().requires_grad_() for p in params0]
    theirs = [p.clone().requires_grad_() for p in params0]
    opt = LearnedOptimizer(
        [
            {"params": [ours[0]], "optimizer": Adam(lr=0.02, betas=(0.8, 0.99))},
            {"params": [ours[1]], "optimizer": SGD(lr=0.05, momentum=0.9), "lr": 0.5},
        ]
    )
    adam = torch.optim.Adam([theirs[0]], lr=0.02, betas=(0.8, 0.99))
    sgd = torch.optim.SGD([theirs[1]], lr=0.025, momentum=0.9)  # 0.5 * 0.05
    for _ in range(100):
        set_grads(ours)
        set_grads(theirs)
        opt.step()
        adam.step()
        sgd.step()
    for a, b, p0 in zip(ours, theirs, params0):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=tol, atol=tol)
        assert not torch.allclose(a.detach(), p0)
    assert opt.state[ours[0]]["step"] == 100


def test_param_groups_with_mixed_learned_and_hand_designed_optimizers():
    lstm_a, lstm_b, model = _lstm(), _lstm(num_layers=1, hidden_size=5), _mlp()
    reference = copy.deepcopy(model)
    weights = [model[0].weight, model[2].weight]
    opt = LearnedOptimizer(
        [
            {"params": weights, "optimizer": lstm_a},
            {"params": [model[0].bias], "optimizer": lstm_b, "lr": 0.5},
            {"params": [model[2].bias], "optimizer": Adam(lr=0.01)},
        ]
    )
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5, 1.0]
    x, y = _data()
    params = [p.detach().clone() for p in reference.parameters()]
    groups = [(lstm_a, [0, 2], 1.0), (lstm_b, [1], 0.5), (Adam(lr=0.01), [3], 1.0)]
    states = [o.init_state([params[i] for i in idx]) for o, idx, _ in groups]
    for _ in range(4):
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
        leaves = [p.requires_grad_() for p in params]
        names = [n for n, _ in reference.named_parameters()]
        loss = (functional_call(reference, dict(zip(names, leaves)), (x,)) - y).pow(2).mean()
        grads = torch.autograd.grad(loss, leaves)
        params = [p.detach() for p in leaves]
        with torch.no_grad():
            for k, (o, idx, lr) in enumerate(groups):
                updates, states[k] = o.step([grads[i] for i in idx], states[k])
                for i, u in zip(idx, updates):
                    params[i] = params[i].add(u, alpha=lr)
        _assert_equal([p.detach() for p in model.parameters()], params)


class _CountingLSTM(CoordinatewiseLSTM):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.inits = []

    def step(self, grads, state, in_place=False):
        self.calls.append([g.numel() for g in grads])
        return super().step(grads, state, in_place=in_place)

    def init_state(self, params):
        self.inits.append([p.numel() for p in params])
        return super().init_state(params)


def test_all_parameters_of_a_group_step_in_one_batched_call_without_copying_state(monkeypatch):
    lstm, model = _CountingLSTM(), _mlp()
    opt = LearnedOptimizer(model.parameters(), optimizer=lstm)
    merges = []
    merge = l2o.optim._merge
    monkeypatch.setattr(l2o.optim, "_merge", lambda states, n: merges.append(n) or merge(states, n))
    _train(model, opt, 1)
    sizes = [p.numel() for p in model.parameters()]
    # the LSTM's first state is made for all of them at once (not per parameter, then merged:
    # two copies of 320 bytes per parameter), then the batched state is reused
    _train(model, opt, 2)
    assert lstm.calls == [sizes] * 3
    assert lstm.inits == [sizes] and merges == []
    # every parameter's state is a view into the one batched state of the last step
    h = [opt.state[p]["h"][0] for p in model.parameters()]
    assert len({t.untyped_storage().data_ptr() for t in h}) == 1
    assert h[0].shape == (model[0].weight.numel(), 20)


def test_replaced_state_is_read_not_the_cached_batch():
    lstm, model = _lstm(), _mlp()
    opt = LearnedOptimizer(model.parameters(), optimizer=lstm)
    _train(model, opt, 2)
    weight = model[0].weight
    before = weight.detach().clone()
    fresh = lstm.init_state([weight])
    opt.state[weight]["h"] = fresh["h"]  # a user resets one tensor's memory
    opt.state[weight]["c"] = fresh["c"]
    x, y = _data()
    _loss(model, x, y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    states = [opt.state[p] for p in model.parameters()]
    opt.step()
    merged = {
        "step": 2,
        **{k: [torch.cat([s[k][i] for s in states]) for i in range(2)] for k in ("h", "c")},
    }
    updates, _ = lstm.step(grads, merged)
    assert torch.equal(weight.detach(), before + updates[0])


@pytest.mark.parametrize(
    "config", [{}, {"momentum": (0.9,)}, {"rms_decay": 0.9}, {"time_scales": (10,)}]
)
def test_state_dict_resume_is_exact(config):
    def build(model):
        return LearnedOptimizer(
            [
                {"params": [model[0].weight, model[2].weight], "optimizer": lstm},
                {"params": [model[0].bias, model[2].bias], "optimizer": Adam(lr=0.01)},
            ]
        )

    def run(model, opt, steps, start):
        x, y = _data()
        for t in range(start, start + steps):
            _loss(model, x, y).backward()
            if t == 1:
                model[2].bias.grad = None  # skipped once: its step count falls behind
            opt.step()
            opt.zero_grad()

    lstm, model = _lstm(**config), _mlp()
    uninterrupted = copy.deepcopy(model)
    opt = build(model)
    run(model, opt, 3, 0)
    opt.param_groups[1]["lr"] = 0.5
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # no pickled objects in the state dict

    resumed = _mlp()
    resumed.load_state_dict(saved["model"])
    resumed_opt = build(resumed)
    resumed_opt.load_state_dict(saved["opt"])
    assert resumed_opt.param_groups[1]["lr"] == 0.5
    assert resumed_opt.param_groups[0]["optimizer"] is lstm
    assert resumed_opt.state[resumed[2].bias]["step"] == 2
    assert resumed_opt.state[resumed[0].bias]["step"] == 3
    run(resumed, resumed_opt, 4, 3)

    opt_u = build(uninterrupted)
    run(uninterrupted, opt_u, 3, 0)
    opt_u.param_groups[1]["lr"] = 0.5
    run(uninterrupted, opt_u, 4, 3)
    _assert_equal(
        [p.detach() for p in resumed.parameters()], [p.detach() for p in uninterrupted.parameters()]
    )


def test_load_state_dict_rejects_another_optimizer_or_layout():
    model = _mlp()
    opt = LearnedOptimizer(model.parameters(), optimizer=_lstm())
    _train(model, opt, 1)
    state = opt.state_dict()
    other = LearnedOptimizer(model.parameters(), optimizer=_lstm(num_layers=1))
    with pytest.raises(ValueError, match=r"group 0 was saved with optimizer .*'num_layers': 2"):
        other.load_state_dict(state)
    split = LearnedOptimizer(
        [{"params": list(model.parameters())[:2]}, {"params": list(model.parameters())[2:]}],
        optimizer=_lstm(),
    )
    with pytest.raises(ValueError, match="has 1 parameter groups, this optimizer has 2"):
        split.load_state_dict(state)


def test_lr_scheduler_scales_the_update():
    lstm = _lstm()
    p = torch.randn(10, requires_grad=True)
    p0 = p.detach().clone()
    opt = LearnedOptimizer([p], optimizer=lstm)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    grad = torch.randn(10)
    state = lstm.init_state([p0])
    expected = p0
    for lr in (1.0, 0.5, 0.25):
        assert opt.param_groups[0]["lr"] == lr
        p.grad = grad.clone()
        opt.step()
        scheduler.step()
        (update,), state = lstm.step([grad], state)
        expected = expected.add(update, alpha=lr)
        assert torch.equal(p.detach(), expected)


def test_none_grad_and_frozen_parameters_are_skipped_and_keep_their_state():
    lstm = _lstm()
    a, b, c = torch.randn(6, requires_grad=True), torch.randn(4), torch.randn(3, requires_grad=True)
    b.grad = torch.ones(4)  # frozen (requires_grad=False): ignored even with a stale gradient
    a0, b0, c0 = a.detach().clone(), b.clone(), c.detach().clone()
    opt = LearnedOptimizer([a, b, c], optimizer=lstm)
    g = torch.Generator().manual_seed(2)
    grads = [(torch.randn(6, generator=g), torch.randn(3, generator=g)) for _ in range(3)]

    # the same by direct calls: a and c together, then a alone, then each with its own state
    state = lstm.init_state([a0, c0])
    (ua1, uc1), state = lstm.step(grads[0], state)
    sa = {"step": 1, "h": [h[:6] for h in state["h"]], "c": [x[:6] for x in state["c"]]}
    sc = {"step": 1, "h": [h[6:] for h in state["h"]], "c": [x[6:] for x in state["c"]]}
    (ua2,), sa = lstm.step([grads[1][0]], sa)
    (ua3,), sa = lstm.step([grads[2][0]], sa)
    (uc3,), sc = lstm.step([grads[2][1]], sc)

    a.grad, c.grad = grads[0]
    opt.step()
    assert torch.equal(a.detach(), a0 + ua1) and torch.equal(c.detach(), c0 + uc1)
    state_c = opt.state[c]
    a.grad, c.grad = grads[1][0], None
    opt.step()
    assert torch.equal(a.detach(), a0 + ua1 + ua2) and torch.equal(c.detach(), c0 + uc1)
    assert opt.state[c]["step"] == 1 and opt.state[a]["step"] == 2
    for x, y in zip(opt.state[c]["h"] + opt.state[c]["c"], state_c["h"] + state_c["c"]):
        assert torch.equal(x, y)
        assert x.untyped_storage().nbytes() == x.numel() * 4  # no longer pins a's storage
    a.grad, c.grad = grads[2]
    opt.step()
    assert torch.equal(a.detach(), a0 + ua1 + ua2 + ua3)
    assert torch.equal(c.detach(), c0 + uc1 + uc3)
    assert opt.state[c]["step"] == 2 and opt.state[a]["step"] == 3
    assert torch.equal(b, b0) and b not in opt.state


def test_skipped_parameters_keep_exact_adam_bias_correction():
    params0, set_grads = _grad_problem(torch.float64)
    ours = [p.clone().requires_grad_() for p in params0]
    theirs = [p.clone().requires_grad_() for p in params0]
    opt = LearnedOptimizer(ours, optimizer=Adam(lr=0.05))
    ref = torch.optim.Adam(theirs, lr=0.05)
    for t in range(30):
        set_grads(ours)
        set_grads(theirs)
        if t % 3 == 1:  # the second tensor misses every third step
            ours[1].grad = theirs[1].grad = None
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-12)
    assert opt.state[ours[1]]["step"] == 20 and opt.state[ours[0]]["step"] == 30


def test_half_precision_parameters_step_with_float32_maths():
    lstm, adam = _lstm(), Adam(lr=0.01)
    w = torch.randn(5, 4).bfloat16().requires_grad_()
    v = torch.randn(3).half().requires_grad_()
    # float32 maths for all three: w (bfloat16) and x (float32) step as one cohort of 26 rows
    x = torch.randn(6, requires_grad=True)
    opt = LearnedOptimizer(
        [{"params": [w, x], "optimizer": lstm}, {"params": [v], "optimizer": adam}]
    )
    g = torch.Generator().manual_seed(5)
    expected_w, expected_v, expected_x = (t.detach().clone() for t in (w, v, x))
    states = {
        "wx": lstm.init_state([w.detach().float(), x.detach()]),
        "v": adam.init_state([v.detach().float()]),
    }
    for _ in range(3):
        w.grad = torch.randn(5, 4, generator=g).bfloat16()
        v.grad = torch.randn(3, generator=g).half()
        x.grad = torch.randn(6, generator=g)
        opt.step()
        with torch.no_grad():
            (uw, ux), states["wx"] = lstm.step([w.grad.float(), x.grad], states["wx"])
            (uv,), states["v"] = adam.step([v.grad.float()], states["v"])
        assert uw.dtype == torch.float32 and uv.dtype == torch.float32
        expected_w = (expected_w.float() + uw).bfloat16()  # one rounding per step
        expected_v = (expected_v.float() + uv).half()
        expected_x = expected_x + ux
        _assert_equal([w.detach(), v.detach(), x.detach()], [expected_w, expected_v, expected_x])
    assert w.dtype == torch.bfloat16 and v.dtype == torch.float16
    assert opt.state[w]["h"][0].dtype == torch.float32
    assert opt.state[v]["exp_avg"].dtype == torch.float32
    assert opt.state[v]["exp_avg_sq"].device == v.device
    # a resume keeps the float32 state (torch.optim would cast it to the parameter's dtype)
    fresh = LearnedOptimizer(
        [{"params": [w, x], "optimizer": lstm}, {"params": [v], "optimizer": adam}]
    )
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state[v]["exp_avg"].dtype == torch.float32
    assert torch.equal(fresh.state[w]["c"][1], opt.state[w]["c"][1])


class _PolyakSGD(StepOptimizer):
    """A toy optimizer that reads the loss: theta <- theta - 0.1 * f(theta) * grad."""

    reads_loss = True

    def init_state(self, params):
        return {"step": 0}

    def step(self, grads, state, loss=None):
        return [-0.1 * loss * g for g in grads], {"step": state["step"] + 1}

    def spec(self):
        return {"kind": "polyak-sgd"}


def test_the_loss_reaches_optimizers_that_read_it():
    p = torch.tensor([2.0, -1.0], requires_grad=True)
    opt = LearnedOptimizer([p], optimizer=_PolyakSGD())

    def closure():
        opt.zero_grad()
        loss = p.pow(2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 5.0
    assert torch.equal(
        p.detach(), torch.tensor([2.0, -1.0]) - 0.1 * 5.0 * torch.tensor([4.0, -2.0])
    )
    loss = p.pow(2).sum()
    loss.backward()
    before = p.detach().clone()
    assert opt.step(loss=loss) is loss
    assert torch.equal(p.detach(), before - 0.1 * loss.detach() * 2 * before)
    with pytest.raises(ValueError, match="a closure or a loss, not both"):
        opt.step(closure, loss=loss)


def test_step_with_closure_returns_its_loss_for_optimizers_that_ignore_it():
    model, lstm = _mlp(), _lstm()
    reference = copy.deepcopy(model)
    opt = LearnedOptimizer(model.parameters(), optimizer=lstm)
    x, y = _data()

    def closure():
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    returned = [opt.step(closure).item() for _ in range(3)]
    ref_opt = LearnedOptimizer(reference.parameters(), optimizer=lstm)
    expected = []
    for _ in range(3):
        loss = _loss(reference, x, y)
        expected.append(loss.item())
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
    assert returned == expected
    _assert_equal(
        [p.detach() for p in model.parameters()], [p.detach() for p in reference.parameters()]
    )


def test_grouped_optimizer_becomes_one_param_group_per_group():
    model = _mlp()
    reference = copy.deepcopy(model)
    grouped = GroupedOptimizer({"w": _lstm(), "b": Adam(lr=0.01)}, ["w", "b", "w", "b"])
    opt = LearnedOptimizer(model.parameters(), optimizer=grouped)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert opt.param_groups[0]["params"] == [model[0].weight, model[2].weight]
    x, y = _data()
    params = [p.detach().clone() for p in reference.parameters()]
    state = grouped.init_state(params)
    names = [n for n, _ in reference.named_parameters()]
    for _ in range(3):
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
        leaves = [p.requires_grad_() for p in params]
        loss = (functional_call(reference, dict(zip(names, leaves)), (x,)) - y).pow(2).mean()
        grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            updates, state = grouped.step(grads, state)
        params = [p.detach() + u for p, u in zip(leaves, updates)]
        _assert_equal([p.detach() for p in model.parameters()], params)
    with pytest.raises(ValueError, match="3 tensors, its assignment has 4"):
        LearnedOptimizer(list(model.parameters())[:3], optimizer=grouped)


def test_optimizer_from_a_checkpoint_path_or_unknown_name(tmp_path):
    lstm = _lstm()
    path = l2o.save_checkpoint(tmp_path / "mine", lstm, {"description": "test"})
    a, b = _mlp(), _mlp()
    _train(a, LearnedOptimizer(a.parameters(), optimizer=str(path)), 3)
    _train(b, LearnedOptimizer(b.parameters(), optimizer=lstm), 3)
    _assert_equal([p.detach() for p in a.parameters()], [p.detach() for p in b.parameters()])
    with pytest.raises(CheckpointError, match="no checkpoint or pretrained optimizer named 'nope'"):
        LearnedOptimizer(a.parameters(), optimizer="nope")


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"optimizer": Adam(), "lr": -0.5}, ValueError, "Invalid learning rate: -0.5"),
        ({}, ValueError, "Invalid optimizer: None"),
        ({"optimizer": 42}, TypeError, "Invalid optimizer: 42"),
        ({"optimizer": Adam(), "weight_decay": -0.1}, ValueError, "Invalid weight_decay: -0.1"),
        ({"optimizer": Adam(), "weight_decay": "0.1"}, ValueError, "Invalid weight_decay: '0.1'"),
    ],
)
def test_invalid_arguments_name_the_value(kwargs, error, message):
    with pytest.raises(error) as e:
        LearnedOptimizer([torch.zeros(2, requires_grad=True)], **kwargs)
    assert message in str(e.value)


def test_invalid_parameters_and_groups_name_the_value():
    with pytest.raises(ValueError, match=r"Invalid parameter dtype: torch\.int64"):
        LearnedOptimizer([torch.zeros(2, dtype=torch.long)], optimizer=Adam())
    opt = LearnedOptimizer([torch.zeros(2, requires_grad=True)], optimizer=Adam())
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "lr": float("nan")})
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": opt.param_groups[0]["params"]})
    with pytest.raises(ValueError, match="Invalid weight_decay: nan"):
        opt.add_param_group(
            {"params": [torch.zeros(3, requires_grad=True)], "weight_decay": float("nan")}
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_state_lives_on_the_parameters_device():
    lstm = _lstm()  # on the CPU; copied to the GPU on first use
    cpu, gpu = _mlp(), _mlp().cuda()
    opt_cpu = LearnedOptimizer(cpu.parameters(), optimizer=lstm)
    opt_gpu = LearnedOptimizer(gpu.parameters(), optimizer=lstm)
    x, y = _data()
    _train(cpu, opt_cpu, 3, (x, y))
    _train(gpu, opt_gpu, 3, (x.cuda(), y.cuda()))
    assert all(t.is_cuda for p in gpu.parameters() for t in opt_gpu.state[p]["h"])
    assert next(lstm.parameters()).device.type == "cpu"
    for a, b in zip(cpu.parameters(), gpu.parameters()):
        torch.testing.assert_close(a.detach(), b.detach().cpu(), rtol=1e-4, atol=1e-5)


# --- decoupled weight decay -----------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_weight_decay_is_adamw_decoupled_decay_with_the_scheduled_lr(dtype, tol):
    # l2o.Adam(lr=1) makes Adam's unscaled step, so the group's lr plays AdamW's lr
    params0, set_grads = _grad_problem(dtype)
    ours = [p.clone().requires_grad_() for p in params0]
    theirs = [p.clone().requires_grad_() for p in params0]
    opt = LearnedOptimizer(
        [
            {"params": [ours[0]]},
            {"params": [ours[1]], "lr": 0.05, "weight_decay": 0.3},
        ],
        optimizer=Adam(lr=1.0, betas=(0.8, 0.99)),
        lr=0.02,
        weight_decay=0.1,
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.3]
    adamw = torch.optim.AdamW(
        [{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 0.05, "weight_decay": 0.3}],
        lr=0.02,
        betas=(0.8, 0.99),
        weight_decay=0.1,
    )
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.7) for o in (opt, adamw)]
    for _ in range(60):
        set_grads(ours)
        set_grads(theirs)
        opt.step()
        adamw.step()
        for s in schedulers:
            s.step()
    for a, b, p0 in zip(ours, theirs, params0):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=tol, atol=tol)
        assert not torch.allclose(a.detach(), p0)
    # the decay mattered: without it the trajectory is another one
    plain = [p.clone().requires_grad_() for p in params0]
    no_decay = LearnedOptimizer(plain, optimizer=Adam(lr=1.0, betas=(0.8, 0.99)), lr=0.02)
    for _ in range(60):
        set_grads(plain)
        no_decay.step()
    assert not torch.allclose(plain[1].detach(), ours[1].detach(), rtol=1e-3, atol=1e-3)


def test_weight_decay_shrinks_theta_before_adding_the_learned_update():
    lstm = _lstm(param_input=True)  # reads theta: it must see theta before the decay
    g = torch.Generator().manual_seed(8)
    p = torch.randn(12, generator=g).requires_grad_()
    w = torch.randn(4, 3, generator=g).bfloat16().requires_grad_()
    opt = LearnedOptimizer(
        [{"params": [p], "lr": 0.5}, {"params": [w], "weight_decay": 0.01}],
        optimizer=lstm,
        weight_decay=0.2,
    )
    expected_p, expected_w = p.detach().clone(), w.detach().clone()
    state_p, state_w = lstm.init_state([expected_p]), lstm.init_state([expected_w.float()])
    for _ in range(4):
        p.grad = torch.randn(12, generator=g)
        w.grad = torch.randn(4, 3, generator=g).bfloat16()
        (up,), state_p = call_step(lstm, [p.grad], state_p, params=[expected_p])
        (uw,), state_w = call_step(lstm, [w.grad.float()], state_w, params=[expected_w.float()])
        opt.step()
        expected_p = expected_p * (1 - 0.5 * 0.2) + 0.5 * up
        # float32 maths for bfloat16, rounded once
        expected_w = (expected_w.float() * (1 - 1.0 * 0.01) + uw).bfloat16()
        _assert_equal([p.detach(), w.detach()], [expected_p, expected_w])


def test_weight_decay_leaves_parameters_that_do_not_step_alone():
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = LearnedOptimizer([a, b], optimizer=SGD(lr=0.1), weight_decay=0.5)
    a.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(a.detach(), torch.full((3,), 0.5)) and torch.equal(b.detach(), torch.ones(2))


def test_state_dict_round_trip_keeps_weight_decay_and_resumes_exactly():
    def build(model, weight_decay):
        return LearnedOptimizer(
            [
                {"params": [model[0].weight, model[2].weight], "weight_decay": weight_decay},
                {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},
            ],
            optimizer=lstm,
            lr=0.5,
        )

    lstm, model = _lstm(), _mlp()
    uninterrupted = copy.deepcopy(model)
    opt = build(model, 0.05)
    _train(model, opt, 3)
    opt.param_groups[1]["weight_decay"] = 0.02
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert [g["weight_decay"] for g in saved["param_groups"]] == [0.05, 0.02]

    resumed = copy.deepcopy(model)
    resumed_opt = build(resumed, 0.0)  # the saved values win, as for lr
    resumed_opt.load_state_dict(saved)
    assert [g["weight_decay"] for g in resumed_opt.param_groups] == [0.05, 0.02]
    _train(resumed, resumed_opt, 3)

    opt_u = build(uninterrupted, 0.05)
    _train(uninterrupted, opt_u, 3)
    opt_u.param_groups[1]["weight_decay"] = 0.02
    _train(uninterrupted, opt_u, 3)
    _assert_equal(
        [p.detach() for p in resumed.parameters()], [p.detach() for p in uninterrupted.parameters()]
    )
    undecayed = copy.deepcopy(model)  # the same resume, without the decay: it mattered
    undecayed_opt = build(undecayed, 0.0)
    undecayed_opt.load_state_dict(saved)
    for group in undecayed_opt.param_groups:
        group["weight_decay"] = 0.0
    _train(undecayed, undecayed_opt, 3)
    for a, b in zip(resumed.parameters(), undecayed.parameters()):
        assert not torch.equal(a.detach(), b.detach())


def test_a_state_dict_saved_before_weight_decay_existed_loads_with_none():
    model = _mlp()
    opt = LearnedOptimizer(model.parameters(), optimizer=_lstm())
    _train(model, opt, 1)
    old = opt.state_dict()
    for group in old["param_groups"]:
        del group["weight_decay"]
    fresh = LearnedOptimizer(model.parameters(), optimizer=opt.param_groups[0]["optimizer"])
    fresh.load_state_dict(old)
    assert fresh.param_groups[0]["weight_decay"] == 0.0
    _train(model, fresh, 1)


# --- parameter group keys -------------------------------------------------------------------


def test_unknown_group_keys_are_an_error_naming_them_and_the_valid_ones():
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError) as e:
        LearnedOptimizer([{"params": [p], "momentum": 0.9}], optimizer=Adam())
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("Invalid parameter group key: 'momentum' (valid: params, ")
    assert "weight_decay" in message and "initial_lr" in message
    opt = LearnedOptimizer([p], optimizer=Adam())
    with pytest.raises(ValueError, match=r"Invalid parameter group keys: 'betas', 'eps' \("):
        opt.add_param_group({"params": [q], "betas": (0.9, 0.99), "eps": 1e-8})
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == [p]


@pytest.mark.parametrize(
    "make",
    [
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (t + 1)),
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=1.0, total_steps=10, cycle_momentum=False
        ),
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3),
        lambda opt: torch.optim.swa_utils.SWALR(opt, swa_lr=0.5, anneal_epochs=2),
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
    ],
)
def test_keys_that_lr_schedulers_add_to_the_groups_keep_working(make):
    def build(model):
        return LearnedOptimizer(
            list(model.named_parameters()), optimizer=Adam(lr=1.0), lr=0.01, weight_decay=0.1
        )

    def run(model, opt, scheduler, steps):
        x, y = _data()
        for _ in range(steps):
            _loss(model, x, y).backward()
            opt.step()
            opt.zero_grad()
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(1.0)
            else:
                scheduler.step()

    model = _mlp()
    uninterrupted = copy.deepcopy(model)
    opt = build(model)
    scheduler = make(opt)
    run(model, opt, scheduler, 2)
    group = opt.param_groups[0]
    assert group["lr"] != 0.01 and group["param_names"][0] == "0.weight"
    assert {"params", "optimizer", "lr", "weight_decay", "param_names"} <= set(group)
    saved = copy.deepcopy((opt.state_dict(), scheduler.state_dict()))

    resumed = copy.deepcopy(model)
    resumed_opt = build(resumed)
    resumed_scheduler = make(resumed_opt)
    resumed_opt.load_state_dict(saved[0])
    resumed_scheduler.load_state_dict(saved[1])
    run(resumed, resumed_opt, resumed_scheduler, 3)

    opt_u = build(uninterrupted)
    scheduler_u = make(opt_u)
    run(uninterrupted, opt_u, scheduler_u, 5)
    _assert_equal(
        [p.detach() for p in resumed.parameters()], [p.detach() for p in uninterrupted.parameters()]
    )
    assert resumed_opt.param_groups[0]["lr"] == opt_u.param_groups[0]["lr"]


def test_a_group_added_after_a_scheduler_may_carry_its_keys():
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = LearnedOptimizer([p], optimizer=SGD(lr=1.0))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1.0, total_steps=10, cycle_momentum=False
    )
    keys = ("lr", "initial_lr", "max_lr", "min_lr")
    assert all(k in opt.param_groups[0] for k in keys)
    # OneCycleLR reads these keys in every group, so a group added later must have them
    opt.add_param_group({"params": [q], **{k: opt.param_groups[0][k] for k in keys}})
    for _ in range(3):
        p.grad, q.grad = torch.ones(2), torch.ones(3)
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == opt.param_groups[1]["lr"]
    assert torch.equal(p.detach()[0], q.detach()[0])


def test_one_cycle_lr_needs_cycle_momentum_off():
    opt = LearnedOptimizer([torch.zeros(2, requires_grad=True)], optimizer=Adam())
    with pytest.raises(ValueError, match="momentum"):
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)


# --- the loss, from a closure ---------------------------------------------------------------


def test_closure_runs_with_grad_enabled_and_its_loss_reaches_the_optimizer():
    p = torch.tensor([2.0, -1.0], requires_grad=True)
    q = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    opt = LearnedOptimizer(
        [{"params": [p], "optimizer": _PolyakSGD()}, {"params": [q], "optimizer": SGD(lr=0.1)}]
    )

    def closure():
        opt.zero_grad()
        loss = p.pow(2).sum() + q.sum()
        loss.backward()
        return loss

    with torch.no_grad():  # as in a framework's step, which may run under no_grad
        returned = opt.step(closure=closure)
    assert returned.item() == 8.0 and returned.requires_grad
    assert torch.equal(
        p.detach(), torch.tensor([2.0, -1.0]) - 0.1 * 8.0 * torch.tensor([4.0, -2.0])
    )
    assert torch.equal(q.detach(), torch.full((3,), 0.9))


def test_a_loss_reading_optimizer_without_a_loss_is_one_clear_error_before_any_step():
    p = torch.tensor([2.0, -1.0], requires_grad=True)
    q = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    opt = LearnedOptimizer(
        [{"params": [q], "optimizer": SGD(lr=0.1)}, {"params": [p], "optimizer": _PolyakSGD()}]
    )
    p.pow(2).sum().add(q.sum()).backward()
    with pytest.raises(ValueError) as e:
        opt.step()
    assert str(e.value) == (
        "step() got no loss, but optimizer 'polyak-sgd' reads the loss: call step(closure) "
        "with a closure that returns the loss, or step(loss=loss)"
    )
    with pytest.raises(ValueError, match=r"^the closure returned None, but optimizer 'polyak-sgd'"):
        opt.step(lambda: None)
    # nothing moved, no state was made
    assert torch.equal(q.detach(), torch.ones(3)) and torch.equal(
        p.detach(), torch.tensor([2.0, -1.0])
    )
    assert not opt.state
    # without gradients for it (e.g. a skipped batch), it needs no loss
    p.grad = None
    opt.step()
    assert torch.equal(q.detach(), torch.full((3,), 0.9))


def test_hidden_dtype_stores_the_lstm_state_in_bfloat16_and_keeps_its_maths_in_float32():
    lstm = _lstm(momentum=[0.9])
    models = {name: _mlp() for name in ("float32", "bfloat16", "none")}
    opts = {
        name: LearnedOptimizer(
            m.parameters(), optimizer=lstm, hidden_dtype=None if name == "none" else name
        )
        for name, m in models.items()
    }
    x, y = _data()
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in models.items()}
    for step in range(3):
        for name, m in models.items():
            _loss(m, x, y).backward()
            opts[name].step()
            opts[name].zero_grad()
        if step == 0:  # the first step reads zeros: no rounded state yet, the same update
            _assert_equal(
                [p.detach() for p in models["bfloat16"].parameters()],
                [p.detach() for p in models["float32"].parameters()],
            )
    # "float32" is the default for float32 parameters, update for update
    _assert_equal(
        [p.detach() for p in models["float32"].parameters()],
        [p.detach() for p in models["none"].parameters()],
    )
    for name in ("float32", "bfloat16"):
        state = opts[name].state[models[name][0].weight]
        assert {t.dtype for t in state["h"] + state["c"]} == {getattr(torch, name)}
        assert state["momentum"][0].dtype == torch.float32  # only the recurrent state
    # later steps read rounded states: updates within bfloat16's rounding of the float32 ones
    for a, b, a0, b0 in zip(
        models["bfloat16"].parameters(),
        models["float32"].parameters(),
        before["bfloat16"],
        before["float32"],
    ):
        torch.testing.assert_close(a.detach() - a0, b.detach() - b0, rtol=0.05, atol=1e-4)
    # saved and loaded as it is
    saved = opts["bfloat16"].state_dict()
    assert saved["param_groups"][0]["hidden_dtype"] == "bfloat16"
    again = LearnedOptimizer(
        models["bfloat16"].parameters(), optimizer=lstm, hidden_dtype="bfloat16"
    )
    again.load_state_dict(saved)
    assert again.state[models["bfloat16"][0].weight]["h"][0].dtype == torch.bfloat16


@pytest.mark.parametrize("bad", ["int8", torch.float16, 16])
def test_hidden_dtype_refuses_other_dtypes_and_optimizers_without_a_recurrent_state(bad):
    with pytest.raises(InvalidInput, match="Invalid hidden_dtype"):
        LearnedOptimizer(_mlp().parameters(), optimizer=_lstm(), hidden_dtype=bad)
    with pytest.raises(InvalidInput, match="Invalid hidden_dtype for Adam"):
        LearnedOptimizer(_mlp().parameters(), optimizer=Adam(lr=1e-3), hidden_dtype="bfloat16")


def test_the_learned_step_flushes_denormals_and_the_closure_does_not():
    """Within step() the optimizer's CPU maths flushes denormals (as meta-training and
    rollouts do); the closure and everything after step() see the setting as it was."""

    def flushing() -> bool:
        return torch.tensor([1e-39]).mul(1.0).item() == 0.0

    seen = {}

    class Probe(l2o.Adam):
        def step(self, grads, state):
            seen["step"] = flushing()
            return super().step(grads, state)

    model = nn.Linear(3, 1)
    opt = LearnedOptimizer(model.parameters(), optimizer=Probe(lr=0.1))

    def closure():
        seen["closure"] = flushing()
        opt.zero_grad()
        loss = model(torch.ones(1, 3)).sum()
        loss.backward()
        return loss

    before = flushing()
    opt.step(closure)
    assert seen == {"step": True, "closure": before} and flushing() == before
