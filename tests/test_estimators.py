"""ES and PES meta-gradients (l2o.meta.es) against the gradient of the Gaussian-smoothed
meta-loss computed another way: autograd through the whole horizon (second order, so exact),
averaged over draws of the perturbation (the reparameterised gradient E_eps[grad L(phi + eps)]).

The statistical tests run on a problem small enough to average thousands of perturbations in a
few seconds: heavy-ball momentum with phi = (log lr, logit beta) on f = x^2 + 3 y^2 from (1, 1),
a horizon of T = 6 steps cut into truncations of K = 2, sigma = 0.3 (the smoothed gradient is
then some 20% away from the plain one, so each estimator is held to its own target: ES to
E_eps[grad L(phi + eps)], PES to the same with an independent eps for each truncation, truncated
ES to the sum of the truncations' smoothed gradients from phi's own states). Estimates are
sums over 1000-1500 antithetic pairs. One passes if every coordinate of its mean is within 4
standard errors (the estimate's and the Monte Carlo reference's combined) of its target, and
the relative error of the mean is below 25% (measured: 8-11%; a single coordinate's largest
deviation: 1.9 standard errors). Truncated ES is more than 6 standard errors and 50% away from
the horizon's gradient (measured: 11.8 and 67%).
"""

import copy
import math

import pytest
import torch
from benchmarks.estimators.run import Momentum  # the benchmark's 2-parameter optimizer
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from l2o.errors import InvalidInput
from l2o.meta import TruncatedBPTT, init_unroll, unroll
from l2o.meta.es import ES, PES
from l2o.meta.unroll import META_LOSSES
from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
from l2o.optimizers.base import StepOptimizer, flatten
from l2o.tasks import QuadraticTask

