"""The MLP optimizer's step without autograd (l2o.optimizers.mlp, "The step without autograd"):
the same numbers as the differentiable reference step that meta-training runs, on vectors,
matrices, conv weights, scalars and empty tensors, large (in chunks of their own) and small
(packed several to a chunk), with and without the scheduler, over several steps; the new state
bit for bit, the updates to float rounding; through the torch.optim front-end with several
parameter groups and a state_dict save/load, where the state steps in place.

Tolerance: the two paths compute the same formulas in other orders (the normaliser folded into
the first layer's weights, bias corrections folded into weights), so their updates differ by
float32 rounding, which the MLP's sums amplify where they cancel (there the reference itself
is off the same step in float64 by up to 4e-4 of the update): a coordinate's updates agree to
``RTOL`` = 1e-5 of it plus ``ATOL`` = 2e-6 of the step's largest update, and the fast step is as
close to the same step in float64 as the reference is.
"""

import copy
import io

import pytest
import torch
from torch import Tensor, nn

from l2o.optim import LearnedOptimizer
from l2o.optimizers import MLPOptimizerConfig, PerParameterMLP, mlp
from l2o.optimizers.base import PER_TENSOR, detach_state
from l2o.optimizers.mlp import ChunkPlan

RTOL, ATOL = 1e-5, 2e-6

GENERALIST = MLPOptimizerConfig(
    hidden_size=16, num_layers=1, momentum=(0.5, 0.9, 0.99), time_scales=(), scheduler_size=8
)
CONFIGS = {
    "generalist": GENERALIST,
    "defaults": MLPOptimizerConfig(hidden_size=8),  # 2 layers, 5 momenta, 11 step features
    "plain": MLPOptimizerConfig(hidden_size=6, num_layers=3, momentum=(0.9,), nominal_lr=0.0),
    # the hypergradient adaptation of each tensor's rate, with and without the scheduler
    "adaptive": MLPOptimizerConfig(
        hidden_size=16, num_layers=1, momentum=(0.5, 0.9, 0.99), scheduler_size=8,
        lr_adaptation=0.3, adaptation_bound=1.5,
    ),
    "adaptive-alone": MLPOptimizerConfig(hidden_size=8, lr_adaptation=0.5),
    "hardtanh": MLPOptimizerConfig(
        hidden_size=16, num_layers=1, momentum=(0.5, 0.9, 0.99), scheduler_size=8,
        lr_adaptation=0.3, nominal_squash="hardtanh",
    ),
}  # fmt: skip
# A conv weight, a linear weight, vectors, a scalar, a (1, n) matrix (full second moment), an
# empty tensor; with chunks of 64 coordinates the first three are cut into chunks of their own
# (whole rows of a factored matrix), the rest packed several to a chunk.
SHAPES = [(8, 3, 3, 3), (20, 30), (200,), (5,), (), (1, 7), (0,), (6, 4), (3, 2, 2)]


def _woken(config: MLPOptimizerConfig, seed: int = 0) -> PerParameterMLP:
    """An optimizer whose every weight is moved from its start (the zero read-outs too), so
    that each term shapes the update; chunks of 64 coordinates."""
    torch.manual_seed(seed)
    opt = PerParameterMLP(config)
    with torch.no_grad():
        for p in opt.parameters():
            p.add_(0.3 * torch.randn_like(p))
    opt.chunk_size = 64
    return opt


def _reference(opt, grads, state, params):
    """The differentiable step (meta-training's), detached."""
    with torch.enable_grad():
        updates, state = opt.step(grads, state, params=params)
    return [u.detach() for u in updates], detach_state(state)


def _fast(opt, grads, state, params, in_place=False):
    with torch.no_grad():
        return opt.step(grads, state, params=params, in_place=in_place)


def _assert_updates_close(got: list[Tensor], want: list[Tensor]) -> None:
    scale = max(w.abs().max().item() for w in want if w.numel())
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL * scale)


def _assert_state_equal(got, want) -> None:
    """The per-coordinate state bit for bit; the scheduler's (from the normaliser's sums,
    taken in another order) to float rounding."""
    assert got["step"] == want["step"]
    for key in ("momentum", "rms", "factored"):
        assert len(got[key]) == len(want[key])
        for a, b in zip(got[key], want[key]):
            assert torch.equal(a, b), key
    assert (PER_TENSOR in got) == (PER_TENSOR in want)
    if PER_TENSOR in want:
        for key, value in want[PER_TENSOR].items():
            torch.testing.assert_close(got[PER_TENSOR][key], value, rtol=1e-4, atol=1e-6)


