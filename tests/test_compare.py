"""The one tune-and-compare routine: ``compare`` scores test runs on the task's held-out test set
when asked (batch norm nets in eval mode with their running statistics), and the figure presets'
``evaluate_setting`` is ``compare`` on a setting's task."""

import numpy as np
import pytest
import torch

from l2o.data import write_idx
from l2o.evaluate import compare, rollout
from l2o.evaluate.figures import EvaluationOptions, Setting, evaluate_setting
from l2o.meta import task_seed
from l2o.optimizers import SGD, make_baseline
from l2o.tasks import ConvFamily, QuadraticFamily


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 24)):
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, np.uint8))
    return str(root)


def test_test_metrics_score_theta_T_with_the_running_statistics(data_dir):
    family = ConvFamily(
        dataset="fashion-mnist", data_dir=data_dir, channels=[2], hidden_sizes=[3], batch_size=8,
        num_problems=2,
    )  # fmt: skip
    comparison = compare(
        {"sgd": SGD(lr=0.1)}, family, steps=3, baselines=["adam"], num_validation_tasks=1,
        num_test_tasks=2, grid=[0.01, 0.1], test_metrics=True,
    )  # fmt: skip
    for name, result in comparison.results.items():
        optimizer = SGD(lr=0.1) if name == "sgd" else make_baseline("adam", result.lr)
        want = []
        for i in range(2):
            task = family.sample(task_seed("test", i))
            run = rollout(optimizer, task, 3)
            want.append(task.evaluate(run.params, buffers=run.buffers)["loss"])
        assert torch.equal(result.test_metrics["loss"], torch.cat(want))
        summary = result.summary()
        assert summary["test_loss_mean"] == pytest.approx(float(torch.cat(want).double().mean()))
        assert 0 <= summary["test_accuracy_mean"] <= 1
    quadratics = compare({"sgd": SGD(lr=0.01)}, QuadraticFamily(), 3, ["sgd"], 1, 1, [0.01],
                         test_metrics=True)  # fmt: skip
    assert quadratics.results["sgd"].test_metrics == {}  # no held-out test set: nothing scored


def test_evaluate_setting_is_compare_on_the_setting_task(data_dir):
    options = EvaluationOptions(
        test_runs=4, validation_runs=2, problems_per_task=2, baselines=("adam",),
        lr_grid=(1e-2, 1e-1, 1),
    )  # fmt: skip
    task = {"name": "conv", "dataset": "fashion-mnist", "data_dir": data_dir, "batch_size": 8}
    setting = Setting("small", 3, {"channels": [2], "hidden_sizes": [3]}, "a small net")
    lines = []
    result = evaluate_setting({"lstm": SGD(lr=0.1)}, task, setting, options, progress=lines.append)
    family = ConvFamily(
        dataset="fashion-mnist", data_dir=data_dir, batch_size=8, channels=[2], hidden_sizes=[3],
        num_problems=2,
    )  # fmt: skip
    want = compare(
        {"lstm": SGD(lr=0.1)}, family, 3, ["adam"], 1, 2, [0.01, 0.1], test_metrics=True
    ).to_json()
    for name in ("lstm", "adam"):
        for key, value in want["optimizers"][name].items():
            if not key.startswith("seconds"):
                assert result["optimizers"][name][key] == value, (name, key)
    assert result["over_adam"] == {"lstm": result["lstm_over_adam"]}
    assert result["setting"] == {"name": "small", "title": "a small net", "task": setting.task}
    assert all(line.startswith("[small] ") for line in lines) and lines
