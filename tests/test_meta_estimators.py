"""ES and PES chosen in the config: they meta-train, resume exactly, and bad options are one line."""

import pytest
import torch

from l2o.config import load_config
from l2o.errors import InvalidInput
from l2o.meta import MetaTrainConfig
from l2o.meta.es import ES, PES
from l2o.meta.truncated_bptt import TruncatedBPTT
from l2o.runs import train

SMALL = [
    "task.num_problems=8",
    "task.dim=3",
    "optimizer.num_layers=1",
    "optimizer.hidden_size=4",
    "meta.horizon=6",
    "meta.truncation=3",
    "meta.validate_every=2",
    "meta.validation_tasks=1",
    "meta.pairs=2",
    "meta.sigma=0.05",
]


@pytest.mark.parametrize("name,kind", [("tbptt", TruncatedBPTT), ("es", ES), ("pes", PES)])
def test_the_config_chooses_the_estimator(name, kind):
    config = MetaTrainConfig(estimator=name, sigma=0.1, pairs=3)
    estimator = config.objective.make_estimator()
    assert isinstance(estimator, kind)
    if kind is not TruncatedBPTT:
        assert (estimator.sigma, estimator.pairs) == (0.1, 3)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"estimator": "reinforce"}, "Invalid estimator: 'reinforce' (valid: tbptt, es, pes)"),
        ({"estimator": "es", "sigma": 0.0}, "Invalid sigma: 0.0"),
        ({"estimator": "pes", "pairs": 0}, "Invalid pairs: 0"),
        ({"estimator": "pes", "second_order": True}, "second_order needs estimator"),
    ],
)
def test_bad_estimator_options_are_one_line(options, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        MetaTrainConfig(**options)


@pytest.mark.parametrize("estimator", ["es", "pes"])
def test_es_and_pes_meta_train_and_resume_exactly(tmp_path, estimator):
    def run(directory, epochs, resume=False):
        config = load_config(None, [*SMALL, f"meta.estimator={estimator!r}".replace("'", '"'),
                                    f"meta.epochs={epochs}"])  # fmt: skip
        return train(config, directory, resume=resume, quiet=True, tensorboard=False)

    straight = run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    resumed = run(tmp_path / "resumed", 4, resume=True)
    assert resumed.epoch == straight.epoch == 4 and resumed.meta_updates == 8
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # phi moved away from its seeded initialisation: the estimates were applied.
    from l2o.runs import build_learned_optimizer

    start = build_learned_optimizer(load_config(None, SMALL)).state_dict()
    assert any(not torch.equal(start[k], a[k]) for k in start)


@pytest.mark.parametrize("estimator", ["tbptt", "es", "pes"])
def test_train_only_meta_trains_the_chosen_parameters_alone(tmp_path, estimator):
    # meta.train_only: the output layer moves, the LSTM's cells keep their seeded init.
    from safetensors.torch import load_file

    from l2o.runs import build_learned_optimizer

    overrides = [*SMALL, f'meta.estimator="{estimator}"', "meta.epochs=2",
                 'meta.train_only=["output.*"]']  # fmt: skip
    config = load_config(None, overrides)
    assert config.meta.train_only == ("output.*",)
    train(config, tmp_path / "run", quiet=True, tensorboard=False)
    start = build_learned_optimizer(load_config(None, SMALL)).state_dict()
    end = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    for name in ("cells.0.weight", "cells.0.bias"):
        assert torch.equal(start[name], end[name]), name
    assert not torch.equal(start["output.weight"], end["output.weight"])


@pytest.mark.parametrize("kind", [ES, PES])
def test_es_and_pes_perturb_and_estimate_only_the_trained_parameters(kind):
    from l2o.meta.unroll import init_unroll
    from l2o.runs import build_learned_optimizer

    config = load_config(None, SMALL)
    optimizer = build_learned_optimizer(config)
    task = config.task.sample(0)
    estimator = kind(sigma=0.05, pairs=4)
    optimizer.cells[0].weight.requires_grad_(False)  # as freeze_all_but leaves it
    generator = torch.Generator().manual_seed(1)
    if kind is ES:
        grads = estimator.meta_gradient(
            optimizer, task, init_unroll(task, optimizer), [1.0] * 3, generator
        ).grads
    else:
        state = estimator.init(optimizer, task)
        for _ in range(2):
            result, state = estimator.meta_gradient(optimizer, task, state, [1.0] * 3, generator)
        grads = result.grads
        frozen = optimizer.cells[0].weight.numel()  # phi's first coordinates
        assert not state.xi[:, :frozen].any() and state.xi[:, frozen:].all()
    by_name = dict(zip([n for n, _ in optimizer.named_parameters()], grads))
    assert not by_name["cells.0.weight"].any()
    assert by_name["cells.0.bias"].abs().sum() > 0 and by_name["output.weight"].abs().sum() > 0


@pytest.mark.parametrize(
    "value,message",
    [
        ('["nothing.*"]', "Invalid meta.train_only pattern 'nothing.*': it matches none of the "
                          "optimizer's parameters (cells.0.weight, cells.0.bias, output.weight, "
                          "output.bias)"),
        ('"output.*"', "Invalid train_only: 'output.*' (a list of glob patterns"),
        ('["output.*", ""]', "Invalid train_only: ('output.*', '') (a list of glob patterns"),
    ],
)  # fmt: skip
def test_a_bad_train_only_is_one_line_and_writes_nothing(tmp_path, value, message):
    with pytest.raises(InvalidInput) as caught:
        config = load_config(None, [*SMALL, f"meta.train_only={value}"])
        train(config, tmp_path / "run", quiet=True, tensorboard=False)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()
