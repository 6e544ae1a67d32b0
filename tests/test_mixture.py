"""The task mixture (issue #26): members drawn by weight with their chosen options, horizons
drawn log-uniformly, scale augmentation that changes the scales of parameters and gradients
and nothing else, resized images, one-line errors, and a meta-training run that unrolls each
task's own horizon and validates relatively."""

import json
import math

import numpy as np
import pytest
import torch

from l2o.config import config_from_dict
from l2o.data import write_idx
from l2o.data.images import load_images
from l2o.errors import InvalidInput
from l2o.meta import MetaTrainer, validate
from l2o.meta.config import MetaTrainConfig
from l2o.meta.train import RATIO_FLOOR
from l2o.optimizers import Adam, CoordinatewiseLSTM, LSTMConfig
from l2o.tasks import MixtureFamily, MixtureTask, make_task_family

QUADRATICS = {"name": "quadratic", "num_problems": 2, "choose": {"dim": [3, 5, 8]}}


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """A tiny MNIST-format dataset of 28 x 28 images, in the real file format."""
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, np.uint8))
    return str(root)


def test_members_choices_and_horizons_are_drawn_as_configured():
    family = MixtureFamily(
        members=(QUADRATICS, {"name": "simple", "weight": 3.0}), horizons=(10, 1000)
    )
    first, again = family.sample(5), family.sample(5)
    assert first.describe() == again.describe()  # a seed is one task
    assert torch.equal(first.init_params()[0], again.init_params()[0])
    draws = [family.sample(seed).describe() for seed in range(1200)]
    members = [d["member"]["name"] for d in draws]
    assert abs(members.count("simple") / len(draws) - 0.75) < 0.04  # weight 3 : 1
    dims = [d["member"]["dim"] for d in draws if d["member"]["name"] == "quadratic"]
    assert set(dims) == {3, 5, 8} and all(
        abs(dims.count(k) / len(dims) - 1 / 3) < 0.07 for k in (3, 5, 8)
    )
    horizons = np.array([d["horizon"] for d in draws])
    assert horizons.min() >= 10 and horizons.max() <= 1000
    # log-uniform: log10 T uniform on [1, 3], so its median is 100 and a third lies below ~46
    assert abs(np.median(horizons) / 100 - 1) < 0.15
    assert abs((horizons < 46.4).mean() - 1 / 3) < 0.05
    assert all(d["param_scales"] == [1.0] and d["loss_scale"] == 1.0 for d in draws[:5])


def test_scale_augmentation_rescales_parameters_and_gradients_only():
    family = MixtureFamily(members=(QUADRATICS,), param_scale=100.0, loss_scale=10.0)
    task = family.sample(3)
    assert isinstance(task, MixtureTask) and task.horizon is None
    (s,), c = task.param_scales, task.loss_scale
    assert 0.01 <= s <= 100 and 0.1 <= c <= 10 and s != 1 and c != 1
    inner = task.inner
    (theta0,) = inner.init_params()
    (theta0_,) = task.init_params()
    torch.testing.assert_close(theta0_, theta0 / s)  # theta' = theta / s
    theta_ = (theta0_ + 0.1).requires_grad_()
    theta = (theta_.detach() * s).requires_grad_()
    loss_, loss = task.loss([theta_], None), inner.loss([theta], None)
    torch.testing.assert_close(loss_, c * loss)  # f' = c f, at the same point
    (grad_,) = torch.autograd.grad(loss_.sum(), theta_)
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    torch.testing.assert_close(grad_, c * s * grad)  # df'/dtheta' = c s df/dtheta
    scales = [family.sample(seed).param_scales[0] for seed in range(400)]
    logs = np.log10(scales)
    assert logs.min() >= -2 and logs.max() <= 2 and abs(np.mean(logs)) < 0.25


def test_tasks_with_buffers_keep_them_through_the_augmentation(idx_dir):
    conv = {"name": "conv", "dataset": "mnist", "data_dir": idx_dir, "channels": [4],
            "hidden_sizes": [], "batch_size": 8, "resolution": 8}  # fmt: skip
    task = MixtureFamily(members=(conv,), param_scale=10.0).sample(0)
    buffers = task.init_buffers()
    params = task.init_params()
    loss, new = task.loss_and_buffers(params, buffers, task.batch(0))
    inner_loss, inner_new = task.inner.loss_and_buffers(
        [p * s for p, s in zip(params, task.param_scales)], buffers, task.batch(0)
    )
    torch.testing.assert_close(loss, inner_loss)
    assert all(torch.equal(a, b) for a, b in zip(new, inner_new))
    assert not hasattr(MixtureFamily(members=(QUADRATICS,)).sample(0), "init_buffers")


