"""The hand-designed coupled baselines: L-BFGS with a fixed step in the step interface
(l2o.optimizers.lbfgs) against torch.optim.LBFGS step for step, batched problems kept apart, as
a tuned baseline; L-BFGS with the strong-Wolfe line search and conjugate gradient run with every
evaluation counted (l2o.evaluate.classical)."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from coupled_tasks import TwoTensorTask, run_per_problem
from l2o.config import config_from_dict
from l2o.errors import InvalidInput
from l2o.evaluate import rollout
from l2o.evaluate.classical import (
    conjugate_gradient,
    lbfgs_wolfe,
    run_classical_on_tasks,
)
from l2o.evaluate.compare import tune_learning_rate
from l2o.optim import LearnedOptimizer
from l2o.optimizers import LBFGS, from_spec, make_baseline
from l2o.tasks import QuadraticFamily, QuadraticTask


def _model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()


def test_fixed_step_lbfgs_is_torch_optim_lbfgs_with_one_iteration_per_step():
    """Through the front-end and by direct step calls, with a history that wraps (4 pairs)."""
    model, ours, direct = _model(), _model(), _model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g, dtype=torch.float64)
    y = torch.randn(32, 2, generator=g, dtype=torch.float64)
    reference = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=1, history_size=4)
    front = LearnedOptimizer(ours.parameters(), optimizer=LBFGS(lr=0.5, history_size=4))
    opt = LBFGS(lr=0.5, history_size=4)
    params = {n: p.detach().clone() for n, p in direct.named_parameters()}
    state = opt.init_state(list(params.values()))

    def closure():
        reference.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(25):
        reference.step(closure)
        (ours(x) - y).pow(2).mean().backward()
        front.step()
        front.zero_grad()
        leaves = {n: p.requires_grad_() for n, p in params.items()}
        loss = (functional_call(direct, leaves, (x,)) - y).pow(2).mean()
        updates, state = opt.step(torch.autograd.grad(loss, list(leaves.values())), state)
        params = {n: p.detach() + u for (n, p), u in zip(leaves.items(), updates)}
        for a, b, c in zip(model.parameters(), ours.parameters(), params.values()):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(c, a, rtol=1e-10, atol=1e-12)
    assert state["step"] == 25 and state["s"].shape == (44, 4) and state["s"].abs().min() > 0
    assert (model(x) - y).pow(2).mean() < 0.5 * (_model()(x) - y).pow(2).mean()


def test_batched_problems_each_follow_their_own_torch_lbfgs():
    task = QuadraticFamily(dim=6, num_problems=3).sample(2, dtype=torch.float64)
    run = rollout(LBFGS(lr=0.3, history_size=3), task, steps=12)
    for p in range(3):
        theta = task.init_params()[0][p].clone().requires_grad_()
        reference = torch.optim.LBFGS([theta], lr=0.3, max_iter=1, history_size=3)

        def closure(theta=theta, reference=reference, p=p):
            reference.zero_grad()
            loss = (task.W[p] @ theta - task.y[p]).pow(2).sum()
            loss.backward()
            return loss

        for _ in range(12):
            reference.step(closure)
        torch.testing.assert_close(run.params[0][p], theta.detach(), rtol=1e-9, atol=1e-11)


def test_problems_of_several_tensors_are_stepped_apart_as_if_alone():
    task = TwoTensorTask(dtype=torch.float64)
    opt = LBFGS(lr=0.2, history_size=3)
    for ours, alone in zip(rollout(opt, task, 10).params, run_per_problem(opt, task, 10)):
        torch.testing.assert_close(ours, alone, rtol=1e-9, atol=1e-11)


def test_a_converged_problem_is_neither_stepped_nor_changed():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randn(2, 4, generator=g, dtype=torch.float64)
    theta0 = torch.stack([torch.linalg.solve(W[0], y[0]), torch.zeros(4, dtype=torch.float64)])
    task = QuadraticTask(W, y, theta0)  # problem 0 starts at its minimum
    run = rollout(LBFGS(lr=0.1), task, steps=5)
    assert torch.equal(run.params[0][0], theta0[0])
    assert not torch.equal(run.params[0][1], theta0[1])
    assert run.losses[-1, 1] < run.losses[0, 1]


def test_lbfgs_is_a_baseline_whose_step_evaluation_tunes():
    opt = make_baseline("lbfgs", 0.5)
    assert isinstance(opt, LBFGS) and not opt.is_learned and opt.lr == 0.5
    assert from_spec(opt.spec()).spec() == opt.spec() == {
        "kind": "lbfgs", "lr": 0.5, "history_size": 100, "tolerance_grad": 1e-7,
        "tolerance_change": 1e-9,
    }  # fmt: skip
    family = QuadraticFamily(dim=10, num_problems=16)
    best, scores = tune_learning_rate("lbfgs", family, steps=40, num_tasks=1, grid=[0.1, 1.0, 3.0])
    assert best == 1.0 and scores[1.0] < 1e-4 * scores[0.1]


def test_lbfgs_is_refused_in_a_parameter_group():
    groups = {"w": {"params": ["*.weight"]}, "b": {"params": ["*.bias"], "kind": "lbfgs"}}
    with pytest.raises(InvalidInput, match=r"^Invalid optimizer.groups.b.kind: 'lbfgs' \(valid: "):
        config_from_dict({"optimizer": {"groups": groups}})


@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"history_size": 0}, {"tolerance_grad": -1}])
def test_bad_values_are_one_line_errors(bad):
    with pytest.raises(InvalidInput, match=r"^Invalid ") as error:
        LBFGS(**bad)
    assert "\n" not in str(error.value)


def test_conjugate_gradient_solves_a_10_dim_quadratic_in_10_iterations():
    task = QuadraticFamily(dim=10, num_problems=4).sample(0, dtype=torch.float64)
    run = conjugate_gradient(task, budget=24)
    assert run.losses.shape == (25, 4)
    assert run.iterations.tolist() == [12] * 4 and run.evaluations.tolist() == [24] * 4
    start = run.losses[0]
    # 2 evaluations per iteration: after 10 iterations (20 evaluations) the minimum, 0 (W is
    # square and invertible), up to rounding; after 9 not yet
    assert (run.losses[20] < 1e-12 * start).all()
    assert (run.losses[18] > 1e-8 * start).all()
    assert torch.equal(run.losses[19], run.losses[18]) and (run.losses[1] == start).all()


def test_lbfgs_with_line_search_counts_every_evaluation_and_is_torchs():
    task = QuadraticFamily(dim=10, num_problems=2).sample(3, dtype=torch.float64)
    calls = []
    counted = copy.copy(task)
    counted.loss = lambda params, batch=None: calls.append(1) or task.loss(params, batch)
    run = lbfgs_wolfe(counted, budget=15)
    assert run.losses.shape == (16, 2)
    assert sum(calls) == run.evaluations.sum() == 30  # each closure evaluation, nothing else
    for p in range(2):
        theta = task.init_params()[0][p].clone().requires_grad_()
        reference = torch.optim.LBFGS(
            [theta], max_iter=1000, max_eval=15, line_search_fn="strong_wolfe"
        )

        def closure(theta=theta, reference=reference, p=p):
            reference.zero_grad()
            loss = (task.W[p] @ theta - task.y[p]).pow(2).sum()
            loss.backward()
            return loss

        reference.step(closure)
        assert run.iterations[p] == reference.state[theta]["n_iter"]
        final = (task.W[p] @ theta - task.y[p]).pow(2).sum().detach()
        torch.testing.assert_close(run.losses[-1, p], final, rtol=1e-9, atol=1e-12)
    assert (run.losses[1:] <= run.losses[:-1]).all()


def test_classical_runs_on_held_out_tasks_give_a_comparison_result():
    family = QuadraticFamily(dim=5, num_problems=3)
    result, iterations = run_classical_on_tasks("cg", family, budget=12, stream="test", num_tasks=2)
    assert result.name == "cg" and result.losses.shape == (13, 6) and iterations.tolist() == [6] * 6
    assert result.summary()["final_loss_mean"] < 1e-3 * result.summary()["curve_mean"][0]
    with pytest.raises(InvalidInput, match=r"unknown optimizer 'bfgs' \(valid: lbfgs-wolfe, cg\)"):
        run_classical_on_tasks("bfgs", family, 12, "test", 1)


class _LayerTask(TwoTensorTask):
    """``a`` used as a layer's weight (out 4, in 2) as the MLP tasks use theirs,
    h @ a^T: its gradient comes back transposed, not contiguous."""

    def loss(self, params, batch=None):
        a, b = params
        h = torch.ones(self.num_problems, 5, 2, dtype=a.dtype)
        out = torch.matmul(h, a.transpose(1, 2))
        return (out - 1).pow(2).flatten(1).sum(1) + (b - 1).pow(2).sum(1)


def test_strong_wolfe_lbfgs_takes_a_layer_weights_non_contiguous_gradient():
    """torch.optim.LBFGS views each .grad flat: a gradient handed over with its transposed
    strides (the MLP tasks' weights) used to stop it with a RuntimeError."""
    task = _LayerTask(dtype=torch.float64)
    run = lbfgs_wolfe(task, 20)
    assert torch.isfinite(run.losses).all() and (run.losses[-1] < 1e-6).all()
