"""Task families: the maths of each problem, determinism, and option checking."""

import pytest
import torch

from l2o.meta import task_seed
from l2o.tasks import (
    PolynomialFamily,
    QuadraticFamily,
    RosenbrockFamily,
    SimpleFamily,
    make_task_family,
)


def test_quadratic_loss_and_gradient_match_the_formula():
    task = QuadraticFamily(dim=4, num_problems=3).sample(7, dtype=torch.float64)
    theta = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = task.loss([theta])
    for k in range(3):
        r = task.W[k] @ theta[k] - task.y[k]
        torch.testing.assert_close(loss[k], r @ r)
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    want = 2 * torch.einsum(
        "nji,nj->ni", task.W, torch.einsum("nij,nj->ni", task.W, theta) - task.y
    )
    torch.testing.assert_close(grad, want)


def test_families_are_deterministic_per_seed_and_differ_across_seeds():
    for family in [QuadraticFamily(), PolynomialFamily(), RosenbrockFamily()]:
        a, b, c = family.sample(1), family.sample(1), family.sample(2)
        pa, pb, pc = a.init_params(), b.init_params(), c.init_params()
        assert torch.equal(a.loss(pa), b.loss(pb))
        assert not torch.equal(a.loss(pa), c.loss(pc))


def test_tf_variant_uses_uniform_W_y_and_small_theta0():
    task = QuadraticFamily(variant="tf").sample(0)
    assert task.W.min() >= 0 and task.W.max() < 1 and task.y.min() >= 0
    assert task.theta0.abs().max() < 0.1
    paper = QuadraticFamily().sample(0)
    assert paper.W.min() < 0  # N(0, 1)


def test_polynomial_least_squares_solution_reaches_the_noise_level():
    family = PolynomialFamily(num_samples=200, noise_std=0.1, num_problems=4)
    task = family.sample(0, dtype=torch.float64)
    solution = torch.linalg.lstsq(task.powers, task.y.unsqueeze(-1)).solution.squeeze(-1)
    loss = task.loss([solution])
    assert loss.shape == (4,)
    assert (loss > 0.005).all() and (loss < 0.02).all()  # ~ noise_std^2 = 0.01
    assert (task.loss(task.init_params()) > 0.1).all()


def test_rosenbrock_and_simple():
    task = RosenbrockFamily(num_problems=5).sample(0)
    assert torch.equal(task.loss([torch.ones(5, 2)]), torch.zeros(5))
    assert (task.loss(task.init_params()) > 0).all()
    simple = SimpleFamily().sample(0)
    assert (
        simple.init_params()[0].item() == 1.0 and simple.loss([torch.tensor([[3.0]])]).item() == 9.0
    )


def test_make_task_family_errors_name_the_bad_value():
    with pytest.raises(
        ValueError, match=r"unknown task 'quadratics' \(valid: quadratic, polynomial"
    ):
        make_task_family("quadratics")
    with pytest.raises(ValueError, match=r"unknown option\(s\) dims for task 'quadratic'"):
        make_task_family("quadratic", dims=3)
    with pytest.raises(ValueError, match=r"Invalid dim: 0"):
        make_task_family("quadratic", dim=0)
    with pytest.raises(ValueError, match=r"Invalid variant: 'deepmind' \(valid: paper, tf\)"):
        make_task_family("quadratic", variant="deepmind")


def test_seed_streams_do_not_overlap():
    seeds = {s: {task_seed(s, i) for i in range(5000)} for s in ("train", "validation", "test")}
    assert not seeds["train"] & seeds["validation"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["validation"] & seeds["test"]
    assert task_seed("train", 3, base_seed=1) != task_seed("train", 3, base_seed=0)
