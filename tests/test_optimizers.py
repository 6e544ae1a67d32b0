"""The hand-designed optimizers against torch.optim, and the step interface's contracts."""

import pytest
import torch

from l2o.optimizers import NAG, SGD, Adam, GroupedOptimizer, RMSprop, assign_groups, make_baseline


def _trajectory_l2o(opt, params0, grad_fn, steps):
    params = [p.clone() for p in params0]
    state = opt.init_state(params)
    for _ in range(steps):
        updates, state = opt.step(grad_fn(params), state)
        params = [p + u for p, u in zip(params, updates)]
    return params


def _trajectory_torch(make, params0, grad_fn, steps):
    params = [p.clone().requires_grad_() for p in params0]
    opt = make(params)
    for _ in range(steps):
        grads = grad_fn([p.detach() for p in params])
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


def _problem(dtype):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(7, 7, generator=g, dtype=dtype)
    B = torch.randn(3, 2, generator=g, dtype=dtype)
    params0 = [
        torch.randn(7, generator=g, dtype=dtype),
        torch.randn(3, 2, generator=g, dtype=dtype),
    ]

    def grad_fn(params):  # gradient of a non-trivial smooth function, no autograd needed
        x, w = params
        return [A.T @ torch.tanh(A @ x), torch.sin(w) + B.abs() * torch.tanh(w)]

    return params0, grad_fn


