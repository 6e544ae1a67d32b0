"""NTM-BFGS and NTM-L-BFGS (l2o.optimizers.ntm_bfgs): memory writes and reads against a hand
computation on 3 coordinates, the memory's shape, history and reset, the untrained optimizer as
an LSTM+GAC, permutation equivariance, problems kept apart, the second-order meta-gradient
against finite differences, the torch.optim front-end against the unroll, specs, configs and
the preset."""

import json
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
from l2o.optimizers import LSTMGAC, NTMBFGS, LSTMGACConfig, NTMBFGSConfig, from_spec
from l2o.optimizers.coupling import segments
from l2o.optimizers.ntm_bfgs import read, write
from l2o.runs import build_learned_optimizer, train
from l2o.tasks import QuadraticFamily
from learned_checks import (
    checkpoint_round_trip,
    finite_difference_meta_gradient,
    front_end_matches_direct_steps,
    tiny_quadratic_task,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _perturbed(config: NTMBFGSConfig | None = None, scale: float = 0.3) -> NTMBFGS:
    """An NTM-BFGS whose weights, those on read results included, are off their initialisation."""
    opt = NTMBFGS(config or NTMBFGSConfig(hidden_size=6, global_cells=2, preprocess="none"))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return opt


def test_write_and_read_are_outer_products_and_a_matrix_product_on_3_coordinates():
    a = torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.0, 3.0]])  # two write heads' left vectors
    b = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [4.0, 1.0]])  # ... and right vectors
    r = torch.tensor([[2.0], [1.0], [-1.0]])  # one read vector
    empty = torch.zeros(3, 0)
    left, right = write(empty, empty, a, b, history=0)
    assert torch.equal(left, a) and torch.equal(right, b)
    # M = (1/3) (a1 b1^T + a2 b2^T), by hand: a1 b1^T = [[1,-1,4],[2,-2,8],[0,0,0]],
    # a2 b2^T = [[1,0,0.5],[-2,0,-1],[6,0,3]]
    M = torch.tensor([[2.0, -1.0, 4.5], [0.0, -2.0, 7.0], [6.0, 0.0, 3.0]]) / 3
    one = segments([torch.zeros(3)], 1, "all")
    torch.testing.assert_close(read(left, right, r, one), M @ r)
    torch.testing.assert_close(M @ r, torch.tensor([[-1.5], [-9.0], [9.0]]) / 3)
    # Per tensor: coordinate 0 alone (a tensor of 1), coordinates 1 and 2 (a tensor of 2): a
    # block-diagonal memory, each block averaged over its own coordinates.
    per_tensor = segments([torch.zeros(1), torch.zeros(2)], 1, "tensor")
    blocks = torch.zeros(3, 3)
    outer = a @ b.t()
    blocks[0, 0] = outer[0, 0]
    blocks[1:, 1:] = outer[1:, 1:] / 2
    torch.testing.assert_close(read(left, right, r, per_tensor), blocks @ r)
    # A second write accumulates; with a history of one step it replaces the first.
    left2, right2 = write(left, right, 2 * a, b, history=0)
    torch.testing.assert_close(read(left2, right2, r, one), 3 * M @ r)
    kept = write(left, right, 2 * a, b, history=1)
    assert torch.equal(kept[0], 2 * a) and torch.equal(kept[1], b)
    assert torch.equal(read(empty, empty, r, one), torch.zeros(3, 1))


def test_a_step_is_the_papers_read_and_write_on_3_coordinates_by_hand():
    config = NTMBFGSConfig(hidden_size=4, global_cells=1, write_heads=2, preprocess="none")
    opt = _perturbed(config).double()
    grads = [
        torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64),
        torch.tensor([0.3, 0.2, -0.7], dtype=torch.float64),
    ]
    state = opt.init_state([torch.zeros(3, dtype=torch.float64)])
    M = torch.zeros(3, 3, dtype=torch.float64)
    V, v = opt.heads.weight, opt.heads.bias
    w, w0 = opt.output.weight, opt.output.bias
    with torch.no_grad():
        for t, g in enumerate(grads, start=1):
            (update,), state = opt.step([g], state)
            h = state["h"][-1]  # (3, hidden): the controller's top layer at this step
            sigma = g.pow(2).mean().sqrt()  # the gradient's RMS over the 3 coordinates
            heads = torch.cat([h, (g / sigma).unsqueeze(1)], 1) @ V.t() + v  # [r, a1, a2]
            r, a, b = heads[:, :1], heads[:, 1:3], heads[:, 3:]
            M = M + sum(torch.outer(a[:, k], b[:, k]) for k in range(2)) / 3
            i = M @ r
            torch.testing.assert_close(state["reads"], i)
            expected = 0.1 * (torch.cat([h, i], 1) @ w.t() + w0).squeeze(1)
            torch.testing.assert_close(update, expected)
            assert state["left"].shape == state["right"].shape == (3, 2 * t)
            torch.testing.assert_close(state["left"][:, -2:], a)
            torch.testing.assert_close(state["right"][:, -2:], b)
    assert M.abs().min() > 0 and state["reads"].abs().min() > 1e-3


