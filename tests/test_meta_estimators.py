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