T, K, SIGMA = 6, 2, 0.3
TRUNCATIONS = [[1.0] * K for _ in range(T // K)]
HORIZON = [w for weights in TRUNCATIONS for w in weights]


def quadratic() -> QuadraticTask:
    """f(x, y) = x^2 + 3 y^2 from (1, 1)."""
    W = torch.tensor([[[1.0, 0.0], [0.0, math.sqrt(3.0)]]], dtype=torch.float64)
    return QuadraticTask(W, torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2).double())


def at(optimizer: StepOptimizer, phi: Tensor) -> StepOptimizer:
    """A copy of ``optimizer`` with its parameters set to ``phi`` (leaves that require grad)."""
    moved = copy.deepcopy(optimizer)
    vector_to_parameters(phi, moved.parameters())
    return moved


def chained_gradient(optimizer, task, phis: list[Tensor]) -> Tensor:
    """d/dphi of L(phi_1, ..., phi_J), truncation j run with phi_j = phi + eps^j, by autograd
    through the whole horizon (no detaching between truncations, second order): the sum over
    j of the gradients with respect to each phi_j."""
    copies = [at(optimizer, phi) for phi in phis]
    state, total = init_unroll(task, optimizer), 0.0
    for moved, weights in zip(copies, TRUNCATIONS):
        result = unroll(task, moved, state, weights, second_order=True)
        state, total = result.state, total + result.meta_loss
    params = [list(moved.parameters()) for moved in copies]
    grads = torch.autograd.grad(total, [p for ps in params for p in ps])
    return sum(flatten(grads[j * len(ps) : (j + 1) * len(ps)]) for j, ps in enumerate(params))


def mean_and_se(samples: Tensor) -> tuple[Tensor, Tensor]:
    return samples.mean(0), samples.std(0) / math.sqrt(len(samples))


def smoothed_gradient(optimizer, task, draws: int, per_truncation: bool) -> tuple[Tensor, Tensor]:
    """E_eps[grad L(phi + eps)] by Monte Carlo: one eps for the whole horizon, or (PES's
    objective) an independent eps^j for each truncation. Returns the mean and its standard
    error, per coordinate."""
    g = torch.Generator().manual_seed(1000 + per_truncation)
    phi = parameters_to_vector(optimizer.parameters()).detach()
    samples = []
    for _ in range(draws):
        eps = SIGMA * torch.randn(len(TRUNCATIONS), len(phi), generator=g, dtype=phi.dtype)
        if not per_truncation:
            eps = eps[:1].expand_as(eps)
        samples.append(chained_gradient(optimizer, task, list(phi + eps)))
    return mean_and_se(torch.stack(samples))


def truncated_smoothed_gradient(optimizer, task, draws: int) -> tuple[Tensor, Tensor]:
    """What truncated ES estimates: sum_j E_eps[grad L_j(phi + eps; s_j)], each truncation's
    meta-loss from the state s_j that phi itself reached, held fixed."""
    starts, state = [], init_unroll(task, optimizer)
    for weights in TRUNCATIONS:
        starts.append(state)
        state = unroll(task, optimizer, state, weights).state.detached()
    g = torch.Generator().manual_seed(2000)
    phi = parameters_to_vector(optimizer.parameters()).detach()
    estimator = TruncatedBPTT(second_order=True)
    samples = []
    for _ in range(draws):
        total = torch.zeros_like(phi)
        for start, weights in zip(starts, TRUNCATIONS):
            eps = SIGMA * torch.randn(len(phi), generator=g, dtype=phi.dtype)
            moved = at(optimizer, phi + eps)
            total += flatten(estimator.meta_gradient(moved, task, start, weights).grads)
        samples.append(total)
    return mean_and_se(torch.stack(samples))


def es_over_horizon(optimizer, task, calls: int, pairs: int) -> Tensor:
    """``calls`` independent ES estimates over the whole horizon, shape (calls, P)."""
    g, es = torch.Generator().manual_seed(1), ES(sigma=SIGMA, pairs=pairs)
    return torch.stack(
        [
            flatten(
                es.meta_gradient(optimizer, task, init_unroll(task, optimizer), HORIZON, g).grads
            )
            for _ in range(calls)
        ]
    )


def over_truncations(estimator, optimizer, task, calls: int) -> Tensor:
    """``calls`` independent estimates of the horizon's gradient, each the sum of the
    estimator's meta-gradients over the truncations of one unroll, shape (calls, P)."""
    g, samples = torch.Generator().manual_seed(2), []
    for _ in range(calls):
        total = 0.0
        if isinstance(estimator, PES):
            state = estimator.init(optimizer, task)
            for weights in TRUNCATIONS:
                result, state = estimator.meta_gradient(optimizer, task, state, weights, g)
                total = total + flatten(result.grads)
        else:
            state = init_unroll(task, optimizer)
            for weights in TRUNCATIONS:
                result = estimator.meta_gradient(optimizer, task, state, weights, g)
                state, total = result.state, total + flatten(result.grads)
        samples.append(total)
    return torch.stack(samples)


def z_scores(samples: Tensor, reference: tuple[Tensor, Tensor]) -> Tensor:
    """|mean - reference| in standard errors (the estimate's and the reference's combined)."""
    mean, se = mean_and_se(samples)
    ref_mean, ref_se = reference
    return (mean - ref_mean).abs() / (se**2 + ref_se**2).sqrt()


def assert_unbiased(samples: Tensor, reference: tuple[Tensor, Tensor]) -> None:
    mean, ref = samples.mean(0), reference[0]
    assert z_scores(samples, reference).max() < 4, (mean, reference)
    assert (mean - ref).norm() / ref.norm() < 0.25, (mean, ref)


@pytest.fixture(scope="module")
def references():
    optimizer, task = Momentum(), quadratic()
    return {
        "smoothed": smoothed_gradient(optimizer, task, 300, per_truncation=False),
        "smoothed_per_truncation": smoothed_gradient(optimizer, task, 300, per_truncation=True),
        "truncated": truncated_smoothed_gradient(optimizer, task, 200),
    }


def test_chained_gradient_is_the_full_horizon_bptt_gradient():
    optimizer, task = Momentum(), quadratic()
    phi = parameters_to_vector(optimizer.parameters()).detach()
    full = TruncatedBPTT(second_order=True).meta_gradient(
        optimizer, task, init_unroll(task, optimizer), HORIZON
    )
    torch.testing.assert_close(chained_gradient(optimizer, task, [phi] * 3), flatten(full.grads))


def test_es_over_the_horizon_is_unbiased(references):
    samples = es_over_horizon(Momentum(), quadratic(), calls=100, pairs=10)
    assert_unbiased(samples, references["smoothed"])


def test_pes_is_unbiased_over_truncations(references):
    samples = over_truncations(PES(sigma=SIGMA, pairs=10), Momentum(), quadratic(), calls=150)
    assert_unbiased(samples, references["smoothed_per_truncation"])


def test_truncated_es_is_biased_for_the_horizon(references):
    samples = over_truncations(ES(sigma=SIGMA, pairs=10), Momentum(), quadratic(), calls=100)
    # It estimates the truncated objective without bias ...
    assert_unbiased(samples, references["truncated"])
    # ... which is far from the horizon's gradient: the truncation bias.
    assert z_scores(samples, references["smoothed"]).max() > 6
    mean, ref = samples.mean(0), references["smoothed"][0]
    assert (mean - ref).norm() / ref.norm() > 0.5


def tiny_lstm() -> CoordinatewiseLSTM:
    torch.manual_seed(2)
    config = LSTMConfig(num_layers=1, hidden_size=2, preprocess="none", output_scale=0.1)
    return CoordinatewiseLSTM(config).double()


def tiny_quadratics() -> QuadraticTask:
    g = torch.Generator().manual_seed(5)
    W, y, theta0 = (torch.randn(2, *shape, generator=g).double() for shape in ((3, 3), (3,), (3,)))
    return QuadraticTask(W, y, theta0)


def test_es_is_the_central_difference_along_each_eps():
    lstm, task, weights, sigma = tiny_lstm(), tiny_quadratics(), [1.0, 0.5, 2.0], 1e-4
    start = init_unroll(task, lstm)
    result = ES(sigma=sigma, pairs=2).meta_gradient(
        lstm, task, start, weights, torch.Generator().manual_seed(7)
    )
    assert [g.shape for g in result.grads] == [p.shape for p in lstm.parameters()]
    phi = parameters_to_vector(lstm.parameters()).detach()
    g = torch.Generator().manual_seed(7)
    eps = sigma * torch.randn(2, len(phi), generator=g, dtype=phi.dtype)

    def meta_loss(perturbed_phi):  # the library's unroll, with autograd, on a moved copy
        return float(unroll(task, at(lstm, perturbed_phi), start, weights).meta_loss.detach())

    deltas = [meta_loss(phi + e) - meta_loss(phi - e) for e in eps]
    expected = sum(e * d for e, d in zip(eps, deltas)) / (2 * 2 * sigma**2)
    torch.testing.assert_close(flatten(result.grads), expected, rtol=1e-6, atol=0)
    # Each difference is the directional derivative of the exact meta-gradient along eps_i.
    exact = flatten(
        TruncatedBPTT(second_order=True).meta_gradient(lstm, task, start, weights).grads
    )
    for e, d in zip(eps, deltas):
        assert d / 2 == pytest.approx(float(e @ exact), rel=1e-5)


@pytest.mark.parametrize("meta_loss", META_LOSSES)
def test_estimators_report_phi_as_truncated_bptt_does_and_leave_it_untouched(meta_loss):
    lstm, task, weights = tiny_lstm(), tiny_quadratics(), [1.0, 0.0, 2.0]
    before = [p.detach().clone() for p in lstm.parameters()]
    bptt = TruncatedBPTT(meta_loss=meta_loss).meta_gradient(
        lstm, task, init_unroll(task, lstm), weights
    )
    es = ES(pairs=2, meta_loss=meta_loss).meta_gradient(
        lstm, task, init_unroll(task, lstm), weights
    )
    pes = PES(pairs=2, meta_loss=meta_loss)
    pes_result, pes_state = pes.meta_gradient(lstm, task, pes.init(lstm, task), weights)
    for result in (es, pes_result):
        assert result.finite
        assert result.meta_loss == pytest.approx(bptt.meta_loss, rel=1e-12)
        torch.testing.assert_close(result.losses, bptt.losses, rtol=1e-12, atol=0)
        assert result.state.step == 3
        for mine, theirs in zip(result.state.params, bptt.state.params):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0)
        assert not any(g.requires_grad for g in result.grads)
    states = [pes_state.center, *pes_state.positive, *pes_state.negative]
    for state in [es.state, *states]:
        tensors = [*state.params, *state.opt_state["h"], *state.opt_state["c"]]
        assert not any(t.requires_grad for t in tensors)
    for p, old in zip(lstm.parameters(), before):
        assert p.grad is None and torch.equal(p, old)


