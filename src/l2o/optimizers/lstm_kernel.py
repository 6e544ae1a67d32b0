"""The LSTM layer of the coordinatewise optimizers, written for speed: a custom autograd Function
with its backward pass written out, and a runner that steps the coordinates in chunks when no
graph is kept.

Tensors are transposed, one coordinate per column (x: (input_size, N), h and c: (hidden, N)), so
that each gate is a contiguous block of memory: elementwise ops on the column slices of an
(N, 4 hidden) tensor are many times slower on CPU, and they dominate a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer over all coordinates, with its backward pass written out.

    x (input_size, N), h and c (hidden, N), weight (4 hidden, input_size + hidden), bias
    (4 hidden,) -> h' and c', each (hidden, N):

        [i; f; g; o] = W [x; h] + b
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)        h' = sigmoid(o) * tanh(c')

    Autograd through the same ops gives the same numbers (tested against torch.nn.LSTM and by
    gradcheck); writing the backward by hand keeps the four gate gradients in one block of memory
    that the weight gradient's matmul reads directly (autograd concatenates them, and copies),
    and saves the activated gates instead of every intermediate. The MNIST preset's meta-training
    went from 1.10 to 0.96 s per epoch (2800 epochs in 51.5 min before, 3300 in 52.9 min after,
    benchmarks/mnist/results/mnist.md then and now). The backward is not itself differentiable (meta-
    gradients need first derivatives of the LSTM only, second-order meta-training included).
    """

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor):
        hidden = h.shape[0]
        xh = torch.cat([x, h])
        gates = torch.addmm(bias.unsqueeze(1), weight, xh)
        gates[: 2 * hidden].sigmoid_()  # i, f
        gates[2 * hidden : 3 * hidden].tanh_()  # g
        gates[3 * hidden :].sigmoid_()  # o
        i, f, g, o = gates.chunk(4)
        c_new = torch.addcmul(f * c, i, g)
        tanh_c = torch.tanh(c_new)
        h_new = o * tanh_c
        ctx.save_for_backward(xh, gates, c, tanh_c, weight)
        return h_new, c_new

    @staticmethod
    @once_differentiable
    def backward(ctx, dh: Tensor | None, dc_new: Tensor | None):
        xh, gates, c, tanh_c, weight = ctx.saved_tensors
        i, f, g, o = gates.chunk(4)
        dgates = torch.empty_like(gates)
        di, df, dg, do = dgates.chunk(4)
        if dh is None:
            dh = torch.zeros_like(c)
        # dL/dc' = dL/dh' o (1 - tanh(c')^2) + dL/dc' from the next step
        dc = torch.ops.aten.tanh_backward(torch.mul(dh, o, out=do), tanh_c)
        if dc_new is not None:
            dc += dc_new
        # gate gradients before the nonlinearities: sigmoid' = s (1 - s), tanh' = 1 - t^2
        torch.ops.aten.sigmoid_backward.grad_input(torch.mul(dh, tanh_c, out=do), o, grad_input=do)
        torch.ops.aten.sigmoid_backward.grad_input(torch.mul(dc, g, out=di), i, grad_input=di)
        torch.ops.aten.sigmoid_backward.grad_input(torch.mul(dc, c, out=df), f, grad_input=df)
        torch.ops.aten.tanh_backward.grad_input(torch.mul(dc, i, out=dg), g, grad_input=dg)
        dweight = dgates @ xh.t() if ctx.needs_input_grad[3] else None
        dbias = dgates.sum(1) if ctx.needs_input_grad[4] else None
        dxh = weight.t() @ dgates  # rows: x's, then h's
        n_in = xh.shape[0] - c.shape[0]
        return dxh[:n_in], dxh[n_in:], dc.mul_(f), dweight, dbias


Columns = Tensor | list[Tensor]


def in_column_chunks(
    fn: Callable[..., Sequence[Columns]], args: Sequence[Columns], chunk_size: int
) -> list[Columns]:
    """``fn(*args)`` computed on at most ``chunk_size`` coordinates at a time, for a step taken
    without autograd: each chunk's temporaries (an LSTM's gates: 4 hidden floats per coordinate
    and layer) stay in cache and out of the peak memory (benchmarks/speed/results/speed.md:
    the cost of a step by size).

    ``args`` and the results of ``fn``: tensors (..., N) with one coordinate per column, or
    lists of them. Each chunk's results are written into their columns of the full results, so
    the result is that of ``fn(*args)`` on all N columns at once.
    """
    n = (args[0] if isinstance(args[0], Tensor) else args[0][0]).shape[-1]
    results: list[Columns] = []
    for start in range(0, n, chunk_size):
        cols = slice(start, start + chunk_size)
        part = fn(*(_columns(a, cols) for a in args))
        if not results:
            results = [
                [t.new_empty(*t.shape[:-1], n) for t in p]
                if isinstance(p, list)
                else p.new_empty(*p.shape[:-1], n)
                for p in part
            ]
        for full, p in zip(results, part):
            for f, t in zip(full, p) if isinstance(p, list) else [(full, p)]:
                f[..., cols] = t
    return results


def _columns(value: Columns, cols: slice) -> Columns:
    if isinstance(value, list):
        return [t[..., cols] for t in value]
    return value[..., cols]


def lstm_cells(input_size: int, hidden_size: int, num_layers: int) -> nn.ModuleList:
    """One fused linear map per layer computing the four gates from [input, h]:
    gates = W [x_t, h_{t-1}] + b, split as (input i, forget f, cell g, output o)."""
    sizes = [input_size] + [hidden_size] * num_layers
    return nn.ModuleList(
        nn.Linear(sizes[k] + hidden_size, 4 * hidden_size) for k in range(num_layers)
    )


