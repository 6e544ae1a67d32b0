"""Optimizers that read whole tensors step a task's batched problems apart
(l2o.optimizers.problems): a batched run is n runs of one problem each, shaped as a user's
model is, and the torch.optim front-end gives the same updates as the unroll."""

import torch

from l2o.evaluate import rollout
from l2o.meta import TruncatedBPTT, init_unroll
from l2o.optim import LearnedOptimizer
from l2o.optimizers import Adam, CoordinatewiseLSTM, MLPOptimizerConfig, PerParameterMLP
from l2o.optimizers.problems import PerProblem, for_task
from l2o.tasks import Task


class MatrixTask(Task):
    """f(W, b) = ||A W + b - B||^2 per problem: W (n, 3, 4) matrices (factored moments)."""

    param_names = ["weight", "bias"]

    def __init__(self, A, B, W0, b0):
        self.A, self.B, self.W0, self.b0 = A, B, W0, b0
        self.num_problems = W0.shape[0]

    def init_params(self):
        return [self.W0.clone(), self.b0.clone()]

    def loss(self, params, batch=None):
        W, b = params
        return (self.A @ W + b.unsqueeze(1) - self.B).pow(2).sum((1, 2))

    def problem(self, k):
        return MatrixTask(*(t[k : k + 1] for t in (self.A, self.B, self.W0, self.b0)))


def _task(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, 5, 3), (n, 5, 4), (n, 3, 4), (n, 4)]
    return MatrixTask(*(torch.randn(s, generator=g) for s in shapes))


def _mlp(scheduler=8):
    torch.manual_seed(1)
    opt = PerParameterMLP(MLPOptimizerConfig(hidden_size=8, num_layers=1, scheduler_size=scheduler))
    with torch.no_grad():  # wake the zero-initialised read-outs, so every part acts
        for p in opt.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    return opt


def test_a_batched_run_is_each_problem_run_alone():
    opt, task = _mlp(), _task()
    together = rollout(opt, task, 12).losses
    for k in range(task.num_problems):
        alone = rollout(opt, task.problem(k), 12).losses
        torch.testing.assert_close(together[:, k : k + 1], alone, rtol=1e-5, atol=1e-6)

    # Stepped as one (n, 3, 4) tensor, the problems' statistics would mix: it differs.
    class Mixed(PerParameterMLP):
        per_tensor_statistics = False

    mixed = Mixed(opt.config)
    mixed.load_state_dict(opt.state_dict())
    assert not torch.allclose(rollout(mixed, task, 12).losses, together)


def test_the_front_end_on_a_model_matches_the_unroll_on_a_one_problem_task():
    opt, task = _mlp(), _task(n=1)
    W, b = (p[0].clone().requires_grad_() for p in task.init_params())
    front = LearnedOptimizer([W, b], optimizer=opt)
    curve = rollout(opt, task, 6).losses[:, 0]
    for t in range(6):
        front.zero_grad()
        loss = task.loss([W.unsqueeze(0), b.unsqueeze(0)])[0]
        torch.testing.assert_close(loss, curve[t], rtol=1e-5, atol=1e-6)
        loss.backward()
        front.step()


def test_meta_gradients_flow_through_the_split_and_only_such_optimizers_are_split():
    opt, task = _mlp(), _task()
    result = TruncatedBPTT().meta_gradient(opt, task, init_unroll(task, opt), [1.0] * 4)
    assert result.finite and all(g.abs().sum() > 0 for g in result.grads)
    assert isinstance(for_task(opt, task), PerProblem)
    state = init_unroll(task, opt).opt_state
    assert state["tensors"]["h"].shape == (2 * 3, 8)  # one row per tensor of each problem
    for other in (CoordinatewiseLSTM(), Adam()):
        assert for_task(other, task) is other
