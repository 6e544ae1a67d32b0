"""The MLP task of the paper's MNIST experiment: maths against nn.Sequential, determinism,
options, and a short end-to-end meta-training on the real Fashion-MNIST files."""

import itertools
import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from cli_errors import one_line_error
from l2o.cli import main
from l2o.config import load_config
from l2o.data.mnist import SYSTEM_ROOT
from l2o.evaluate import rollout
from l2o.evaluate.figures import Setting, evaluate_setting, load_figure_preset
from l2o.meta import task_seed
from l2o.optimizers import Adam
from l2o.tasks import MLPFamily, make_task_family

FASHION = SYSTEM_ROOT / "fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FASHION} (apt install dataset-fashion-mnist)",
)
MODULES = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


class Net(nn.Module):
    """The MLP as one would write it with torch.nn."""

    def __init__(self, sizes, activation):
        super().__init__()
        layers = []
        for k, (i, o) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(i, o))
            if k < len(sizes) - 2:
                layers.append(MODULES[activation]())
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def _sequential(sizes, activation):
    return Net(sizes, activation).double()


@needs_fashion
@pytest.mark.parametrize(
    "hidden, activation", [((20,), "sigmoid"), ((7, 5), "relu"), ((6,), "tanh"), ((4,), "elu")]
)
def test_loss_and_gradients_match_nn_sequential(hidden, activation):
    family = MLPFamily(
        dataset="fashion-mnist", hidden_sizes=hidden, activation=activation, num_problems=3,
        batch_size=16, init="torch",
    )  # fmt: skip
    task = family.sample(5, dtype=torch.float64)
    params = [p.requires_grad_() for p in task.init_params()]
    images, labels = task.batch(3)
    loss = task.loss(params, (images, labels))
    grads = torch.autograd.grad(loss.sum(), params)
    model = _sequential([784, *hidden, 10], activation)
    assert task.param_names == list(dict(model.named_parameters()))
    for k in range(3):
        theta = {name: p[k].detach().requires_grad_() for name, p in zip(task.param_names, params)}
        logits = functional_call(model, theta, (images[k],))
        want = nn.functional.cross_entropy(logits, labels[k])
        torch.testing.assert_close(loss[k], want)
        want_grads = torch.autograd.grad(want, list(theta.values()))
        for g, w in zip(grads, want_grads):
            torch.testing.assert_close(g[k], w)


@needs_fashion
def test_test_set_metrics_match_nn_sequential():
    task = MLPFamily(dataset="fashion-mnist", num_problems=2).sample(1, dtype=torch.float64)
    params = rollout(Adam(lr=0.03), task, 30).params
    metrics = task.evaluate(params)
    model = _sequential([784, 20, 10], "sigmoid")
    images = task.data.test_images.double() / 255
    for k in range(2):
        theta = {name: p[k] for name, p in zip(task.param_names, params)}
        logits = functional_call(model, theta, (images,))
        loss = nn.functional.cross_entropy(logits, task.data.test_labels)
        accuracy = (logits.argmax(1) == task.data.test_labels).double().mean()
        torch.testing.assert_close(metrics["loss"][k], loss)
        torch.testing.assert_close(metrics["accuracy"][k], accuracy)
    assert 0.5 < float(metrics["accuracy"].mean()) < 1  # 30 Adam steps learn something


@needs_fashion
def test_runs_differ_only_in_theta0_and_batches_and_are_reproducible():
    family = MLPFamily(dataset="fashion-mnist", num_problems=2)
    a, b, c = family.sample(1), family.sample(1), family.sample(2)
    for x, y in zip(a.init_params(), b.init_params()):
        assert torch.equal(x, y)
    assert not torch.equal(a.init_params()[0], c.init_params()[0])
    (xa, ya), (xb, yb) = a.batch(7), b.batch(7)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # same batch, in any order of calls
    assert xa.shape == (2, 128, 784) and float(xa.min()) >= 0 and float(xa.max()) <= 1
    assert not torch.equal(ya[0], ya[1])  # each problem has its own minibatches
    assert not torch.equal(a.batch(8)[1], ya) and not torch.equal(c.batch(7)[1], ya)
    weight = a.init_params()[0]
    assert weight.shape == (2, 20, 784) and abs(float(weight.std()) - 0.01) < 0.001  # paper init
    bound = 1 / 784**0.5
    torch_init = MLPFamily(dataset="fashion-mnist", init="torch").sample(0).init_params()[0]
    assert float(torch_init.abs().max()) <= bound and float(torch_init.std()) > 0.5 * bound / 3**0.5


