"""LSTM+GAC (l2o.optimizers.gac): the coordinatewise LSTM without averaging cells, permutation
equivariance, coordinates that talk only through the averaged cells, segments (problems and
tensors kept apart), the second-order meta-gradient against finite differences, the torch.optim
front-end against the unroll, specs, configs and the preset."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import l2o
from coupled_tasks import TwoTensorTask, run_per_problem
from l2o.config import config_from_dict, load_config
from l2o.errors import InvalidInput
from l2o.evaluate import rollout
from l2o.meta import TruncatedBPTT, init_unroll, unroll
from l2o.optim import LearnedOptimizer
from l2o.optimizers import LSTMGAC, CoordinatewiseLSTM, LSTMConfig, LSTMGACConfig, from_spec
from l2o.runs import build_learned_optimizer, train
from l2o.tasks import QuadraticFamily
from learned_checks import (
    checkpoint_round_trip,
    finite_difference_meta_gradient,
    front_end_matches_direct_steps,
    tiny_quadratic_task,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _perturbed(config: LSTMGACConfig | None = None, scale: float = 0.3) -> LSTMGAC:
    """An LSTM+GAC whose weights are all moved off their initialisation."""
    opt = LSTMGAC(config or LSTMGACConfig(hidden_size=6, global_cells=2))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return opt


def _run(opt, grads_per_step, params, state=None):
    """The updates of each step for the given gradients (lists of tensors per step)."""
    state = opt.init_state(params) if state is None else state
    out = []
    for grads in grads_per_step:
        updates, state = opt.step(grads, state)
        out.append(updates)
    return out, state


def _grads(shapes, steps, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(steps)]


def test_state_is_h_and_c_per_layer_in_rows_and_the_averaged_cells_agree_within_a_segment():
    opt = _perturbed(LSTMGACConfig(hidden_size=6, global_cells=2, share="tensor"))
    params = [torch.zeros(4, 3), torch.zeros(5)]
    (updates,), state = _run(opt, _grads([(4, 3), (5,)], 1), params)
    assert set(state) == {"step", "h", "c", "problems"} and state["problems"] == 1
    assert [tuple(t.shape) for t in state["h"] + state["c"]] == [(17, 6)] * 4
    assert opt.config.state_floats == 24
    for h in state["h"]:
        first, second = h[:12, 4:], h[12:, 4:]  # the two tensors' averaged cells
        assert torch.equal(first, first[:1].expand_as(first))
        assert torch.equal(second, second[:1].expand_as(second))
        assert not torch.allclose(first[0], second[0])
        assert not torch.equal(h[:12, :4], h[:1, :4].expand(12, 4))  # local cells are not shared
    assert [u.shape for u in updates] == [p.shape for p in params]


@pytest.mark.parametrize("preprocess", ["none", "log_sign"])
def test_without_averaging_cells_it_is_the_coordinatewise_lstm(preprocess):
    config = LSTMGACConfig(hidden_size=5, global_cells=0, preprocess=preprocess, output_scale=0.2)
    gac = _perturbed(config)
    lstm = CoordinatewiseLSTM(LSTMConfig(hidden_size=5, preprocess=preprocess, output_scale=0.2))
    lstm.load_state_dict(gac.state_dict())
    shapes = [(3, 4), (2,)]
    params = [torch.zeros(s) for s in shapes]
    grads = _grads(shapes, 4)
    with torch.no_grad():
        ours, _ = _run(gac, grads, params)
        theirs, _ = _run(lstm, grads, params)
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-7)


@pytest.mark.parametrize("share", ["all", "tensor"])
def test_permuting_the_coordinates_permutes_the_updates(share):
    opt = _perturbed(LSTMGACConfig(hidden_size=6, global_cells=3, share=share))
    shapes = [(7,), (3, 2)]
    params = [torch.zeros(s) for s in shapes]
    grads = _grads(shapes, 4)
    perms = [
        torch.randperm(7, generator=torch.Generator().manual_seed(1)),
        torch.tensor([5, 3, 0, 4, 1, 2]),
    ]

    def permuted(tensors):
        return [t.reshape(-1)[p].reshape(t.shape) for t, p in zip(tensors, perms)]

    with torch.no_grad():
        plain, _ = _run(opt, grads, params)
        moved, _ = _run(opt, [permuted(g) for g in grads], params)
    for a, b in zip(plain, moved):
        for x, y in zip(permuted(a), b):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def _cross_jacobian(opt, shapes, steps=3):
    """d update_i / d grad_j over ``steps`` steps (the last step's updates, every step's
    gradients): (N, steps, N)."""
    params = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    flat = torch.cat(
        [g.reshape(-1) for grads in _grads(shapes, steps, 3, torch.float64) for g in grads]
    )
    n = sum(math.prod(s) for s in shapes)

    def last_updates(flat_grads):
        chunks = flat_grads.split(n)
        state = opt.init_state(params)
        for chunk in chunks:
            grads = [
                t.reshape(s) for t, s in zip(chunk.split([math.prod(s) for s in shapes]), shapes)
            ]
            updates, state = opt.step(grads, state)
        return torch.cat([u.reshape(-1) for u in updates])

    return torch.autograd.functional.jacobian(last_updates, flat).reshape(n, steps, n)


def _off_diagonal(jacobian):
    n = jacobian.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool).unsqueeze(1).expand_as(jacobian)
    return jacobian[mask].abs().max()


def test_a_coordinates_gradient_reaches_the_others_only_through_the_averaged_cells():
    opt = _perturbed(LSTMGACConfig(hidden_size=5, global_cells=2, preprocess="none")).double()
    shapes = [(3,), (2, 2)]
    assert _off_diagonal(_cross_jacobian(opt, shapes)) > 1e-4  # the others hear about it
    # Cut every connection out of the averaged cells (the next layer's input, each layer's
    # recurrence, the output): the coordinates are independent again, though the averaged
    # cells still run.
    local = 3
    with torch.no_grad():
        for k, cell in enumerate(opt.cells):
            x_size = cell.weight.shape[1] - 5
            if k > 0:
                cell.weight[:, local:x_size].zero_()
            cell.weight[:, x_size + local :].zero_()
        opt.output.weight[:, local:].zero_()
    jacobian = _cross_jacobian(opt, shapes)
    assert _off_diagonal(jacobian) == 0
    assert jacobian.abs().max() > 1e-5  # each coordinate still hears its own gradients


def test_share_tensor_keeps_tensors_apart_and_share_all_does_not():
    shapes = [(3,), (2,)]
    for share, talks in (("tensor", False), ("all", True)):
        opt = _perturbed(LSTMGACConfig(hidden_size=5, global_cells=2, share=share)).double()
        jacobian = _cross_jacobian(opt, shapes)
        across = jacobian[:3, :, 3:].abs().max()
        within = jacobian[:3, :, :3][~torch.eye(3, dtype=torch.bool).unsqueeze(1).expand(3, 3, 3)]
        assert (across > 1e-4) == talks, share
        assert within.abs().max() > 1e-4


def test_a_tasks_batched_problems_are_stepped_apart_as_if_alone():
    """The unroll of a task of 3 problems = one front-end per problem, each on its own slice."""
    opt = _perturbed(LSTMGACConfig(hidden_size=6, global_cells=2, preprocess="none"))
    task = QuadraticFamily(dim=5, num_problems=3).sample(seed=4)
    thetas = [p.clone().requires_grad_() for p in task.init_params()[0]]
    fronts = [LearnedOptimizer([t], optimizer=opt) for t in thetas]
    for t in range(6):
        task.loss([torch.stack(thetas)], task.batch(t)).sum().backward()
        for front in fronts:
            front.step()
            front.zero_grad()
    core = unroll(task, opt, init_unroll(task, opt), weights=[1.0] * 6)
    torch.testing.assert_close(torch.stack(thetas).detach(), core.state.params[0].detach())
    assert torch.equal(rollout(opt, task, 6).params[0], core.state.params[0].detach())


@pytest.mark.parametrize("share", ["all", "tensor"])
def test_problems_of_several_tensors_are_stepped_apart_as_if_alone(share):
    opt = _perturbed(LSTMGACConfig(hidden_size=6, global_cells=2, share=share))
    task = TwoTensorTask()
    core = unroll(task, opt, init_unroll(task, opt), weights=[1.0] * 5)
    for ours, alone in zip(core.state.params, run_per_problem(opt, task, 5)):
        torch.testing.assert_close(ours.detach(), alone)


def test_learned_optimizer_on_a_module_gives_the_updates_of_direct_step_calls():
    """All of a model's parameters are one problem: one call, averages over all of them."""
    opt = _perturbed()
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    front, _, _ = front_end_matches_direct_steps(opt, model, 4)
    saved = front.state_dict()
    assert saved["param_groups"][0]["optimizer"]["kind"] == "lstm-gac"
    again = LearnedOptimizer(model.parameters(), optimizer=opt)
    again.load_state_dict(saved)
    assert again.state[model[0].weight]["step"] == 4