def reset_lstm_cells(cells: nn.ModuleList, hidden_size: int, forget_bias: float) -> None:
    """The usual LSTM initialisation: U(-1/sqrt(H), 1/sqrt(H)) weights, zero biases but the
    forget gate's, ``forget_bias``."""
    bound = 1.0 / math.sqrt(hidden_size)
    with torch.no_grad():
        for cell in cells:
            cell.weight.uniform_(-bound, bound)
            cell.bias.zero_()
            cell.bias[hidden_size : 2 * hidden_size].fill_(forget_bias)


def zero_hidden(hidden_size: int, n: int, ref: Tensor) -> Tensor:
    """(N, hidden) zeros like ``ref``, stored unit-major (the transpose of a contiguous
    (hidden, N) tensor): the kernel works on (hidden, N)."""
    return torch.zeros(hidden_size, n, dtype=ref.dtype, device=ref.device).t()


def lstm_no_grad(
    x: Tensor,
    hs: Sequence[Tensor],
    cs: Sequence[Tensor],
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    head: Callable[[Tensor, slice], Tensor],
    chunk_size: int,
    in_place: bool = False,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The LSTM layers and the output head on N coordinates without autograd: the fast path of a
    step outside meta-training (``LearnedOptimizer``, rollouts). The same maths as
    ``LSTMLayer.forward`` layer after layer, equal to it within float rounding (tested).

    x (input_size, N), h and c (hidden, N) per layer (any strides; h and c may be bfloat16: they
    are read into float32 and the new ones rounded back), each layer's weight (4 hidden,
    in + hidden) and bias (4 hidden,); ``head(h_top, cols)`` maps the top layer's new h of the
    columns ``cols`` (hidden, n), float32, to their update (n,). Returns the update (N,) and the
    new h and c of every layer, (hidden, N) each; with ``in_place`` (a caller that owns the
    state and drops the old one) written over the old h and c, in whatever layout and dtype
    they have, which then must not share memory with each other.

    What makes it faster than ``in_column_chunks`` over ``LSTMLayer``:
    - each chunk's temporaries live in buffers made once per step: the chunk stays in cache and
      no memory is allocated (at 1M coordinates fresh (hidden, N) tensors cost as much in page
      faults as the LSTM's arithmetic);
    - the bias is a column of the weight, read against a row of ones: no copy of it per chunk;
    - the gates' rows are reordered [i; f; o; g]: one sigmoid and one tanh per layer;
    - with ``in_place`` the new state is written over the old: no new (hidden, N) tensors.
    """
    n = x.shape[1]
    hidden = hs[0].shape[0]
    dtype = weights[0].dtype
    # [W | b] per layer, its rows reordered [i; f; o; g]: one sigmoid, then one tanh
    order = torch.cat([torch.arange(2 * hidden), torch.arange(3 * hidden, 4 * hidden)])
    order = torch.cat([order, torch.arange(2 * hidden, 3 * hidden)]).to(x.device)
    layers = [
        torch.cat([weight.detach(), bias.detach().unsqueeze(1)], dim=1).index_select(0, order)
        for weight, bias in zip(weights, biases)
    ]
    if in_place:
        new_hs, new_cs = list(hs), list(cs)
    else:
        new_hs = [x.new_empty(hidden, n, dtype=h.dtype) for h in hs]
        new_cs = [x.new_empty(hidden, n, dtype=c.dtype) for c in cs]
    update = x.new_empty(n, dtype=dtype)
    width = min(chunk_size, n)
    gates_buffer = x.new_empty(4 * hidden, width, dtype=dtype)
    c_buffer = x.new_empty(hidden, width, dtype=dtype)
    tanh_buffer = x.new_empty(hidden, width, dtype=dtype)
    h_buffers = [x.new_empty(hidden, width, dtype=dtype) for _ in hs]
    xh_buffers = [x.new_ones(wb.shape[1], width, dtype=dtype) for wb in layers]  # [x; h; 1]
    for start in range(0, n, chunk_size):
        cols = slice(start, start + chunk_size)
        m = min(chunk_size, n - start)
        inp = x[:, cols]
        for k, wb in enumerate(layers):
            xh = xh_buffers[k][:, :m]
            gates = gates_buffer[:, :m]
            tanh_c = tanh_buffer[:, :m]
            n_in = inp.shape[0]
            xh[:n_in] = inp
            xh[n_in:-1] = hs[k][:, cols]
            # [i; f; o; g] = [W | b] [x; h; 1], activated
            torch.mm(wb, xh, out=gates)
            gates[: 3 * hidden].sigmoid_()
            gates[3 * hidden :].tanh_()
            i, f, o, g = gates.chunk(4)
            # c' = s(f) c + s(i) tanh(g),  h' = s(o) tanh(c')
            # computed in float32 buffers, then stored (rounded to a bfloat16 state): each op
            # sees the same layout whatever the state's, and gives the same numbers
            c_new, h_new = c_buffer[:, :m], h_buffers[k][:, :m]
            torch.mul(f, cs[k][:, cols], out=tanh_c)
            torch.addcmul(tanh_c, i, g, out=c_new)
            torch.tanh(c_new, out=tanh_c)
            torch.mul(o, tanh_c, out=h_new)
            new_cs[k][:, cols] = c_new
            new_hs[k][:, cols] = h_new
            inp = h_new
        update[cols] = head(inp, cols)
    return update, new_hs, new_cs