CASES = [
    (lambda: SGD(lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    (lambda: SGD(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (
        lambda: SGD(lr=0.05, momentum=0.8, dampening=0.3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3),
    ),
    (lambda: NAG(lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    (lambda: RMSprop(lr=0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
    (
        lambda: RMSprop(lr=0.01, momentum=0.5, centered=True),
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
    ),
    (lambda: Adam(lr=0.02), lambda p: torch.optim.Adam(p, lr=0.02)),
    (
        lambda: Adam(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    ),
]


@pytest.mark.parametrize("ours,theirs", CASES)
def test_matches_torch_optim_trajectory_float64(ours, theirs):
    params0, grad_fn = _problem(torch.float64)
    a = _trajectory_l2o(ours(), params0, grad_fn, 200)
    b = _trajectory_torch(theirs, params0, grad_fn, 200)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(a[0], params0[0])  # the trajectory went somewhere


@pytest.mark.parametrize("ours,theirs", CASES)
def test_matches_torch_optim_trajectory_float32(ours, theirs):
    params0, grad_fn = _problem(torch.float32)
    a = _trajectory_l2o(ours(), params0, grad_fn, 50)
    b = _trajectory_torch(theirs, params0, grad_fn, 50)
    for x, y in zip(a, b):
        # float32 rounding differs by an ulp where torch fuses a multiply-add (SGD's add_ with
        # alpha); the float64 test above pins the maths down to 1e-12.
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_step_is_pure_and_differentiable():
    opt = Adam(lr=0.1)
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    state = opt.init_state([x])
    g = x * 3
    updates, _ = opt.step([g], state)
    assert state["step"] == 0 and torch.count_nonzero(state["exp_avg"]) == 0  # input untouched
    (updates[0].sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "bad,message",
    [
        (lambda: SGD(lr=-1.0), "Invalid learning rate: -1.0"),
        (lambda: Adam(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
        (lambda: RMSprop(alpha=2.0), "Invalid alpha: 2.0"),
        (lambda: SGD(lr=0.1, nesterov=True), "Nesterov momentum needs momentum > 0"),
        (
            lambda: make_baseline("adamw", 0.1),
            "unknown optimizer 'adamw' (valid: sgd, nag, rmsprop, adam, lbfgs)",
        ),
    ],
)
def test_invalid_hyperparameters_name_the_value(bad, message):
    with pytest.raises(ValueError) as e:
        bad()
    assert message in str(e.value)


def test_grouped_optimizer_routes_each_parameter_to_its_group():
    names = ["layer.weight", "layer.bias", "out.weight", "out.bias"]
    assignment = assign_groups(names, {"weights": "*.weight", "biases": "*.bias"})
    assert assignment == ["weights", "biases", "weights", "biases"]
    params = [torch.randn(3, 2), torch.randn(3), torch.randn(1, 3), torch.randn(1)]
    grads = [torch.randn_like(p) for p in params]
    mixed = GroupedOptimizer({"weights": SGD(lr=0.1), "biases": Adam(lr=0.01)}, assignment)
    updates, _ = mixed.step(grads, mixed.init_state(params))
    sgd_updates, _ = SGD(lr=0.1).step([grads[0], grads[2]], {"step": 0, "momentum_buffer": None})
    adam = Adam(lr=0.01)
    adam_updates, _ = adam.step([grads[1], grads[3]], adam.init_state([params[1], params[3]]))
    for got, want in zip(
        updates, [sgd_updates[0], adam_updates[0], sgd_updates[1], adam_updates[1]]
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_assign_groups_rejects_overlap_unmatched_and_empty():
    with pytest.raises(ValueError, match="matches several groups"):
        assign_groups(["a.weight"], {"x": "*.weight", "y": "a.*"})
    with pytest.raises(ValueError, match="matches no group pattern"):
        assign_groups(["a.weight", "a.bias"], {"x": "*.weight"})
    with pytest.raises(ValueError, match="match no parameter"):
        assign_groups(["a.weight"], {"x": "*.weight", "y": "*.bias"})


class _LossScaledSGD(SGD):
    """A toy optimizer that reads the loss: the step is lr * loss * grad."""

    reads_loss = True

    def step(self, grads, state, loss=None):
        updates, state = super().step(grads, state)
        return [u * loss.sum() for u in updates], state


def test_the_loss_reaches_optimizers_that_read_it_in_unroll_rollout_and_groups():
    from l2o.evaluate import rollout
    from l2o.meta import init_unroll, unroll
    from l2o.tasks import QuadraticFamily

    task = QuadraticFamily(num_problems=1).sample(0, dtype=torch.float64)
    theta = task.init_params()[0].requires_grad_()
    opt = _LossScaledSGD(lr=1e-3)
    loss0 = task.loss([theta])
    (grad,) = torch.autograd.grad(loss0.sum(), [theta])
    expected = task.loss([theta.detach() - 1e-3 * loss0.detach().sum() * grad])
    torch.testing.assert_close(rollout(opt, task, 1).losses[1], expected.float())
    first = unroll(task, opt, init_unroll(task, opt), [1.0])
    torch.testing.assert_close(first.losses[0], expected.detach())
    grouped = GroupedOptimizer({"all": opt}, ["all"])
    assert grouped.reads_loss
    torch.testing.assert_close(rollout(grouped, task, 1).losses[1], expected.float())


class _DecayedSGD(SGD):
    """A toy optimizer that reads theta: the step is SGD's minus 0.1 theta (weight decay)."""

    reads_params = True

    def step(self, grads, state, params=None):
        updates, state = super().step(grads, state)
        return [u - 0.1 * p for u, p in zip(updates, params)], state


def test_theta_reaches_optimizers_that_read_it_in_unroll_rollout_and_groups():
    from l2o.evaluate import rollout
    from l2o.meta import init_unroll, unroll
    from l2o.tasks import QuadraticFamily

    task = QuadraticFamily(num_problems=1).sample(0, dtype=torch.float64)
    theta = task.init_params()[0].requires_grad_()
    opt = _DecayedSGD(lr=1e-3)
    (grad,) = torch.autograd.grad(task.loss([theta]).sum(), [theta])
    expected = task.loss([theta.detach() - 1e-3 * grad - 0.1 * theta.detach()])
    torch.testing.assert_close(rollout(opt, task, 1).losses[1], expected.float())
    first = unroll(task, opt, init_unroll(task, opt), [1.0])
    torch.testing.assert_close(first.losses[0], expected.detach())
    grouped = GroupedOptimizer({"all": opt}, ["all"])
    assert grouped.reads_params and not grouped.reads_loss
    torch.testing.assert_close(rollout(grouped, task, 1).losses[1], expected.float())


def test_grouped_optimizer_hands_each_group_its_own_parameters():
    grouped = GroupedOptimizer({"a": _DecayedSGD(lr=1.0), "b": SGD(lr=1.0)}, ["a", "b", "a"])
    assert grouped.reads_params and not SGD(lr=1.0).reads_params
    params = [torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([3.0])]
    grads = [torch.tensor([10.0]), torch.tensor([20.0]), torch.tensor([30.0])]
    updates, _ = grouped.step(grads, grouped.init_state(params), params=params)
    assert [u.item() for u in updates] == pytest.approx([-10.1, -20.0, -30.3])
