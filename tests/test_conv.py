"""The conv net with batch norm of the paper's CIFAR experiment: maths against the nn.Module
one would write (train and eval mode, running statistics), running statistics carried through
truncated unrolls exactly once per step, options, and a short meta-training of the grouped
optimizer on the real Fashion-MNIST files."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from l2o.cli import main
from l2o.config import load_config
from l2o.data import write_idx
from l2o.data.mnist import SYSTEM_ROOT
from l2o.evaluate import rollout
from l2o.meta import init_unroll, task_seed, unroll
from l2o.optimizers import SGD, CoordinatewiseLSTM, GroupedOptimizer, LSTMConfig
from l2o.runs import build_learned_optimizer
from l2o.tasks import ConvFamily, QuadraticFamily, make_task_family
from learned_checks import assert_same_meta_gradients, both_paths

FASHION = SYSTEM_ROOT / "fashion-mnist"


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """Tiny datasets in the real formats: 28x28x1 IDX files and 32x32x3 CIFAR-10 binaries."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    idx = root / "idx"
    idx.mkdir()
    for split, n in (("train", 64), ("t10k", 40)):
        write_idx(idx / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(idx / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, np.uint8))
    cifar = root / "cifar" / "cifar-10-batches-bin"
    cifar.mkdir(parents=True)
    for name in [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]:
        records = rng.integers(0, 256, (16, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (cifar / name).write_bytes(records.tobytes())
    return {"fashion-mnist": str(idx), "cifar10": str(root / "cifar")}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Net(nn.Module):
    """The conv net as one would write it with torch.nn (the same parameter names)."""

    def __init__(self, in_channels, channels, hidden, spatial, k, classes):
        super().__init__()
        c = in_channels
        for i, width in enumerate(channels):
            setattr(self, f"conv{i}", nn.Conv2d(c, width, k, padding=k // 2, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(width))
            c, spatial = width, spatial // 2
        features = c * spatial * spatial
        for i, width in enumerate(hidden):
            setattr(self, f"fc{i}", nn.Linear(features, width, bias=False))
            setattr(self, f"bn_fc{i}", nn.BatchNorm1d(width))
            features = width
        self.out = nn.Linear(features, classes)
        self.depth, self.hidden = len(channels), len(hidden)

    def forward(self, x):
        for i in range(self.depth):
            x = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))
            x = nn.functional.max_pool2d(torch.relu(x), 2)
        x = x.flatten(1)
        for i in range(self.hidden):
            x = torch.relu(getattr(self, f"bn_fc{i}")(getattr(self, f"fc{i}")(x)))
        return self.out(x)


def _module(family, task):
    c, h, _ = task.shape
    net = Net(c, family.channels, family.hidden_sizes, h, family.kernel_size, family.num_outputs)
    return net.double()


def _state(task, params, buffers, k):
    """Problem k's parameters and buffers as an nn.Module state for functional_call."""
    theta = {n: p[k] for n, p in zip(task.param_names, params)}
    return theta, {n: b[k].clone() for n, b in zip(task.buffer_names, buffers)}


CASES = [
    dict(dataset="fashion-mnist"),  # the paper's net: 3 x conv(16, 5x5), fc 32
    dict(dataset="cifar10", channels=[3, 5], hidden_sizes=[6, 4], kernel_size=3, classes=[8, 1, 5]),
    dict(dataset="fashion-mnist", channels=[4], hidden_sizes=[], bn_momentum=0.3),
]


@pytest.mark.parametrize("options", CASES)
def test_train_mode_matches_nn_module_loss_gradients_and_running_statistics(data_dirs, options):
    family = ConvFamily(
        data_dir=data_dirs[options["dataset"]], batch_size=8, num_problems=2, **options
    )
    task = family.sample(3, dtype=torch.float64)
    params = [p.requires_grad_() for p in task.init_params()]
    # Buffers not at their initial values, so that the update rule is really tested.
    buffers = [b + 0.5 * torch.rand_like(b) for b in task.init_buffers()]
    images, labels = task.batch(2)
    loss, new_buffers = task.loss_and_buffers(params, buffers, (images, labels))
    assert torch.equal(loss, task.loss(params, (images, labels)))  # the same training loss
    grads = torch.autograd.grad(loss.sum(), params)
    net = _module(family, task)
    assert list(dict(net.named_parameters())) == task.param_names
    assert [n for n in dict(net.named_buffers()) if "num_batches" not in n] == task.buffer_names
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = family.bn_momentum
    for k in range(2):
        theta, state = _state(task, [p.detach() for p in params], buffers, k)
        theta = {n: p.requires_grad_() for n, p in theta.items()}
        net.train()
        logits = functional_call(net, (theta, state), (images[k],))
        want = nn.functional.cross_entropy(logits, labels[k])
        torch.testing.assert_close(loss[k], want)
        for g, w in zip(grads, torch.autograd.grad(want, list(theta.values()))):
            torch.testing.assert_close(g[k], w)
        for name, b in zip(task.buffer_names, new_buffers):  # functional_call updated `state`
            torch.testing.assert_close(b[k], state[name])
        assert not any(b.requires_grad for b in new_buffers)  # not meta-trained


def test_eval_mode_test_metrics_use_the_running_statistics(data_dirs):
    family = ConvFamily(
        dataset="cifar10", data_dir=data_dirs["cifar10"], channels=[3], hidden_sizes=[4],
        num_problems=2, batch_size=8,
    )  # fmt: skip
    task = family.sample(0, dtype=torch.float64)
    result = rollout(SGD(lr=0.1), task, 5)
    assert len(result.buffers) == 4 and not torch.equal(result.buffers[0], task.init_buffers()[0])
    metrics = task.evaluate(result.params, chunk=7, buffers=result.buffers)
    net = _module(family, task).eval()
    images = task.data.test_images.double().div(255).reshape(-1, 3, 32, 32)
    for k in range(2):
        logits = functional_call(net, _state(task, result.params, result.buffers, k), (images,))
        loss = nn.functional.cross_entropy(logits, task.data.test_labels)
        accuracy = (logits.argmax(1) == task.data.test_labels).double().mean()
        torch.testing.assert_close(metrics["loss"][k], loss)
        torch.testing.assert_close(metrics["accuracy"][k], accuracy)
    train_mode = task.evaluate(result.params, chunk=7)  # batch statistics: another number
    assert not torch.allclose(train_mode["loss"], metrics["loss"])


def test_running_statistics_are_updated_once_per_step_across_truncations(data_dirs):
    """Unrolled in truncations [2, 3] (and rolled out for evaluation), the conv net ends where an
    ordinary nn.Module training loop of 5 steps ends: same theta, same running statistics. A
    second update at a truncation boundary would make them differ."""
    family = ConvFamily(
        dataset="fashion-mnist", data_dir=data_dirs["fashion-mnist"], channels=[2, 3],
        hidden_sizes=[5], batch_size=8,
    )  # fmt: skip
    task = family.sample(1, dtype=torch.float64)
    opt = SGD(lr=0.2, momentum=0.5)
    state = init_unroll(task, opt)
    assert len(state.buffers) == 6
    for weights in ([1.0, 1.0], [1.0, 1.0, 1.0]):
        state = unroll(task, opt, state, weights).state.detached()
    assert state.step == 5
    net = _module(family, task)
    with torch.no_grad():
        for p, value in zip(net.parameters(), task.init_params()):
            p.copy_(value[0])
    torch_opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.5)
    for t in range(5):
        images, labels = task.batch(t)
        torch_opt.zero_grad()
        nn.functional.cross_entropy(net(images[0]), labels[0]).backward()
        torch_opt.step()
    final = rollout(opt, task, 5)
    want_buffers = dict(net.named_buffers())
    for name, b, r in zip(task.buffer_names, state.buffers, final.buffers):
        torch.testing.assert_close(b[0], want_buffers[name], msg=name)
        torch.testing.assert_close(r[0], want_buffers[name], msg=name)
    for p, r, want in zip(state.params, final.params, net.parameters()):
        torch.testing.assert_close(p[0], want.detach())
        torch.testing.assert_close(r[0], want.detach())
    quadratic = QuadraticFamily(dim=3).sample(0)  # tasks without buffers: none carried
    assert init_unroll(quadratic, opt).buffers == [] and rollout(opt, quadratic, 2).buffers == []


def test_options_are_checked_and_round_trip_through_the_config(data_dirs):
    for options, message in (
        (dict(channels=[]), r"Invalid channels: \[\]"),
        (dict(channels=[4, 0]), r"Invalid channels: \[4, 0\]"),
        (dict(channels=[4] * 5), r"5 conv layers with 2x2 pooling shrink the 28x28 images"),
        (dict(kernel_size=4), r"Invalid kernel_size: 4 \(must be odd"),
        (dict(classes=[3, 3]), r"Invalid classes: \[3, 3\]"),
        (dict(classes=[9, 10]), r"Invalid classes: \[9, 10\]"),
        (dict(dataset="cifar11"), r"Invalid dataset: 'cifar11'"),
        (dict(bn_momentum=2.0), r"Invalid bn_momentum: 2.0"),
    ):
        with pytest.raises(ValueError, match=message):
            ConvFamily(**{"dataset": "fashion-mnist", **options})
    assert ConvFamily(dataset="cifar10", channels=[4] * 5).channels == (4,) * 5  # 32 -> 1
    family = ConvFamily(
        dataset="fashion-mnist", data_dir=data_dirs["fashion-mnist"], classes=[1, 2]
    )
    saved = family.to_config()
    assert json.loads(json.dumps(saved)) == saved and make_task_family(**saved) == family
    task = family.sample(0)
    assert task.init_params()[-1].shape == (1, 2) and task.param_names[0] == "conv0.weight"
    weight = task.init_params()[0]  # torch's default for Conv2d: U(+-1/sqrt(fan_in))
    assert float(weight.abs().max()) <= 1 / 5 and float(weight.std()) > 0.5 * (1 / 5) / 3**0.5
    a, b = family.sample(5), family.sample(5)
    assert torch.equal(a.batch(3)[0], b.batch(3)[0]) and not torch.equal(
        a.batch(3)[0], a.batch(4)[0]
    )


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FASHION} (apt install dataset-fashion-mnist)",
)
def test_meta_training_the_grouped_optimizer_on_real_fashion_mnist(tmp_path):
    """Seconds of meta-training with configs/conv.toml (conv and fc LSTMs) on the real files:
    each group's LSTM is trained and saved under its name, resume works, and the trained
    optimizer trains held-out conv nets better than the untrained one."""
    run = tmp_path / "run"
    small = [
        "--set", "task.channels=[4, 4]", "--set", "task.hidden_sizes=[8]",
        "--set", "task.batch_size=32", "--set", "meta.horizon=10", "--set", "meta.truncation=5",
        "--set", "meta.validate_every=6", "--set", "meta.validation_tasks=1",
        "--set", "meta.meta_lr=0.01", "--data-dir", str(FASHION), "--quiet",
    ]  # fmt: skip
    argv = ["train", "configs/conv.toml", "--run-dir", str(run), *small]
    assert main([*argv, "--set", "meta.epochs=6"]) == 0
    assert main([*argv, "--set", "meta.epochs=12", "--resume"]) == 0
    record = json.loads((run / "checkpoints" / "last.json").read_text())
    assert record["epoch"] == 12 and record["groups"] == {
        "conv": ["conv*"],
        "fc": ["bn*", "fc*", "out.*"],
    }
    from l2o import load

    trained = load(run)
    assert isinstance(trained, GroupedOptimizer) and set(trained.groups) == {"conv", "fc"}
    untrained = build_learned_optimizer(load_config(run / "config.toml"))  # phi at epoch 0
    for group in ("conv", "fc"):  # each group's own weights moved away from the initialisation
        assert not torch.equal(
            trained.groups[group].output.weight, untrained.groups[group].output.weight
        )
    family = make_task_family(**record["task"])
    scores = {}
    for name, opt in (("trained", trained), ("untrained", untrained)):
        losses = [rollout(opt, family.sample(task_seed("test", i)), 10).losses for i in range(3)]
        scores[name] = float(torch.cat(losses, 1)[1:].mean())
    assert scores["trained"] < scores["untrained"] - 0.05, scores


def test_first_order_meta_gradients_through_batch_norm_need_no_graph_through_the_net(data_dirs):
    # The default first-order path (l2o.meta.truncated_bptt) on a conv net with batch norm
    # (running statistics carried as buffers) equals backpropagation through the net's graph.
    family = ConvFamily(
        dataset="fashion-mnist",
        data_dir=data_dirs["fashion-mnist"],
        batch_size=8,
        num_problems=2,
        channels=[4],
        hidden_sizes=[],
        bn_momentum=0.3,
    )
    task = family.sample(1, dtype=torch.float64)
    torch.manual_seed(0)
    opt = CoordinatewiseLSTM(LSTMConfig(hidden_size=5)).double()
    fast, reference = both_paths(opt, task, [[1.0] * 3, [1.0] * 3], "relative")
    assert_same_meta_gradients(fast, reference, rtol=1e-9)
    for a, b in zip(fast[-1].state.buffers, reference[-1].state.buffers):
        assert torch.equal(a, b)
    assert fast[-1].state.buffers and not torch.equal(
        fast[-1].state.buffers[0], task.init_buffers()[0]
    )
