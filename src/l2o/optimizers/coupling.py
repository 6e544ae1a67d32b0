"""Where coordinates share information: segments of the flat coordinate vector.

The optimizers that couple coordinates (the paper's LSTM with global averaging cells,
``l2o.optimizers.gac``; NTM-BFGS, ``l2o.optimizers.ntm_bfgs``; L-BFGS, ``l2o.optimizers.lbfgs``)
reduce over groups of coordinates: averages of cells, dot products of memory vectors. A group is
a *segment*: all coordinates of one problem (``share = "all"``: every parameter of a model) or
those of one parameter tensor of one problem (``share = "tensor"``).

Problems. Tasks solve ``num_problems`` independent problems at once, each parameter tensor
leading with the problem dimension (``l2o.tasks``): a coupled optimizer must never share across
problems. ``for_task`` (``l2o.optimizers.problems``) builds such an optimizer's state with
``init_state(params, problems=n)``, which the state keeps as ``"problems"``; with n > 1 every
tensor leads with the n problems, with n = 1 (the torch.optim front-end, a user's model) the
tensors are one problem's, shaped as they are. The coordinates stay in ``flatten`` order
(tensor-major), so a problem's coordinates may be scattered; ``Segments`` maps them to their
segment either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

from l2o.errors import InvalidInput

SHARING = ("all", "tensor")  # share over all parameters of a problem, or per parameter tensor


class Segments:
    """The segments of N coordinates: reductions over each segment and back.

    ``sum(x, dim)`` reduces the coordinate axis ``dim`` (0: rows, as (N, K) state; -1:
    columns, as the LSTM kernel's (hidden, N)) to one entry per segment (S); ``spread(s, dim)``
    gives each coordinate its segment's entry; ``mean`` is their composition, the segment's
    average at every coordinate. When the segments are contiguous blocks of one size in order
    (a single tensor, or one segment), these are reshapes; otherwise index_add / index_select.
    """

    def __init__(self, ids: list[int], lengths: list[int], device: torch.device) -> None:
        self.count = max(ids) + 1 if ids else 0
        self.total = sum(lengths)
        sizes = [0] * self.count
        for i, n in zip(ids, lengths):
            sizes[i] += n
        self._sizes = torch.tensor(sizes, dtype=torch.float64, device=device)
        in_order = ids == list(range(self.count)) and len(set(lengths)) <= 1
        self.block = lengths[0] if in_order and lengths else None  # equal blocks, in order
        self.ids = (
            None
            if self.block is not None
            else torch.repeat_interleave(
                torch.tensor(ids, device=device), torch.tensor(lengths, device=device)
            )
        )

    def sizes(self, like: Tensor) -> Tensor:
        """Coordinates per segment, (S,), in ``like``'s dtype."""
        return self._sizes.to(like.dtype)

    def sum(self, x: Tensor, dim: int) -> Tensor:
        """Sum over each segment along the coordinate axis ``dim`` (0 or -1): N -> S."""
        if self.block is not None:
            if dim == 0:
                return x.reshape(self.count, self.block, *x.shape[1:]).sum(1)
            return x.reshape(*x.shape[:-1], self.count, self.block).sum(-1)
        axis = dim % x.dim()
        shape = list(x.shape)
        shape[axis] = self.count
        return x.new_zeros(shape).index_add(axis, self.ids, x)

    def amax(self, x: Tensor) -> Tensor:
        """The largest entry of each segment of a vector x (N,): (S,)."""
        if self.block is not None:
            return x.reshape(self.count, self.block).amax(1)
        out = x.new_zeros(self.count)
        return out.scatter_reduce(0, self.ids, x, reduce="amax", include_self=False)

    def spread(self, s: Tensor, dim: int) -> Tensor:
        """Each coordinate's entry of its segment along axis ``dim`` (0 or -1): S -> N."""
        if self.block is not None:
            if dim == 0:
                expanded = s.unsqueeze(1).expand(self.count, self.block, *s.shape[1:])
                return expanded.reshape(self.total, *s.shape[1:])
            expanded = s.unsqueeze(-1).expand(*s.shape, self.block)
            return expanded.reshape(*s.shape[:-1], self.total)
        return s.index_select(dim % s.dim(), self.ids)

    def mean(self, x: Tensor, dim: int) -> Tensor:
        """The average of each segment, at every coordinate of it (same shape as ``x``)."""
        sizes = self.sizes(x)
        if dim == 0:
            sizes = sizes.reshape(-1, *([1] * (x.dim() - 1)))
        return self.spread(self.sum(x, dim) / sizes, dim)


def segments(
    tensors: Sequence[Tensor], problems: int, share: str, device: torch.device | None = None
) -> Segments:
    """The segments of the coordinates of ``tensors`` (``flatten`` order) when each leads with
    ``problems`` problems (module doc): one per problem (``share = "all"``) or one per tensor
    and problem (``"tensor"``)."""
    shapes = tuple(tuple(t.shape) for t in tensors)
    if problems > 1:
        for shape in shapes:
            if not shape or shape[0] != problems:
                raise InvalidInput(
                    f"a tensor of shape {shape} has no leading dimension of {problems} problems"
                )
    return _segments(shapes, problems, share, device or tensors[0].device)


@lru_cache(maxsize=64)
def _segments(
    shapes: tuple[tuple[int, ...], ...], problems: int, share: str, device: torch.device
) -> Segments:
    if share not in SHARING:
        raise InvalidInput(f"Invalid share: {share!r} (valid: {', '.join(SHARING)})")
    ids, lengths, names = [], [], {}
    for k, shape in enumerate(shapes):
        per_problem = 1
        for n in shape:
            per_problem *= n
        per_problem //= problems
        if per_problem == 0:
            continue
        for p in range(problems):
            key = p if share == "all" else (k, p)
            ids.append(names.setdefault(key, len(names)))
            lengths.append(per_problem)
    # Runs of one segment next to each other are one run (e.g. one problem's tensors).
    merged_ids: list[int] = []
    merged_lengths: list[int] = []
    for i, n in zip(ids, lengths):
        if merged_ids and merged_ids[-1] == i:
            merged_lengths[-1] += n
        else:
            merged_ids.append(i)
            merged_lengths.append(n)
    return Segments(merged_ids, merged_lengths, device)