def test_images_are_resized_once_to_the_resolution(idx_dir):
    native = load_images("mnist", idx_dir)
    small = load_images("mnist", idx_dir, resolution=7)
    assert small.train_images.shape == (50, 49) and small.test_images.shape == (20, 49)
    assert (
        small.train_images.dtype == torch.uint8
        and load_images("mnist", idx_dir, resolution=7) is small
    )
    # 4 x 4 blocks averaged, rounded to bytes
    blocks = native.train_images.float().view(50, 7, 4, 7, 4).mean((2, 4)).reshape(50, 49)
    assert (blocks - small.train_images.float()).abs().max() <= 0.5
    mlp = make_task_family(
        "mnist", dataset="mnist", data_dir=idx_dir, resolution=7, hidden_sizes=[4]
    )
    assert mlp.sample(0).init_params()[0].shape == (1, 4, 49)
    conv = make_task_family(
        "conv", dataset="mnist", data_dir=idx_dir, resolution=8, channels=[2, 2]
    )
    task = conv.sample(0)
    assert task.loss(task.init_params(), task.batch(0)).shape == (1,)
    with pytest.raises(InvalidInput, match=r"^Invalid resolution: -1 \(pixels per side"):
        make_task_family("mnist", resolution=-1)
    with pytest.raises(InvalidInput, match="shrink the 4x4 images"):
        make_task_family("conv", dataset="mnist", resolution=4, channels=[2, 2, 2])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"members": []}, r"^Invalid members: \[\] \(a non-empty list"),
        ({"members": [{"name": "nope"}]}, r"^Invalid task.members\[0\].name: 'nope' \(valid: quadratic"),
        ({"members": [{"name": "mixture"}]}, r"^Invalid task.members\[0\].name: 'mixture'"),
        ({"members": [{"name": "quadratic", "weight": 0}]}, r"^Invalid task.members\[0\].weight: 0"),
        ({"members": [{"name": "quadratic", "choose": {"dim": 5}}]}, r"^Invalid task.members\[0\].choose"),
        ({"members": [{"name": "quadratic", "dim": 4, "choose": {"dim": [5]}}]}, r"dim both fixed and in choose"),
        ({"members": [{"name": "quadratic", "choose": {"dim": [5, 0]}}]}, r"^task.members\[0\]: Invalid dim: 0"),
        ({"members": [{"name": "quadratic", "size": 3}]}, r"^task.members\[0\]: unknown option\(s\) size for task 'quadratic'"),
        ({"members": [QUADRATICS], "horizons": [100]}, r"^Invalid horizons: \[100\] \(two integers"),
        ({"members": [QUADRATICS], "horizons": [200, 100]}, r"^Invalid horizons: \[200, 100\]"),
        ({"members": [QUADRATICS], "param_scale": 0.5}, r"^Invalid param_scale: 0.5 \(a number >= 1\)"),
    ],
)  # fmt: skip
def test_bad_mixtures_are_refused_in_one_line(options, message):
    with pytest.raises(InvalidInput, match=message) as error:
        make_task_family("mixture", **options)
    assert "\n" not in str(error.value)


def test_the_config_round_trips_through_its_record():
    data = {
        "task": {"name": "mixture", "members": [QUADRATICS, {"name": "simple"}], "horizons": [5, 9],
                 "param_scale": 3, "loss_scale": 2},
        "optimizer": {"kind": "mlp"},
    }  # fmt: skip
    config = config_from_dict(data, record=False)
    record = config.to_dict()
    assert record["task"]["members"][0] == {"name": "quadratic", "weight": 1.0, "num_problems": 2,
                                           "choose": {"dim": [3, 5, 8]}}  # fmt: skip
    assert config_from_dict(record).task == config.task
    from l2o.config import to_toml

    assert "[[task.members]]" in to_toml(record)


def test_meta_training_unrolls_each_tasks_own_horizon_and_validates_relatively(tmp_path):
    family = MixtureFamily(members=(QUADRATICS,), horizons=(3, 30), param_scale=5.0, loss_scale=5.0)
    config = MetaTrainConfig(
        epochs=4, horizon=10, truncation=5, validate_every=2, validation_tasks=3, meta_loss="log"
    )
    trainer = MetaTrainer(CoordinatewiseLSTM(LSTMConfig(hidden_size=4)), family, config, tmp_path)
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    horizons = [r["task"]["horizon"] for r in rows]
    assert len(set(horizons)) > 1
    assert trainer.state.meta_updates == sum(math.ceil(t / 5) for t in horizons)
    # Relative validation: each task at its own horizon, f(theta_T) / f(theta_0) per task
    scores = validate(Adam(lr=0.1), family, config)
    tasks = [family.sample(s) for s in (trainer_seed(i) for i in range(3))]
    from l2o.evaluate import rollout

    ratios = []
    for task in tasks:
        curve = rollout(Adam(lr=0.1), task, task.horizon).losses.double().mean(1)
        ratios.append(max(float(curve[-1] / curve[0]), RATIO_FLOOR))
    assert scores["final_loss"] == pytest.approx(math.exp(np.mean(np.log(ratios))), rel=1e-9)
    assert scores["final_loss"] < 1 and len(scores["curve"]) == min(t.horizon for t in tasks) + 1


def trainer_seed(i):
    from l2o.meta import task_seed

    return task_seed("validation", i)


def test_data_dir_reaches_the_members_that_read_a_dataset(idx_dir):
    mlp = {"name": "mnist", "dataset": "mnist", "hidden_sizes": [4], "batch_size": 4}
    family = MixtureFamily(members=(mlp, QUADRATICS), data_dir=idx_dir)
    family.locate_data()  # reads and verifies the members' datasets there
    drawn = [family.sample(seed).describe()["member"] for seed in range(20)]
    assert {d.get("data_dir") for d in drawn} == {idx_dir, None}  # quadratics read none
    own = {**mlp, "data_dir": "/nowhere"}  # a member's own data_dir wins
    assert (
        MixtureFamily(members=(own,), data_dir=idx_dir)
        .members[0]
        .family({}, data_dir=idx_dir)
        .data_dir
        == "/nowhere"
    )
