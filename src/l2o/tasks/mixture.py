"""A mixture of task families: meta-train one optimizer on many kinds of problems (issue #26).

Every task of a ``MixtureFamily`` is drawn in three steps from its seed:

1. a member (a task family of ``l2o.tasks`` with options), with probability proportional to
   its ``weight``, and for each option the member lists under ``choose`` one of the values
   given, uniformly (e.g. the width, depth and activation of an MLP, the images' resolution);
2. a horizon T, log-uniformly from ``horizons = [T_min, T_max]`` (rounded to an integer), so
   that the optimizer meets short and long runs; the run unrolls the task's own T
   (``Task.horizon``) instead of ``meta.horizon``;
3. scale augmentation (learned_optimization's reparametrised-weights and scaled-loss task
   augmentations): each parameter tensor k is reparametrised, theta_k = s_k theta'_k, with
   s_k ~ logU[1 / param_scale, param_scale], and the loss is multiplied by c ~ logU[1 /
   loss_scale, loss_scale]. The optimizer sees and updates theta' = theta / s, whose
   gradients are c s df/dtheta: the same problem at other scales of parameters and gradients,
   so it cannot rely on either. (The meta-loss changes by the factor c: use meta.meta_loss =
   "log", which turns it into a constant, or "relative".)

In a config (``[[task.members]]`` is TOML's list of tables)::

    [task]
    name = "mixture"
    horizons = [100, 2000]
    param_scale = 10.0
    loss_scale = 10.0

    [[task.members]]
    name = "mnist"                 # the member's family and its fixed options
    weight = 2.0
    dataset = "fashion-mnist"
    [task.members.choose]          # options drawn for every task: one of each list
    hidden_sizes = [[32], [64], [32, 32]]
    activation = ["sigmoid", "tanh", "relu", "gelu"]
    resolution = [8, 14]

    [[task.members]]
    name = "quadratic"
    num_problems = 1
    [task.members.choose]
    dim = [5, 20, 50]

The members' tasks differ in their number of parameters, their loss scales and their horizons,
so the validation score of a mixture is relative (``l2o.meta.train.validate``): the geometric
mean over the validation tasks of f(theta_T) / f(theta_0), each at its own horizon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from l2o.checks import check_real
from l2o.errors import InvalidInput
from l2o.tasks.base import Task, TaskFamily, generator

MEMBER_KEYS = ("name", "weight", "choose")


@dataclass(frozen=True)
class MixtureMember:
    """One component of a mixture: a task family (``name``) with fixed ``options``, the
    options drawn per task (``choose``: {option: [values]}) and its relative ``weight``."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    choose: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    weight: float = 1.0

    @classmethod
    def from_dict(cls, data: Any, index: int) -> MixtureMember:
        """A ``[[task.members]]`` table: name, weight, choose and the family's options."""
        from l2o.tasks import TASK_FAMILIES

        where = f"task.members[{index}]"
        if not isinstance(data, Mapping):
            raise InvalidInput(
                f"Invalid {where}: {data!r} (a table with name = a task family and its options)"
            )
        data = dict(data)
        name = data.pop("name", None)
        valid = [n for n in TASK_FAMILIES if n != MixtureFamily.name]
        if name not in valid:
            raise InvalidInput(f"Invalid {where}.name: {name!r} (valid: {', '.join(valid)})")
        weight = data.pop("weight", 1.0)
        check_real(f"{where}.weight", weight, lambda w: 0 < w < math.inf, "a number > 0")
        choose = data.pop("choose", {})
        if not isinstance(choose, Mapping) or not all(
            isinstance(v, list) and v for v in choose.values()
        ):
            raise InvalidInput(
                f"Invalid {where}.choose: {choose!r} (a table of non-empty lists of values, "
                f'e.g. activation = ["relu", "tanh"])'
            )
        both = sorted(set(choose) & set(data))
        if both:
            raise InvalidInput(
                f"{where}: option(s) {', '.join(both)} both fixed and in choose (give one)"
            )
        member = cls(name, data, {k: list(v) for k, v in choose.items()}, float(weight))
        member.check(where)
        return member

    def check(self, where: str) -> None:
        """Every combination of fixed and chosen options must make a valid family (checked
        once for each value of each choice, the others at their first value)."""
        first = {k: v[0] for k, v in self.choose.items()}
        self.family({**first}, where)
        for key, values in self.choose.items():
            for value in values[1:]:
                self.family({**first, key: value}, where)

    def family(self, chosen: Mapping[str, Any], where: str = "", data_dir: str = "") -> TaskFamily:
        """The member's family with the ``chosen`` options; ``data_dir`` for a family that reads
        a dataset, unless the member sets its own."""
        from l2o.tasks import TASK_FAMILIES, make_task_family

        options = {**self.options, **chosen}
        reads_data = "data_dir" in {f.name for f in fields(TASK_FAMILIES[self.name])}
        if data_dir and reads_data and not options.get("data_dir"):
            options["data_dir"] = data_dir
        try:
            return make_task_family(self.name, **options)
        except InvalidInput as e:
            raise InvalidInput(f"{where or 'mixture member ' + self.name}: {e}") from e

    def to_config(self) -> dict[str, Any]:
        out = {"name": self.name, "weight": self.weight, **self.options}
        if self.choose:
            out["choose"] = {k: list(v) for k, v in self.choose.items()}
        return out