def test_pes_persists_its_particles_and_accumulates_xi():
    lstm, task, weights = tiny_lstm(), tiny_quadratics(), [1.0, 1.0]
    pes, es = PES(sigma=0.01, pairs=3), ES(sigma=0.01, pairs=3)
    size = sum(p.numel() for p in lstm.parameters())
    state = pes.init(lstm, task)
    assert torch.equal(state.xi, torch.zeros(3, size, dtype=torch.float64))
    theta0 = task.init_params()[0]
    for s in [state.center, *state.positive, *state.negative]:
        assert s.step == 0 and torch.equal(s.params[0], theta0)
    # The first truncation, from theta_0 with xi = eps, is ES over it (same draws).
    g = torch.Generator().manual_seed(3)
    first, state = pes.meta_gradient(lstm, task, state, weights, g)
    start = init_unroll(task, lstm)
    reference = es.meta_gradient(lstm, task, start, weights, torch.Generator().manual_seed(3))
    torch.testing.assert_close(flatten(first.grads), flatten(reference.grads), rtol=0, atol=0)
    second, state = pes.meta_gradient(lstm, task, state, weights, g)
    # xi is the sum of the two truncations' draws; every particle went on from where it was.
    replay = torch.Generator().manual_seed(3)
    eps = [0.01 * torch.randn(3, size, generator=replay, dtype=torch.float64) for _ in range(2)]
    torch.testing.assert_close(state.xi, eps[0] + eps[1])
    assert all(s.step == 4 for s in [state.center, *state.positive, *state.negative])
    bptt = TruncatedBPTT()
    center = bptt.meta_gradient(
        lstm, task, bptt.meta_gradient(lstm, task, start, weights).state, weights
    )
    torch.testing.assert_close(state.center.params[0], center.state.params[0])
    assert second.meta_loss == pytest.approx(center.meta_loss)
    for plus, minus in zip(state.positive, state.negative):
        assert not torch.allclose(plus.params[0], minus.params[0])
        assert not torch.allclose(plus.params[0], state.center.params[0])
    # The next unroll starts afresh.
    assert torch.equal(pes.init(lstm, task).xi, torch.zeros(3, size, dtype=torch.float64))