def test_second_order_meta_gradient_matches_central_finite_differences():
    task = tiny_quadratic_task()
    config = LSTMGACConfig(num_layers=1, hidden_size=3, global_cells=1, preprocess="none")
    opt = _perturbed(config, scale=0.5).double()
    weights = [1.0, 0.5, 1.0, 2.0]
    estimate = TruncatedBPTT(second_order=True).meta_gradient(
        opt, task, init_unroll(task, opt), weights
    )
    first_order = TruncatedBPTT(second_order=False).meta_gradient(
        opt, task, init_unroll(task, opt), weights
    )

    numeric = finite_difference_meta_gradient(opt, task, weights)
    for analytic, fd in zip(estimate.grads, numeric):
        torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-7)
    assert sum((a - b).abs().sum() for a, b in zip(first_order.grads, numeric)) > 1e-3


def test_spec_and_checkpoint_round_trip(tmp_path):
    config = LSTMGACConfig(num_layers=1, hidden_size=5, global_cells=2, share="tensor", p=5.0)
    opt = _perturbed(config)
    spec = json.loads(json.dumps(opt.spec()))
    assert spec == {"kind": "lstm-gac", **{k: getattr(config, k) for k in spec if k != "kind"}}
    rebuilt = from_spec(spec)
    assert isinstance(rebuilt, LSTMGAC) and rebuilt.config == config
    checkpoint_round_trip(opt, spec, LSTMGAC, tmp_path / "gac")


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"global_cells": 21}, "global_cells"),
        ({"global_cells": -1}, "global_cells"),
        ({"share": "layer"}, "share"),
        ({"preprocess": "log"}, "preprocess"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"output_scale": 0}, "output_scale"),
    ],
)
def test_bad_values_are_one_line_errors_naming_them(options, name):
    with pytest.raises(InvalidInput, match=f"^Invalid {name}: ") as error:
        LSTMGACConfig(**options)
    assert "\n" not in str(error.value) and repr(options[name]) in str(error.value)


