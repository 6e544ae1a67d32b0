"""Checks that every learned optimizer kind's tests run the same way (tests/test_rnnprop.py,
test_gac.py, test_ntm_bfgs.py): the torch.optim front-end against direct ``step`` calls,
meta-gradients against central finite differences, and the first-order meta-gradient's two
paths against each other (test_meta.py, test_conv.py)."""

import copy

import pytest
import torch
from torch.func import functional_call

from l2o.meta import TruncatedBPTT, unroll
from l2o.meta.unroll import init_unroll
from l2o.optim import LearnedOptimizer
from l2o.tasks import QuadraticTask


def front_end_matches_direct_steps(opt, model, steps):
    """Train ``model`` ``steps`` steps through ``LearnedOptimizer`` and a copy of it by direct
    ``opt.step`` calls on the same gradients, asserting equal parameters after every step.
    Returns (the front-end, the direct run's parameters by name, the copy)."""
    reference = copy.deepcopy(model)
    front = LearnedOptimizer(model.parameters(), optimizer=opt)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)
    params = {n: p.detach().clone() for n, p in reference.named_parameters()}
    state = opt.init_state(list(params.values()))
    for _ in range(steps):
        (model(x) - y).pow(2).mean().backward()
        front.step()
        front.zero_grad()
        leaves = {n: p.requires_grad_() for n, p in params.items()}
        loss = (functional_call(reference, leaves, (x,)) - y).pow(2).mean()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            updates, state = opt.step(grads, state)
            params = {n: p.detach() + u for (n, p), u in zip(leaves.items(), updates)}
        for a, b in zip(model.parameters(), params.values()):
            assert torch.equal(a.detach(), b)
    return front, params, reference


def tiny_quadratic_task():
    """Two 3-d quadratics in float64, for finite differences."""
    g = torch.Generator().manual_seed(5)
    W = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, generator=g, dtype=torch.float64)
    theta0 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    return QuadraticTask(W, y, theta0)


def finite_difference_meta_gradient(opt, task, weights, eps=1e-6):
    """d L / d phi of the unroll's meta-loss by central differences, one weight at a time."""

    def meta_loss():
        with torch.enable_grad():
            return unroll(task, opt, init_unroll(task, opt), weights).meta_loss.item()

    numeric = []
    with torch.no_grad():
        for p in opt.parameters():
            grad = torch.zeros_like(p)
            for i in range(p.numel()):
                flat, old = p.view(-1), p.view(-1)[i].item()
                flat[i] = old + eps
                up = meta_loss()
                flat[i] = old - eps
                down = meta_loss()
                flat[i] = old
                grad.view(-1)[i] = (up - down) / (2 * eps)
            numeric.append(grad)
    return numeric


def checkpoint_round_trip(opt, spec, cls, path):
    """Saved to ``path`` and loaded back (by ``load_checkpoint`` and ``l2o.load``), ``opt`` is
    a ``cls`` of the same ``spec`` that steps as it does."""
    import l2o
    from l2o.checkpoint import load_checkpoint, save_checkpoint

    saved = save_checkpoint(path, opt, {"note": "test"})
    for loaded in (load_checkpoint(saved)[0], l2o.load(saved)):
        assert isinstance(loaded, cls) and loaded.spec() == spec
        params, grads = [torch.randn(4, 3)], [torch.randn(4, 3)]
        with torch.no_grad():
            expected, _ = opt.step(grads, opt.init_state(params))
            got, _ = loaded.step(grads, loaded.init_state(params))
        torch.testing.assert_close(got[0], expected[0])


def both_paths(opt, task, truncations, meta_loss):
    """Each truncation's MetaGradient by the default first-order path (no graph through the
    task) and through the task's graph (``unroll``), each path carrying its own state."""
    results = []
    for through_task in (False, True):
        estimator = TruncatedBPTT(meta_loss=meta_loss, through_task=through_task)
        state, path = init_unroll(task, opt), []
        for weights in truncations:
            path.append(estimator.meta_gradient(opt, task, state, weights))
            state = path[-1].state
        results.append(path)
    return results


def assert_same_meta_gradients(fast, reference, rtol):
    for a, b in zip(fast, reference):
        assert a.meta_loss == pytest.approx(b.meta_loss, rel=rtol)
        torch.testing.assert_close(a.losses, b.losses, rtol=0, atol=0)  # the same inner loop
        scale = max(float(g.abs().max()) for g in b.grads)
        for got, want in zip(a.grads, b.grads):
            torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale)
        assert a.state.step == b.state.step
        for got, want in zip(a.state.params, b.state.params):
            assert torch.equal(got, want) and not got.requires_grad
