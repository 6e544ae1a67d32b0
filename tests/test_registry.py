"""The one registry of optimizers: every name builds its optimizer from its options, specs
round-trip through it, and configs, checkpoints, the CLI and evaluation accept the same names."""

import json

import pytest

from l2o.config import config_from_dict
from l2o.optimizers import (
    BASELINES,
    LBFGS,
    LSTMGAC,
    NAG,
    NTMBFGS,
    OPTIMIZERS,
    SGD,
    Adam,
    CoordinatewiseLSTM,
    GroupedOptimizer,
    LSTMConfig,
    LSTMGACConfig,
    MLPOptimizerConfig,
    NTMBFGSConfig,
    PerParameterMLP,
    RMSprop,
    RNNprop,
    RNNpropConfig,
    from_spec,
    make_baseline,
)


def _examples():
    """One optimizer per registered name, with options other than the defaults."""
    lstm = CoordinatewiseLSTM(LSTMConfig(hidden_size=3, momentum=(0.9,), param_input=True))
    return {
        "lstm": lstm,
        "mlp": PerParameterMLP(MLPOptimizerConfig(hidden_size=4, momentum=(0.9,), nominal_lr=0)),
        "rnnprop": RNNprop(RNNpropConfig(hidden_size=4, beta1=0.9, alpha=0.05)),
        "lstm-gac": LSTMGAC(LSTMGACConfig(hidden_size=4, global_cells=1, share="tensor")),
        "ntm-bfgs": NTMBFGS(NTMBFGSConfig(hidden_size=4, global_cells=2, history=3)),
        "grouped": GroupedOptimizer({"a": lstm, "b": Adam(lr=0.1)}, ["a", "b", "a"]),
        "sgd": SGD(lr=0.2, momentum=0.5, dampening=0.1),
        "nag": NAG(lr=0.3, momentum=0.8),
        "rmsprop": RMSprop(lr=0.01, alpha=0.9, momentum=0.5, centered=True),
        "adam": Adam(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
        "lbfgs": LBFGS(lr=0.5, history_size=10, tolerance_grad=1e-9),
    }


def test_every_registered_optimizer_round_trips_through_its_json_spec():
    examples = _examples()
    assert list(examples) == list(OPTIMIZERS)
    for opt in examples.values():
        spec = json.loads(json.dumps(opt.spec()))  # lists where the optimizer keeps tuples
        rebuilt = from_spec(spec)
        assert type(rebuilt) is type(opt) and rebuilt.spec() == opt.spec()


def test_baselines_are_the_registered_hand_designed_optimizers_built_from_a_learning_rate():
    assert set(BASELINES) <= set(OPTIMIZERS)
    for name in BASELINES:
        opt = make_baseline(name, 0.05)
        assert not opt.is_learned and opt.lr == 0.05
        assert opt.spec() == OPTIMIZERS[name](lr=0.05).spec()
    nag = make_baseline("nag", 0.05)
    assert nag.momentum == 0.9 and nag.nesterov  # the paper's NAG
    assert from_spec({"kind": "nag", "lr": 0.05}).spec() == nag.spec()


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown optimizer kind 'lion' \(valid: lstm, mlp, "
                       r"rnnprop, lstm-gac, ntm-bfgs, grouped, sgd, nag, rmsprop, adam, "
                       r"lbfgs\)"):  # fmt: skip
        from_spec({"kind": "lion"})
    with pytest.raises(ValueError, match=r"unknown optimizer 'lstm' \(valid: sgd, nag, rmsprop"):
        make_baseline("lstm", 0.1)


@pytest.mark.parametrize("kind", [b for b in BASELINES if b != "lbfgs"])
def test_a_parameter_group_builds_its_hand_designed_optimizer_from_the_registry(kind):
    options = {"lr": 0.01, "betas": [0.8, 0.9]} if kind == "adam" else {"lr": 0.01}
    groups = {"w": {"params": ["*.weight"]}, "b": {"params": ["*.bias"], "kind": kind, **options}}
    config = config_from_dict({"optimizer": {"groups": groups}})
    built = config.groups["b"].build()
    assert built.spec() == OPTIMIZERS[kind](**options).spec()
    assert config.groups["w"].build().spec() == CoordinatewiseLSTM(config.optimizer).spec()
    # The options a config gives NAG are SGD's, with Nesterov momentum 0.9 by default.
    if kind == "nag":
        assert built.nesterov and built.momentum == 0.9