def test_the_memory_keeps_its_history_and_a_fresh_state_is_empty():
    params = [torch.zeros(4, 2), torch.zeros(3)]
    full = _perturbed(NTMBFGSConfig(hidden_size=5, global_cells=1, write_heads=3))
    limited = _perturbed(NTMBFGSConfig(hidden_size=5, global_cells=1, write_heads=3, history=2))
    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(4)]
    states = {"full": full.init_state(params), "limited": limited.init_state(params)}
    assert states["full"]["left"].shape == (11, 0) and states["limited"]["left"].shape == (11, 6)
    assert not states["limited"]["left"].any() and not states["limited"]["reads"].any()
    writes = []
    with torch.no_grad():
        for t, step_grads in enumerate(grads, start=1):
            _, states["full"] = full.step(step_grads, states["full"])
            _, states["limited"] = limited.step(step_grads, states["limited"])
            writes.append(states["limited"]["left"][:, -3:])
            assert states["full"]["left"].shape == (11, 3 * t)
            assert states["limited"]["left"].shape == states["limited"]["right"].shape == (11, 6)
    # NTM-L-BFGS keeps the last 2 steps' writes, oldest first.
    assert torch.equal(states["limited"]["left"], torch.cat(writes[-2:], 1))
    assert full.config.state_floats(4) == 2 * 2 * 5 + 1 + 2 * 3 * 4
    assert limited.config.state_floats(4) == 2 * 2 * 5 + 1 + 2 * 3 * 2
    fresh = limited.init_state(params)
    assert not fresh["left"].any() and not fresh["right"].any() and fresh["step"] == 0


def test_untrained_it_is_an_lstm_gac_whose_memory_is_off():
    """The weights that read a read result start at zero (our choice): the same updates as an
    LSTM+GAC with the same controller and read-out."""
    config = NTMBFGSConfig(hidden_size=5, global_cells=2)
    ntm = NTMBFGS(config)
    gac = LSTMGAC(LSTMGACConfig(hidden_size=5, global_cells=2))
    with torch.no_grad():
        gac.cells[0].weight.copy_(
            torch.cat([ntm.cells[0].weight[:, :2], ntm.cells[0].weight[:, 4:]], 1)
        )
        gac.cells[0].bias.copy_(ntm.cells[0].bias)
        gac.cells[1].load_state_dict(ntm.cells[1].state_dict())
        gac.output.weight.copy_(ntm.output.weight[:, :5])
        gac.output.bias.copy_(ntm.output.bias)
    params = [torch.zeros(3, 4), torch.zeros(2)]
    g = torch.Generator().manual_seed(2)
    a, b = ntm.init_state(params), gac.init_state(params)
    with torch.no_grad():
        for _ in range(3):
            grads = [torch.randn(p.shape, generator=g) for p in params]
            (u1, u2), a = ntm.step(grads, a)
            (v1, v2), b = gac.step(grads, b)
            torch.testing.assert_close(u1, v1, rtol=0, atol=1e-7)
            torch.testing.assert_close(u2, v2, rtol=0, atol=1e-7)
    assert a["reads"].abs().max() > 0  # the memory runs, unread


