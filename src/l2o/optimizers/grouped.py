"""Drive different parameters with different optimizers, e.g. weights by an LSTM, biases by Adam.

``GroupedOptimizer`` is itself a ``StepOptimizer``, so a mix of learned and hand-designed
optimizers runs in the same differentiable unroll and the same evaluation code as a single one.
Each learned group keeps its own weights under its group name (``groups.<name>.*``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from l2o.errors import InvalidInput
from l2o.optimizers.base import OptState, StepOptimizer, call_step


def assign_groups(
    param_names: Sequence[str], patterns: Mapping[str, str | Sequence[str]]
) -> list[str]:
    """Give each parameter the group whose glob pattern(s) match its name.

    ``patterns`` maps a group name to one glob (``"*.weight"``) or a list of globs. Every
    parameter must match exactly one group, and every group at least one parameter.
    Returns the group name of each parameter, in order.
    """
    globs = {g: [p] if isinstance(p, str) else list(p) for g, p in patterns.items()}
    assignment = []
    for name in param_names:
        hits = [g for g, ps in globs.items() if any(fnmatch.fnmatchcase(name, p) for p in ps)]
        if not hits:
            raise InvalidInput(
                f"parameter {name!r} matches no group pattern (groups: {dict(globs)})"
            )
        if len(hits) > 1:
            raise InvalidInput(f"parameter {name!r} matches several groups: {', '.join(hits)}")
        assignment.append(hits[0])
    empty = [g for g in globs if g not in assignment]
    if empty:
        raise InvalidInput(f"group(s) {', '.join(empty)} match no parameter of {list(param_names)}")
    return assignment


class GroupedOptimizer(StepOptimizer):
    """Route each parameter tensor to the optimizer of its group.

    ``assignment[i]`` is the group name of parameter ``i``; ``optimizers`` maps group names to
    optimizers. Every optimizer sees its own parameters only, in their original order.
    """

    def __init__(self, optimizers: Mapping[str, StepOptimizer], assignment: Sequence[str]) -> None:
        super().__init__()
        unknown = sorted(set(assignment) - set(optimizers))
        if unknown:
            raise InvalidInput(f"no optimizer for group(s) {unknown}; groups: {sorted(optimizers)}")
        unused = sorted(set(optimizers) - set(assignment))
        if unused:
            raise InvalidInput(f"optimizer group(s) {unused} have no parameters")
        self.groups = nn.ModuleDict(dict(optimizers))
        self.assignment = list(assignment)

    def _split(self, tensors: Sequence[Tensor]) -> dict[str, list[Tensor]]:
        if len(tensors) != len(self.assignment):
            raise InvalidInput(
                f"expected {len(self.assignment)} tensors (one per assigned parameter), "
                f"got {len(tensors)}"
            )
        out: dict[str, list[Tensor]] = {g: [] for g in self.groups}
        for group, t in zip(self.assignment, tensors):
            out[group].append(t)
        return out

    def init_state(self, params: Sequence[Tensor]) -> OptState:
        split = self._split(params)
        return {g: opt.init_state(split[g]) for g, opt in self.groups.items()}

    @property
    def reads_loss(self) -> bool:  # type: ignore[override]
        return any(opt.reads_loss for opt in self.groups.values())

    @property
    def reads_params(self) -> bool:  # type: ignore[override]
        return any(opt.reads_params for opt in self.groups.values())

    def step(
        self,
        grads: Sequence[Tensor],
        state: OptState,
        loss: Tensor | None = None,
        params: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], OptState]:
        split = self._split(grads)
        split_params = self._split(params) if params is not None else {}
        updates: dict[str, list[Tensor]] = {}
        new_state = {}
        for g, opt in self.groups.items():
            updates[g], new_state[g] = call_step(opt, split[g], state[g], loss, split_params.get(g))
        position = {g: iter(u) for g, u in updates.items()}
        return [next(position[g]) for g in self.assignment], new_state

    def spec(self) -> dict:
        return {
            "kind": "grouped",
            "groups": {g: opt.spec() for g, opt in self.groups.items()},
            "assignment": list(self.assignment),
        }