def test_config_kind_lstm_gac_builds_it_and_writes_its_kind():
    config = load_config(None, ['optimizer.kind="lstm-gac"', "optimizer.global_cells=3"])
    assert config.optimizer == LSTMGACConfig(global_cells=3)
    assert isinstance(build_learned_optimizer(config), LSTMGAC)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["optimizer"]["kind"] == "lstm-gac"
    assert config_from_dict(data) == config


def test_the_preset_loads_and_meta_trains(tmp_path):
    """configs/quadratic-gac.toml at its own sizes, with fewer problems and epochs."""
    overrides = ["meta.epochs=6", "meta.validate_every=6", "meta.validation_tasks=1"]
    config = load_config(CONFIGS / "quadratic-gac.toml", [*overrides, "task.num_problems=16"])
    assert isinstance(config.optimizer, LSTMGACConfig)
    untrained = build_learned_optimizer(config)
    train(config, tmp_path / "run", quiet=True, tensorboard=False)
    trained = l2o.load(tmp_path / "run")
    assert isinstance(trained, LSTMGAC) and trained.spec() == untrained.spec()
    assert not torch.equal(trained.output.weight, untrained.output.weight)
    task = config.task.sample(12345)
    assert torch.isfinite(rollout(trained, task, config.meta.horizon).losses).all()