@pytest.mark.parametrize("history", [0, 2])
def test_permuting_the_coordinates_permutes_the_updates(history):
    opt = _perturbed(NTMBFGSConfig(hidden_size=6, global_cells=2, history=history))
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(9, generator=g) for _ in range(4)]
    s1, s2 = opt.init_state([torch.zeros(9)]), opt.init_state([torch.zeros(9)])
    with torch.no_grad():
        for grad in grads:
            (u1,), s1 = opt.step([grad], s1)
            (u2,), s2 = opt.step([grad[perm]], s2)
            torch.testing.assert_close(u1[perm], u2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("history", [0, 3])
def test_a_tasks_batched_problems_are_stepped_apart_as_if_alone(history):
    opt = _perturbed(NTMBFGSConfig(hidden_size=6, global_cells=2, history=history))
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
    assert not torch.equal(core.state.params[0], task.init_params()[0])


@pytest.mark.parametrize("share", ["all", "tensor"])
def test_problems_of_several_tensors_are_stepped_apart_as_if_alone(share):
    opt = _perturbed(NTMBFGSConfig(hidden_size=6, global_cells=2, share=share, history=2))
    task = TwoTensorTask()
    core = unroll(task, opt, init_unroll(task, opt), weights=[1.0] * 5)
    for ours, alone in zip(core.state.params, run_per_problem(opt, task, 5)):
        torch.testing.assert_close(ours.detach(), alone)


def test_learned_optimizer_on_a_module_gives_the_updates_of_direct_step_calls():
    opt = _perturbed(NTMBFGSConfig(hidden_size=6, global_cells=2, history=2))
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    front, _, _ = front_end_matches_direct_steps(opt, model, 4)
    saved = front.state_dict()
    assert saved["param_groups"][0]["optimizer"]["kind"] == "ntm-bfgs"
    again = LearnedOptimizer(model.parameters(), optimizer=opt)
    again.load_state_dict(saved)
    assert again.state[model[0].weight]["left"].shape == (40, 6)


@pytest.mark.parametrize("history", [0, 2])
def test_second_order_meta_gradient_matches_central_finite_differences(history):
    task = tiny_quadratic_task()
    config = NTMBFGSConfig(
        num_layers=1, hidden_size=3, global_cells=1, write_heads=1, history=history
    )
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
    heads = dict(zip([n for n, _ in opt.named_parameters()], estimate.grads))["heads.weight"]
    assert heads.abs().sum() > 0  # the meta-gradient reaches the memory's heads


def test_spec_and_checkpoint_round_trip(tmp_path):
    config = NTMBFGSConfig(hidden_size=5, global_cells=1, read_heads=2, write_heads=2, history=4)
    opt = _perturbed(config)
    spec = json.loads(json.dumps(opt.spec()))
    assert spec == {"kind": "ntm-bfgs", **{k: getattr(config, k) for k in spec if k != "kind"}}
    rebuilt = from_spec(spec)
    assert isinstance(rebuilt, NTMBFGS) and rebuilt.config == config
    checkpoint_round_trip(opt, spec, NTMBFGS, tmp_path / "ntm")


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"read_heads": 0}, "read_heads"),
        ({"write_heads": 1.5}, "write_heads"),
        ({"history": -1}, "history"),
        ({"history": True}, "history"),
        ({"global_cells": 30}, "global_cells"),
        ({"share": "model"}, "share"),
    ],
)
def test_bad_values_are_one_line_errors_naming_them(options, name):
    with pytest.raises(InvalidInput, match=f"^Invalid {name}: ") as error:
        NTMBFGSConfig(**options)
    assert "\n" not in str(error.value) and repr(options[name]) in str(error.value)


def test_config_kind_ntm_bfgs_builds_it_and_writes_its_kind():
    config = load_config(None, ['optimizer.kind="ntm-bfgs"', "optimizer.history=5"])
    assert config.optimizer == NTMBFGSConfig(history=5)
    assert isinstance(build_learned_optimizer(config), NTMBFGS)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["optimizer"]["kind"] == "ntm-bfgs"
    assert config_from_dict(data) == config


def test_the_preset_loads_and_meta_trains(tmp_path):
    """configs/quadratic-ntm-bfgs.toml at its own sizes, with fewer problems and epochs."""
    overrides = ["meta.epochs=6", "meta.validate_every=6", "meta.validation_tasks=1"]
    config = load_config(CONFIGS / "quadratic-ntm-bfgs.toml", [*overrides, "task.num_problems=16"])
    assert isinstance(config.optimizer, NTMBFGSConfig)
    untrained = build_learned_optimizer(config)
    train(config, tmp_path / "run", quiet=True, tensorboard=False)
    trained = l2o.load(tmp_path / "run")
    assert isinstance(trained, NTMBFGS) and trained.spec() == untrained.spec()
    assert not torch.equal(trained.heads.weight, untrained.heads.weight)
    assert trained.output.weight[:, -config.optimizer.read_heads :].abs().sum() > 0  # reads used
    task = config.task.sample(12345)
    assert torch.isfinite(rollout(trained, task, config.meta.horizon).losses).all()