def test_bad_options_are_one_line_errors():
    for make, message in [
        (lambda: ES(sigma=0), "Invalid sigma: 0"),
        (lambda: PES(sigma=float("nan")), "Invalid sigma: nan"),
        (lambda: ES(pairs=0), "Invalid pairs: 0"),
        (lambda: PES(pairs=2.5), "Invalid pairs: 2.5"),
        (lambda: ES(meta_loss="squared"), "Invalid meta_loss: 'squared'"),
    ]:
        with pytest.raises(InvalidInput, match=message) as error:
            make()
        assert "\n" not in str(error.value)
    lstm, task = tiny_lstm(), tiny_quadratics()
    state = PES(pairs=2).init(lstm, task)
    with pytest.raises(InvalidInput, match=r"PESState for 2 pairs .* call PES.init"):
        PES(pairs=3).meta_gradient(lstm, task, state, [1.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_seed_gives_the_same_estimates_on_a_gpu():
    weights, estimates = [1.0, 1.0], []
    for device in ("cpu", "cuda"):
        lstm, cpu_task = tiny_lstm().to(device), tiny_quadratics()
        task = QuadraticTask(
            cpu_task.W.to(device), cpu_task.y.to(device), cpu_task.theta0.to(device)
        )
        es = ES(sigma=0.01, pairs=2).meta_gradient(
            lstm, task, init_unroll(task, lstm), weights, torch.Generator().manual_seed(4)
        )
        pes, g = PES(sigma=0.01, pairs=2), torch.Generator().manual_seed(4)
        _, state = pes.meta_gradient(lstm, task, pes.init(lstm, task), weights, g)
        result, _ = pes.meta_gradient(lstm, task, state, weights, g)
        estimates.append([flatten(es.grads).cpu(), flatten(result.grads).cpu()])
    for on_cpu, on_gpu in zip(*estimates):
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-6, atol=1e-9)