class MixtureTask(Task):
    """A member's task, with its horizon, in the augmented parametrisation theta' = theta / s
    and with its loss times c (see the module doc). ``inner`` is the member's own task,
    ``member`` its family's config."""

    def __init__(
        self,
        inner: Task,
        member: dict[str, Any],
        horizon: int | None,
        param_scales: Sequence[float],
        loss_scale: float,
    ) -> None:
        self.inner, self.member, self.horizon = inner, member, horizon
        self.param_scales, self.loss_scale = list(param_scales), loss_scale
        self.param_names = inner.param_names
        self.num_problems = inner.num_problems
        if hasattr(inner, "init_buffers"):  # tasks with running statistics (the unroll looks)
            self.init_buffers = inner.init_buffers
            self.loss_and_buffers = self._loss_and_buffers

    def _theta(self, params: Sequence[Tensor]) -> list[Tensor]:
        """theta = s theta'."""
        return [p * s for p, s in zip(params, self.param_scales)]

    def init_params(self) -> list[Tensor]:
        return [p / s for p, s in zip(self.inner.init_params(), self.param_scales)]

    def batch(self, step: int) -> Any:
        return self.inner.batch(step)

    def loss(self, params: Sequence[Tensor], batch: Any) -> Tensor:
        return self.loss_scale * self.inner.loss(self._theta(params), batch)

    def _loss_and_buffers(
        self, params: Sequence[Tensor], buffers: Sequence[Tensor], batch: Any
    ) -> tuple[Tensor, list[Tensor]]:
        loss, buffers = self.inner.loss_and_buffers(self._theta(params), buffers, batch)
        return self.loss_scale * loss, buffers

    def describe(self) -> dict[str, Any]:
        """What was drawn, JSON-ready: the member, T and the scales."""
        return {
            "member": self.member,
            "horizon": self.horizon,
            "param_scales": self.param_scales,
            "loss_scale": self.loss_scale,
        }


def _log_uniform(low: float, high: float, g: torch.Generator) -> float:
    u = float(torch.rand((), generator=g, dtype=torch.float64))
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


@dataclass(frozen=True)
class MixtureFamily(TaskFamily):
    """Tasks drawn from several task families, each with its own horizon and scales (see the
    module doc). ``members`` is a list of tables, each a family's name, its options, an
    optional ``weight`` and an optional ``choose`` table of options drawn per task."""

    name = "mixture"
    # The member families: tables with name = a task family, its options, weight = relative
    # probability (1) and choose = {option: [values]} drawn per task
    members: tuple[Any, ...] = ()
    # [T_min, T_max]: each task's horizon, drawn log-uniformly; [] = meta.horizon for all
    horizons: tuple[int, ...] = ()
    # Each parameter tensor reparametrised by s ~ logU[1 / param_scale, param_scale]; 1 = off
    param_scale: float = 1.0
    # The loss multiplied by c ~ logU[1 / loss_scale, loss_scale]; 1 = off
    loss_scale: float = 1.0
    # directory of the members' datasets, for members that read one and set none; "" = their
    # default search ($L2O_DATA, ~/.cache/l2o/data, /usr/share/datasets)
    data_dir: str = ""

    def __post_init__(self) -> None:
        members = self.members
        if not isinstance(members, (list, tuple)) or not members:
            raise InvalidInput(
                f"Invalid members: {members!r} (a non-empty list of [[task.members]] tables, "
                f'each with name = a task family, e.g. "quadratic")'
            )
        built = tuple(
            m if isinstance(m, MixtureMember) else MixtureMember.from_dict(m, i)
            for i, m in enumerate(members)
        )
        object.__setattr__(self, "members", built)
        horizons = self.horizons
        if not (
            isinstance(horizons, (list, tuple))
            and len(horizons) in (0, 2)
            and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in horizons)
            and (not horizons or horizons[0] <= horizons[1])
        ):
            raise InvalidInput(
                f"Invalid horizons: {horizons!r} (two integers [T_min, T_max] with "
                f"1 <= T_min <= T_max, e.g. [100, 2000]; [] = meta.horizon for every task)"
            )
        object.__setattr__(self, "horizons", tuple(horizons))
        if not isinstance(self.data_dir, str):
            raise InvalidInput(f"Invalid data_dir: {self.data_dir!r} (must be a path string)")
        for name in ("param_scale", "loss_scale"):
            check_real(name, getattr(self, name), lambda x: 1 <= x < math.inf, "a number >= 1")
            object.__setattr__(self, name, float(getattr(self, name)))

    def to_config(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["members"] = [m.to_config() for m in self.members]
        out["horizons"] = list(self.horizons)
        return {"name": self.name, **out}

    def locate_data(self, download: bool = False) -> None:
        """Read and verify the datasets of every member that reads one."""
        for member in self.members:
            first = {k: v[0] for k, v in member.choose.items()}
            locate = getattr(member.family(first, data_dir=self.data_dir), "locate_data", None)
            if locate is not None:
                locate(download=download)

    def sample(self, seed: int, device="cpu", dtype=torch.float32) -> MixtureTask:
        """Task ``seed``: member, choices, horizon, inner seed and scales all drawn from one
        generator seeded by ``seed``."""
        g = generator(seed)
        weights = torch.tensor([m.weight for m in self.members], dtype=torch.float64)
        member = self.members[int(torch.multinomial(weights, 1, generator=g))]
        chosen = {
            key: values[int(torch.randint(len(values), (), generator=g))]
            for key, values in member.choose.items()
        }
        horizon = round(_log_uniform(*self.horizons, g)) if self.horizons else None
        loss_scale = _log_uniform(1 / self.loss_scale, self.loss_scale, g)
        inner_seed = int(torch.randint(2**62, (), generator=g))
        family = member.family(chosen, data_dir=self.data_dir)
        inner = family.sample(inner_seed, device=device, dtype=dtype)
        scales = [
            _log_uniform(1 / self.param_scale, self.param_scale, g) for _ in inner.param_names
        ]
        return MixtureTask(inner, family.to_config(), horizon, scales, loss_scale)