def test_options_are_checked_and_round_trip_through_the_config():
    with pytest.raises(ValueError, match="Invalid activation: 'swish'"):
        MLPFamily(activation="swish")
    with pytest.raises(ValueError, match=r"Invalid hidden_sizes: \[20, 0\]"):
        MLPFamily(hidden_sizes=[20, 0])
    with pytest.raises(ValueError, match="Invalid dataset: 'cifar10'"):
        MLPFamily(dataset="cifar10")
    with pytest.raises(ValueError, match="Invalid init"):
        MLPFamily(init="xavier")
    config = load_config("configs/mnist.toml", ["task.hidden_sizes=[40, 40]"])
    assert config.task == MLPFamily(dataset="fashion-mnist", hidden_sizes=(40, 40))
    saved = config.task.to_config()
    assert json.loads(json.dumps(saved)) == saved  # what the resume check compares
    assert make_task_family(**{**saved}) == config.task


@needs_fashion
def test_figure_presets_and_evaluate_setting_report_test_metrics():
    options, settings = load_figure_preset("configs/mnist-fig5.toml")
    assert len(settings) == 12 and settings[-1].task == {"hidden_sizes": [160, 160]}
    options, settings = load_figure_preset("configs/mnist-fig4.toml")
    assert {"200-steps", "40-units", "2-layers", "relu"} <= {s.name for s in settings}
    assert options.test_runs >= 20
    small = type(options)(
        test_runs=2, validation_runs=2, problems_per_task=2, baselines=("adam",),
        lr_grid=(1e-2, 1e-1, 1),
    )  # fmt: skip
    task = MLPFamily(dataset="fashion-mnist").to_config()
    result = evaluate_setting({"lstm": Adam(lr=0.05)}, task, Setting("s", 5), small)
    assert result["runs"] == 2 and set(result["optimizers"]) == {"lstm", "adam"}
    assert 0 < result["optimizers"]["adam"]["test_accuracy_mean"] <= 1
    assert result["task"]["num_problems"] == 2 and result["lstm_over_adam"] > 0


@needs_fashion
def test_meta_training_on_real_fashion_mnist_improves_the_lstm(tmp_path, one_thread):
    """A few seconds of meta-training on the real files: the LSTM gets better at training MLPs."""
    run = tmp_path / "run"
    argv = [
        "train", "configs/mnist.toml", "--run-dir", str(run), "--quiet",
        "--set", "meta.epochs=16", "--set", "meta.horizon=10", "--set", "meta.truncation=5",
        "--set", "meta.validate_every=16", "--set", "meta.validation_tasks=1",
        "--set", "meta.meta_lr=0.01", "--set", "task.hidden_sizes=[5]",
        "--data-dir", str(FASHION),
    ]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((run / "checkpoints" / "best.json").read_text())
    assert record["task"]["dataset"] == "fashion-mnist"
    assert record["task"]["data_dir"] == str(FASHION)
    from l2o import load
    from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig

    family = make_task_family(**record["task"])
    trained, untrained = load(run), CoordinatewiseLSTM(LSTMConfig())
    scores = {}
    for name, opt in (("trained", trained), ("untrained", untrained)):
        losses = [rollout(opt, family.sample(task_seed("test", i)), 10).losses for i in range(4)]
        scores[name] = float(torch.cat(losses, 1)[1:].mean())
    assert scores["trained"] < scores["untrained"] - 0.05, scores


def test_cli_errors_for_missing_data(tmp_path, capsys):
    run = tmp_path / "run"
    message = one_line_error(
        capsys,
        ["train", "configs/mnist.toml", "--run-dir", str(run), "--data-dir", str(tmp_path / "no")],
    )
    assert f"data directory {tmp_path / 'no'} does not exist" in message
    assert not run.exists()  # nothing written before the data is found
    message = one_line_error(
        capsys, ["train", "configs/mnist.toml", "--run-dir", str(run), "--data-dir", str(tmp_path)]
    )
    assert f"no Fashion-MNIST files found (looked in {tmp_path}," in message
    message = one_line_error(
        capsys, ["train", "configs/quadratic.toml", "--run-dir", str(run), "--data-dir", "x"]
    )
    assert "unknown option(s) data_dir for task 'quadratic'" in message
    message = one_line_error(capsys, ["train", "--run-dir", str(run), "--download"])
    assert "--download: task 'quadratic' reads no dataset" in message


@needs_fashion
def test_evaluate_draws_the_generalization_grid_from_a_preset(tmp_path, capsys):
    preset = tmp_path / "grid.toml"
    preset.write_text(
        "[evaluate]\ntest_runs = 2\nvalidation_runs = 2\nproblems_per_task = 2\n"
        'baselines = ["adam"]\nlr_grid = [1e-2, 1e-1, 4]\n'
        "[grid]\nsteps = 3\nhidden_units = [5, 20]\nhidden_layers = [1, 2]\n"
    )
    out = tmp_path / "fig5"
    argv = ["evaluate", "mnist-mlp-lstm", "--figure", str(preset), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert list(settings) == ["grid-1x5", "grid-1x20", "grid-2x5", "grid-2x20"]
    assert settings["grid-2x5"]["task"]["hidden_sizes"] == [5, 5]
    assert settings["grid-1x20"]["task"]["dataset"] == "fashion-mnist"
    assert (out / "generalization_grid.png").stat().st_size > 10_000
    assert "| MLP(5x5) | 3 | 2 |" in capsys.readouterr().out