def _gradients(step: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    # Tensors whose gradients differ by orders of magnitude, as a network's do.
    return [10.0 ** (k % 5 - 4) * torch.randn(s, generator=g) for k, s in enumerate(SHAPES)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_step_is_the_reference_step(name):
    opt = _woken(CONFIGS[name])
    params = [torch.randn(s) for s in SHAPES]
    ref_state, fast_state = opt.init_state(params), opt.init_state(params)
    for step in range(5):
        grads = _gradients(step)
        want, ref_state = _reference(opt, grads, ref_state, params)
        got, fast_state = _fast(opt, grads, fast_state, params)
        _assert_updates_close(got, want)
        _assert_state_equal(fast_state, ref_state)
        assert any(u.abs().max() > 0 for u in got if u.numel())
        params = [p + u for p, u in zip(params, want)]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_step_is_as_close_to_float64_as_the_reference(name):
    """Scale-free: the fast step's error from the same step in float64 is the reference's."""
    opt = _woken(CONFIGS[name])
    wide = copy.deepcopy(opt).double()
    params = [torch.randn(s) for s in SHAPES]
    ref_state, fast_state = opt.init_state(params), opt.init_state(params)
    wide_state = wide.init_state(params)
    for step in range(4):
        grads = _gradients(step)
        want, ref_state = _reference(opt, grads, ref_state, params)
        got, fast_state = _fast(opt, grads, fast_state, params)
        exact, wide_state = _reference(
            wide, [g.double() for g in grads], wide_state, [p.double() for p in params]
        )
        for g, w, e in zip(got, want, exact):
            if e.numel():
                rms = e.pow(2).mean().sqrt()
                reference_error = ((w.double() - e).abs().max() / rms).item()
                fast_error = ((g.double() - e).abs().max() / rms).item()
                assert fast_error <= 2 * reference_error + 1e-5, (step, g.shape)
        params = [p + u for p, u in zip(params, want)]


def test_chunk_size_and_packing_do_not_change_the_numbers_beyond_rounding():
    opt = _woken(GENERALIST)
    params = [torch.randn(s) for s in SHAPES]
    grads = _gradients(0)
    results = []
    for chunk_size in (7, 64, 100_000):  # every tensor cut / some / all packed in one chunk
        opt.chunk_size = chunk_size
        results.append(_fast(opt, grads, opt.init_state(params), params))
    (first, first_state), *rest = results
    for updates, state in rest:
        _assert_updates_close(updates, first)
        _assert_state_equal(state, first_state)


def test_adaptation_cosines_in_pieces_are_the_reference_ones(monkeypatch):
    # Pieces of 50 coordinates: the conv weight (216) and the vector (200) in several pieces,
    # whose sums add up to each tensor's cosine (here the default pieces hold each tensor whole).
    opt = _woken(CONFIGS["adaptive"])
    params = [torch.randn(s) for s in SHAPES]
    state = opt.init_state(params)
    _, state = _reference(opt, _gradients(0), state, params)
    grads = [g.reshape(-1) for g in _gradients(1)]  # flat, one per tensor
    args = (grads, state["momentum"][1], state["rms"][0], 1)  # m^(0.9), v, step
    with torch.enable_grad():
        want = opt._cosines(*args)
    monkeypatch.setattr(mlp, "COSINE_PIECE", 50)
    with torch.no_grad():
        got = opt._cosines(*args)
    assert want.abs().max() > 0.01
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_chunk_plan_covers_every_coordinate_once_in_whole_rows():
    shapes = [torch.Size(s) for s in SHAPES]
    for chunk_size in (1, 7, 64, 1000):
        plan = ChunkPlan.build(shapes, chunk_size)
        position = 0
        for chunk in plan.chunks:
            assert chunk.start == position and chunk.stop - chunk.start <= plan.width
            column = 0
            for s in chunk.segments:
                assert s.columns == slice(column, column + s.stop - s.start)
                assert plan.offsets[s.tensor] + s.start == chunk.start + column
                column += s.stop - s.start
                if chunk.own and len(shapes[s.tensor]) >= 2 and shapes[s.tensor][0] >= 2:
                    cols = shapes[s.tensor].numel() // shapes[s.tensor][0]
                    assert s.start % cols == 0 and s.stop % cols == 0  # whole rows
            assert chunk.stop - chunk.start == column
            if not chunk.own:
                assert column <= chunk_size
            position = chunk.stop
        assert position == sum(s.numel() for s in shapes)


def test_fast_step_leaves_its_inputs_alone_unless_in_place():
    opt = _woken(GENERALIST)
    params = [torch.randn(s) for s in SHAPES]
    state = opt.init_state(params)
    grads = _gradients(0)
    _, state = _fast(opt, grads, state, params)
    before = copy.deepcopy(state)
    _, after = _fast(opt, grads, state, params)
    assert all(torch.equal(a, b) for a, b in zip(state["momentum"], before["momentum"]))
    assert torch.equal(state["rms"][0], before["rms"][0])
    assert after["momentum"][0].data_ptr() != state["momentum"][0].data_ptr()
    # In place: the same numbers, written into the state's own tensors.
    _, expected = _fast(opt, grads, copy.deepcopy(state), params)
    pointer = state["momentum"][0].data_ptr()
    _, stepped = _fast(opt, grads, state, params, in_place=True)
    assert stepped["momentum"][0].data_ptr() == pointer
    _assert_state_equal(stepped, expected)
    # A fresh state's momenta are one zero tensor (features.Momentum.init): not written in
    # place, where one would overwrite the others.
    fresh = opt.init_state(params)
    assert fresh["momentum"][0] is fresh["momentum"][1]
    _, first = _fast(opt, grads, fresh, params, in_place=True)
    _, want = _reference(opt, grads, opt.init_state(params), params)
    _assert_state_equal(first, want)


def test_float64_gradients_step_in_the_optimizers_dtype():
    opt = _woken(GENERALIST)
    params = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    grads = [g.double() for g in _gradients(0)]
    want, _ = _reference(opt, grads, opt.init_state(params), params)
    got, _ = _fast(opt, grads, opt.init_state(params), params)
    assert all(u.dtype == torch.float64 for u in got)
    _assert_updates_close(got, want)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.fc(torch.tanh(self.conv(x)).flatten(1))


def test_front_end_steps_like_the_reference_with_groups_and_a_state_dict_round_trip():
    """Two parameter groups, one with weight decay and another lr, both read by one
    optimizer with the scheduler; the front-end (fast path, state stepped in place) against the
    reference step on each group's parameters; saved and loaded half way."""
    opt = _woken(GENERALIST)
    torch.manual_seed(4)
    net = _Net()
    groups = [
        {"params": [net.conv.weight, net.conv.bias], "lr": 0.5, "weight_decay": 0.01},
        {"params": [net.fc.weight, net.fc.bias, net.scale]},
    ]
    front = LearnedOptimizer(groups, optimizer=opt)
    theta = [[p.detach().clone() for p in g["params"]] for g in groups]
    states = [opt.init_state(ps) for ps in theta]
    x, y = torch.randn(16, 3, 6, 6), torch.randn(16, 10)
    for step in range(6):
        if step == 3:
            buffer = io.BytesIO()
            torch.save(front.state_dict(), buffer)
            buffer.seek(0)
            front = LearnedOptimizer(groups, optimizer=opt)
            front.load_state_dict(torch.load(buffer, weights_only=True))
        front.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        grads = [[p.grad.clone() for p in g["params"]] for g in groups]
        front.step()
        for i, (group, lr, decay) in enumerate([(0, 0.5, 0.01), (1, 1.0, 0.0)]):
            updates, states[i] = _reference(opt, grads[group], states[i], theta[i])
            theta[i] = [p * (1 - lr * decay) + lr * u for p, u in zip(theta[i], updates)]
        for g, want in zip(groups, theta):
            for p, w in zip(g["params"], want):
                torch.testing.assert_close(p.detach(), w, rtol=1e-5, atol=1e-6)
        # The front-end's state is the reference's: rows of the per-coordinate state stepped
        # in place (bit for bit), the scheduler's to rounding.
        for g, state in zip(groups, states):
            merged = front.state[g["params"][0]]
            assert merged["step"] == state["step"] == step + 1
            rows = merged["momentum"][0]
            assert torch.equal(rows, state["momentum"][0][: rows.numel()])
            torch.testing.assert_close(
                merged[PER_TENSOR]["log_lr"], state[PER_TENSOR]["log_lr"][:1], rtol=1e-4, atol=1e-6
            )


def test_front_end_state_is_stepped_in_place_and_a_loaded_state_is_a_copy():
    opt = _woken(GENERALIST)
    torch.manual_seed(5)
    net = _Net()
    front = LearnedOptimizer(net.parameters(), optimizer=opt)
    x, y = torch.randn(8, 3, 6, 6), torch.randn(8, 10)

    def train(o: LearnedOptimizer, steps: int) -> None:
        for _ in range(steps):
            o.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            o.step()

    train(front, 2)  # the first step allocates the state's rows; from the second, in place
    state = front.state[net.fc.weight]["momentum"][1]
    pointer, before = state.data_ptr(), state.clone()
    train(front, 1)
    after = front.state[net.fc.weight]["momentum"][1]
    assert after.data_ptr() == pointer and not torch.equal(after, before)
    # load_state_dict copies: stepping one front-end leaves the other's state alone.
    other = LearnedOptimizer(net.parameters(), optimizer=opt)
    other.load_state_dict(front.state_dict())
    kept = other.state[net.fc.weight]["rms"][0].clone()
    train(front, 1)
    assert torch.equal(other.state[net.fc.weight]["rms"][0], kept)
