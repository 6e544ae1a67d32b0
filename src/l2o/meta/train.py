"""The run: meta-train a learned optimizer's parameters phi, epoch after epoch (paper, section 2).

Each epoch draws fresh tasks (``tasks_per_epoch``, the meta-batch; one by default) and unrolls
each over its horizon of T steps in truncations of K, as the objective says
(``l2o.meta.objective``); after each truncation the meta-optimizer (``l2o.meta.meta_optimizer``)
updates phi from the mean of the tasks' meta-gradients, and theta and the optimizer state are
detached. Every ``validate_every`` epochs the optimizer is scored on held-out validation tasks
and the best one is kept. The run directory holds::

    config.toml                  the full configuration of the run
    metrics.jsonl                one JSON line per epoch and per validation
    checkpoints/best.*           best validation score so far (what ``l2o.load(run_dir)`` loads)
    checkpoints/last.*           latest state, meta-optimizer included, for ``--resume``
    checkpoints/epoch-NNNNNN.*   with ``keep_checkpoints``: what each validation scored

With ``ema_decay`` > 0, the Polyak average of phi (``l2o.meta.averaging``) is what gets
validated and saved as ``best``; the meta-optimizer still steps the raw phi (in ``last``, with
the average, for resuming).

**The meta-batch, and several processes** (``l2o.distributed``, docs/distributed.md). Task j of
epoch e (j < B = ``tasks_per_epoch``) is drawn from seed index e for B = 1 (every earlier run's
tasks) and e B + j otherwise, its ES / PES perturbations likewise. The tasks' truncations run in
lockstep: meta-update k steps phi along the mean of the k-th truncation's meta-gradients of the
tasks that have one (a mixture's tasks bring their own horizons, so a short task drops out of
the later updates). Under torchrun each process unrolls a contiguous share of the B tasks (ES /
PES: of the B x ``pairs`` (task, pair) units; every process that holds pairs of a task also
runs its unperturbed center, which truncated ES starts its particles from); the meta-gradients
are summed over the processes and divided by the number of tasks, so every process takes the
same step and holds the same phi. A non-finite meta-gradient of any task skips that meta-update
for all and ends the epoch. Validation tasks are shared out likewise and their curves gathered
in order. Rank 0 alone writes checkpoints, metrics and TensorBoard.
"""

from __future__ import annotations

import fnmatch
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from l2o.checkpoint import RESUME_PREFIX, load_weights, read_checkpoint, save_checkpoint
from l2o.devices import flush_denormals
from l2o.distributed import World
from l2o.errors import CheckpointError, InvalidInput, MetaTrainingDiverged
from l2o.meta.averaging import PolyakAverage
from l2o.meta.config import MetaTrainConfig
from l2o.meta.es import ES, PES
from l2o.meta.meta_optimizer import MetaOptimizer
from l2o.meta.metrics_log import MetricsLog
from l2o.meta.seeds import task_seed
from l2o.meta.truncated_bptt import MetaGradient
from l2o.meta.unroll import init_unroll, rollout
from l2o.monitor import Monitor
from l2o.optimizers.base import StepOptimizer
from l2o.tasks.base import Task, TaskFamily

# In ``last`` checkpoints: the meta-optimizer's state under RESUME_PREFIX, the averaged phi
# under EMA_PREFIX (both skipped by ``l2o.load``).
EMA_PREFIX = f"{RESUME_PREFIX}ema/"

# (optimizer, task, steps) -> {tag: values}: what the monitor shows as TensorBoard histograms
# (e.g. l2o.evaluate.behaviour.state_histograms).
Histograms = Callable[[StepOptimizer, Task, int], dict[str, Tensor]]


def validate(
    optimizer: StepOptimizer,
    family: TaskFamily,
    config: MetaTrainConfig,
    world: World | None = None,
) -> dict[str, float]:
    """Score on held-out validation tasks: mean f(theta_T) and mean sum_t f(theta_t).

    Tasks that bring their own horizon (a mixture's, ``l2o.tasks.mixture``) differ in size,
    loss scale and length, so their scores are relative: "final_loss" is the geometric mean
    over the tasks of mean f(theta_T) / mean f(theta_0) (1 = no progress; inf if one diverged),
    each ratio floored at ``RATIO_FLOOR`` (a quadratic's loss falls to float32's noise, 1e-13 of
    where it started, and would otherwise outweigh every other task), "summed_loss" the mean
    over tasks of sum_t f(theta_t) / (T f(theta_0)), and "curve" the geometric mean of the
    floored f(theta_t) / f(theta_0) up to the shortest horizon.

    ``world`` (``l2o.distributed``): each process rolls out its share of the tasks and every
    process gets the scores of all of them (the single process's)."""
    world = world or World()
    mine = []
    for i in world.share(config.validation_tasks):
        task = family.sample(task_seed("validation", i), device=config.device)
        losses = rollout(optimizer, task, task.horizon or config.horizon).losses
        mine.append((losses, task.horizon is not None))
    curves = [curve for part in world.gather(mine) for curve in part]
    if any(own_horizon for _, own_horizon in curves):
        return _relative_scores([losses for losses, _ in curves])
    losses = torch.cat([losses for losses, _ in curves], dim=1)  # (T + 1, problems)
    final = losses[-1].double().mean().item()
    return {
        "final_loss": final if math.isfinite(final) else math.inf,
        "summed_loss": losses[1:].double().sum(0).mean().item(),
        "curve": losses.double().mean(1).tolist(),
    }


def _relative_scores(curves: list[Tensor]) -> dict[str, float]:
    """``validate``'s relative scores from each task's losses (T + 1, problems) at its own
    horizon."""
    ratios = []  # per task: (T + 1,) mean f(theta_t) / mean f(theta_0)
    for losses in curves:
        losses = losses.double().mean(1)
        ratios.append((losses / losses[0]).clamp_min(RATIO_FLOOR))
    finals = torch.stack([r[-1] for r in ratios])
    final = finals.log().mean().exp().item() if bool(torch.isfinite(finals).all()) else math.inf
    shortest = min(len(r) for r in ratios)
    curve = torch.stack([r[:shortest] for r in ratios]).log().mean(0).exp()
    return {
        "final_loss": final if math.isfinite(final) else math.inf,
        "summed_loss": float(torch.stack([r[1:].mean() for r in ratios]).mean()),
        "curve": curve.tolist(),
    }


# Relative validation (tasks with their own horizons): a task's f(theta_T) / f(theta_0) counts as
# at least this (four orders of magnitude of progress).
RATIO_FLOOR = 1e-4


@dataclass
class TrainingState:
    """Everything beyond phi that a resumed run needs to continue exactly."""

    epoch: int = 0  # epochs completed
    best_validation: float = math.inf
    best_epoch: int = -1
    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    seconds: float = 0.0  # meta-training wall-clock so far
    meta_updates: int = 0  # meta-optimizer steps taken (the EMA's warm-up counts them)


def _same_task(recorded: dict[str, Any], family: TaskFamily) -> bool:
    """Whether a checkpoint's task record describes ``family`` (options added to l2o since the
    record was written count at their defaults)."""
    from l2o.tasks import make_task_family

    options = dict(recorded)
    try:
        return make_task_family(options.pop("name"), **options).to_config() == family.to_config()
    except (InvalidInput, KeyError, TypeError):
        return False


class MetaTrainer:
    """Meta-trains ``optimizer`` on ``family``; writes checkpoints and metrics to ``run_dir``.

    ``record`` is stored in every checkpoint (task and config, so a checkpoint describes
    itself). ``monitor`` (an ``l2o.monitor.Monitor``) receives the metrics of every epoch and
    validation, for TensorBoard and progress display, and with them ``histograms`` of the
    validated optimizer on validation task 0 (none if not given).

    ``world`` (``l2o.distributed``; default: this process alone): the processes of a
    torchrun job that share the epochs' tasks and validation (see the module doc). Every one
    of them runs a ``MetaTrainer``; only rank 0 writes (give the others no ``monitor``).
    """

    def __init__(
        self,
        optimizer: StepOptimizer,
        family: TaskFamily,
        config: MetaTrainConfig,
        run_dir: str | Path,
        record: dict[str, Any] | None = None,
        monitor: Monitor | None = None,
        histograms: Histograms | None = None,
        world: World | None = None,
    ) -> None:
        if not optimizer.is_learned:
            raise InvalidInput(f"optimizer {optimizer} has no meta-parameters to train")
        self.world = world or World()
        check_split(config, self.world.size)
        self.optimizer = optimizer.to(config.device)
        self.family, self.config = family, config
        self.run_dir = Path(run_dir)
        self.record = dict(record or {})
        self.monitor, self.histograms = monitor, histograms
        self.objective = config.objective
        self.estimator = self.objective.make_estimator()
        freeze_all_but(self.optimizer, config.train_only)
        self.meta_opt = MetaOptimizer(
            self.optimizer.parameters(), config.meta_optimizer_config, config.epochs
        )
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.state = TrainingState()
        self.checkpoint_epoch: int | None = None  # the epoch of the latest ``last`` checkpoint
        self.resumed = False  # continuing in a run directory: TensorBoard drops later steps
        self.resumed_from_processes: int | None = None  # how many ran the run before resume
        self.monitor_failed = False
        self.polyak = PolyakAverage(self.optimizer, config.ema_decay) if config.ema_decay else None

    @property
    def average(self) -> StepOptimizer | None:
        """The averaged phi (ema_decay > 0), or None."""
        return None if self.polyak is None else self.polyak.average

    @property
    def evaluated(self) -> StepOptimizer:
        """The optimizer that validation scores and ``best`` keeps: phi, or its average."""
        return self.optimizer if self.average is None else self.average

    # -- checkpoints -------------------------------------------------------------------------
    def _record(self, kind: str) -> dict[str, Any]:
        return {
            **self.record,
            "task": self.family.to_config(),
            "training": asdict(self.config),
            "checkpoint": kind,
            "epoch": self.state.epoch,
            "metrics": {
                "best_validation_final_loss": (
                    self.state.best_validation
                    if math.isfinite(self.state.best_validation)
                    else None
                ),
                "best_epoch": self.state.best_epoch,
                "meta_training_seconds": self.state.seconds,
                "nonfinite_skipped": self.state.nonfinite_total,
            },
        }

    def save(self, kind: str) -> None:
        record = self._record(kind)
        extra: dict[str, Tensor] = {}
        if kind == "last":
            tensors, rest = self.meta_opt.state_tensors()
            extra = {RESUME_PREFIX + name: value for name, value in tensors.items()}
            if self.average is not None:
                extra.update({EMA_PREFIX + k: v for k, v in self.average.state_dict().items()})
            record["resume"] = {"meta_optimizer": rest, "training_state": asdict(self.state)}
            if self.world.distributed:
                record["resume"]["processes"] = self.world.size
        saved = self.optimizer if kind == "last" else self.evaluated
        if self.world.is_main:  # every process holds the same phi; one writes it
            save_checkpoint(self.run_dir / "checkpoints" / kind, saved, record, extra)
        if kind == "last":
            self.checkpoint_epoch = self.state.epoch

    def resume(self) -> None:
        """Continue from ``checkpoints/last``: phi, meta-optimizer state, epoch, counters.
        Under torchrun rank 0 reads it and hands it to the others; the number of processes
        may differ from the run's before (see ``check_split``)."""
        path = self.run_dir / "checkpoints" / "last.safetensors"
        tensors, record = self.world.from_main(lambda: read_checkpoint(path))
        if "resume" not in record:
            raise self.world.everywhere(
                CheckpointError(f"checkpoint {path} holds no meta-training state to resume")
            )
        if record["training"]["seed"] != self.config.seed or not _same_task(
            record["task"], self.family
        ):
            raise self.world.everywhere(
                CheckpointError(
                    f"cannot resume {path}: its task/seed differ from this run's configuration"
                )
            )
        load_weights(self.optimizer, tensors, str(path))
        if self.average is not None:
            averaged = {
                k[len(EMA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)
            }
            if not averaged:
                raise self.world.everywhere(
                    CheckpointError(f"cannot resume {path}: it holds no averaged phi (ema_decay)")
                )
            load_weights(self.average, averaged, str(path))
        meta_opt = {
            name[len(RESUME_PREFIX) :]: value
            for name, value in tensors.items()
            if name.startswith(RESUME_PREFIX) and not name.startswith(EMA_PREFIX)
        }
        self.meta_opt.load_state_tensors(meta_opt, record["resume"]["meta_optimizer"])
        self.state = TrainingState(**record["resume"]["training_state"])
        self.checkpoint_epoch = self.state.epoch
        self.resumed_from_processes = int(record["resume"].get("processes", 1))
        self.world.from_main(lambda: self.metrics.truncate(self.state.epoch))
        self.resumed = True

    def restart(self) -> None:
        """Start again from epoch 0 in a run directory that has no checkpoint yet (meta-training
        was stopped before its first validation): forget the metrics of that attempt."""
        self.world.from_main(lambda: self.metrics.truncate(0))
        self.resumed = True

    # -- the loop ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch's tasks (this process's share of them), unrolled over their horizons in
        truncations, in lockstep; phi updated after each truncation from the mean of the
        tasks' meta-gradients (see the module doc)."""
        cfg = self.config
        start = time.perf_counter()
        self.meta_opt.start_epoch(epoch)
        jobs = [self._job(epoch, j, pairs) for j, pairs in self._my_share()]
        rounds = self.world.all_reduce_max(max((len(job.truncations) for job in jobs), default=0))
        meta_losses, grad_norms, skipped = [], [], 0
        for k in range(rounds):
            grads, meta_loss, tasks, nonfinite = None, 0.0, 0, 0
            for job in jobs:
                if k >= len(job.truncations):
                    continue
                result, job.carried = self._meta_gradient(
                    job.task, job.carried, job.truncations[k], job.generator, job.pairs
                )
                nonfinite += not result.finite
                task_grads = result.grads
                if cfg.normalize_task_gradients and result.finite:
                    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in task_grads]))
                    task_grads = [g / (norm + 1e-12) for g in task_grads]
                grads = task_grads if grads is None else [a + b for a, b in zip(grads, task_grads)]
                if job.reports:
                    tasks += 1
                    meta_loss += result.meta_loss
                    job.reached = (float(result.losses[-1].mean()), result.state.step)
            grads, (meta_loss, tasks, nonfinite) = self._sum_over_processes(
                grads, [meta_loss, tasks, nonfinite]
            )
            if nonfinite:
                # Skip this meta-update and abandon the tasks: theta has probably diverged.
                skipped += 1
                self.state.nonfinite_total += 1
                self.state.nonfinite_in_a_row += 1
                if self.state.nonfinite_in_a_row >= cfg.max_nonfinite_in_a_row:
                    raise self.world.everywhere(
                        MetaTrainingDiverged(
                            f"{self.state.nonfinite_in_a_row} non-finite meta-losses/gradients "
                            f"in a row at epoch {epoch + 1} (max_nonfinite_in_a_row = "
                            f"{cfg.max_nonfinite_in_a_row}); lower meta.meta_lr or set "
                            f"meta.clip_grad_norm; {self._checkpoints_left()}"
                        )
                    )
                break
            self.state.nonfinite_in_a_row = 0
            for job in jobs:
                job.final_loss, job.steps = job.reached
            if tasks != 1:  # the mean over the tasks of this truncation
                grads = [g / tasks for g in grads]
            grad_norms.append(self.meta_opt.step(grads))
            if self.polyak is not None:
                self.polyak.update(self.optimizer, self.state.meta_updates)
            self.state.meta_updates += 1
            meta_losses.append(
                meta_loss if cfg.tasks_per_epoch == 1 else meta_loss / cfg.tasks_per_epoch
            )
        reporting = [job for job in jobs if job.reports]
        _, (final_loss, coordinate_steps) = self._sum_over_processes(
            None,
            [
                sum(job.final_loss for job in reporting),
                sum(job.coordinates * job.steps for job in reporting),
            ],
        )
        seconds = time.perf_counter() - start
        return {
            "epoch": epoch,
            **self._drawn(reporting),
            "meta_loss": sum(meta_losses) if meta_losses else math.nan,
            "train_final_loss": math.nan if skipped else final_loss / cfg.tasks_per_epoch,
            "meta_grad_norm": max(grad_norms) if grad_norms else math.nan,
            "nonfinite_skipped": skipped,
            "nonfinite_total": self.state.nonfinite_total,
            "meta_lr": self.meta_opt.lr,
            "coordinate_steps_per_s": coordinate_steps / seconds,
        }

    @property
    def _pes(self) -> bool:
        return isinstance(self.estimator, PES)

    @property
    def _es(self) -> bool:
        return isinstance(self.estimator, (ES, PES))

    def _my_share(self) -> list[tuple[int, list[int] | None]]:
        """This process's tasks of the epoch (indices j < tasks_per_epoch), each with the ES /
        PES pairs it runs (None: all of them, or truncated BPTT)."""
        tasks = self.config.tasks_per_epoch
        if not self.world.distributed:
            return [(j, None) for j in range(tasks)]
        if not self._es:
            return [(j, None) for j in self.world.share(tasks)]
        pairs = self.config.pairs
        mine: dict[int, list[int]] = {}
        for unit in self.world.share(tasks * pairs):
            mine.setdefault(unit // pairs, []).append(unit % pairs)
        return [(j, None if len(p) == pairs else p) for j, p in mine.items()]

    def _job(self, epoch: int, j: int, pairs: list[int] | None) -> _Job:
        """Task j of ``epoch``, ready to unroll: drawn, its truncations, its start, its ES /
        PES perturbations (their stream of random numbers, from the run's seed)."""
        cfg = self.config
        index = epoch if cfg.tasks_per_epoch == 1 else epoch * cfg.tasks_per_epoch + j
        task = self.family.sample(task_seed("train", index, cfg.seed), device=cfg.device)
        state = init_unroll(task, self.optimizer)
        generator = torch.Generator().manual_seed(task_seed("perturbations", index, cfg.seed))
        pes = self._pes
        carried = self.estimator.init(self.optimizer, task, **_pairs(pairs)) if pes else state
        return _Job(
            task=task,
            truncations=self.objective.truncation_weights(task.horizon),
            carried=carried,
            generator=generator,
            pairs=pairs,
            # the process that runs the task's first pair reports its loss (ES / PES: the
            # center, which every process with pairs of the task also runs)
            reports=pairs is None or pairs[0] == 0,
            coordinates=sum(p.numel() for p in state.params),
        )

    def _sum_over_processes(
        self, grads: list[Tensor] | None, scalars: list[float]
    ) -> tuple[list[Tensor] | None, list[float]]:
        """The sums over the processes of ``grads`` (None: this process had none this time,
        zeros) and of ``scalars`` (in float64); the values themselves in a single process."""
        if not self.world.distributed:
            return grads, scalars
        params = list(self.optimizer.parameters())
        if grads is not None or params:
            local = grads if grads is not None else [torch.zeros_like(p) for p in params]
            flat = self.world.all_reduce(torch.cat([g.reshape(-1) for g in local]))
            grads = [
                piece.view_as(p)
                for piece, p in zip(flat.split([p.numel() for p in params]), params)
            ]
        totals = self.world.all_reduce(torch.tensor(scalars, dtype=torch.float64))
        return grads, totals.tolist()

    def _drawn(self, reporting: list[_Job]) -> dict[str, Any]:
        """A mixture's drawn tasks (``describe``), for the epoch's metrics: "task" for one task
        per epoch, "tasks" (in order) for several; {} for other families."""
        mine = [job.task.describe() for job in reporting if hasattr(job.task, "describe")]
        drawn = [d for part in self.world.gather(mine) for d in part]
        if not drawn:
            return {}
        return {"task": drawn[0]} if self.config.tasks_per_epoch == 1 else {"tasks": drawn}

    def _meta_gradient(
        self,
        task: Task,
        carried: Any,
        weights: list[float],
        generator: torch.Generator,
        pairs: list[int] | None = None,
    ) -> tuple[MetaGradient, Any]:
        """One truncation's meta-gradient and what the next truncation starts from: the unroll
        state (PES: the state of its particles). ``pairs``: the ES / PES pairs to run."""
        if self._pes:
            return self.estimator.meta_gradient(
                self.optimizer, task, carried, weights, generator, **_pairs(pairs)
            )
        if isinstance(self.estimator, ES):
            result = self.estimator.meta_gradient(
                self.optimizer, task, carried, weights, generator, **_pairs(pairs)
            )
        else:
            result = self.estimator.meta_gradient(self.optimizer, task, carried, weights)
        return result, result.state

    def _checkpoints_left(self) -> str:
        """What a stopped run leaves behind, truthfully."""
        if self.checkpoint_epoch is None:
            return (
                f"no checkpoint was written (the first is due at epoch "
                f"{min(self.config.validate_every, self.config.epochs)})"
            )
        best = "" if math.isfinite(self.state.best_validation) else "; no validation was finite"
        return (
            f"the checkpoints in {self.run_dir / 'checkpoints'} are intact (last: epoch "
            f"{self.checkpoint_epoch}{best})"
        )

    def _monitor(self, method: str, *args: Any) -> None:
        """Call ``self.monitor.<method>(*args)``; arguments that are functions are called first
        (so that what only the monitor needs is computed under the same guard). Monitoring never
        stops a run: if it fails, say so once and go on without it."""
        if self.monitor is None or self.monitor_failed:
            return
        try:
            getattr(self.monitor, method)(*(a() if callable(a) else a for a in args))
        except Exception as e:
            self.monitor_failed = True
            message = " ".join(f"{type(e).__name__}: {e}".split())
            warnings.warn(
                f"monitoring failed in {method}() ({message}); meta-training goes on without "
                f"TensorBoard and progress output",
                RuntimeWarning,
                stacklevel=2,
            )

    def run(self) -> TrainingState:
        cfg = self.config
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter() - self.state.seconds
        self._monitor("start", self.state.epoch, self.graph_spec(), self.resumed)
        try:
            with flush_denormals():  # saturated gates: see l2o.devices
                for epoch in range(self.state.epoch, cfg.epochs):
                    entry = self.train_epoch(epoch)
                    self.state.epoch = epoch + 1
                    self.state.seconds = time.perf_counter() - started
                    entry["seconds"] = self.state.seconds
                    validating = self.state.epoch % cfg.validate_every == 0
                    if validating or self.state.epoch == cfg.epochs:
                        improved = self.validate(entry)
                        # The epoch's metrics and TensorBoard events are on disk before the
                        # checkpoint that covers them: a kill in between leaves an extra line and
                        # extra events, which resume drops (and then writes again).
                        if self.world.is_main:
                            self.metrics.append(entry, sync=True)
                        self._monitor("epoch", epoch, entry)
                        self._monitor("flush")
                        self.save_checkpoints(improved)
                    else:
                        if self.world.is_main:
                            self.metrics.append(entry)
                        self._monitor("epoch", epoch, entry)
        finally:
            self._monitor("close")
        return self.state

    def graph_spec(self):
        from l2o.unroll_graph import GraphSpec

        cfg = self.config
        return GraphSpec(
            self.optimizer, self.family.name, cfg.meta_optimizer, cfg.meta_lr, cfg.truncation,
            cfg.second_order,
        )  # fmt: skip

    def validate(self, entry: dict[str, Any]) -> bool:
        """Score phi on the validation tasks into ``entry``; True if it is the best so far."""
        scores = validate(self.evaluated, self.family, self.config, self.world)
        entry["validation_final_loss"] = scores["final_loss"]
        entry["validation_summed_loss"] = scores["summed_loss"]
        entry["validation_curve"] = scores["curve"]
        if self.average is not None:  # the raw phi too, to see what averaging gains
            raw = validate(self.optimizer, self.family, self.config, self.world)
            entry["validation_final_loss_raw"] = raw["final_loss"]
        self._monitor(
            "validation", self.state.epoch - 1, scores, self._histograms, self.family.name
        )
        improved = scores["final_loss"] < self.state.best_validation
        if improved:
            self.state.best_validation = scores["final_loss"]
            self.state.best_epoch = self.state.epoch
        return improved

    def _histograms(self) -> dict[str, Tensor]:
        """``histograms`` of the validated optimizer on validation task 0, for TensorBoard."""
        if self.histograms is None:
            return {}
        task = self.family.sample(task_seed("validation", 0), device=self.config.device)
        return self.histograms(self.evaluated, task, task.horizon or self.config.horizon)

    def save_checkpoints(self, improved: bool) -> None:
        """``best`` if the validation improved, ``epoch-N`` with keep_checkpoints, ``last``."""
        if improved:
            self.save("best")
        if self.config.keep_checkpoints:
            self.save(f"epoch-{self.state.epoch:06d}")
        self.save("last")


@dataclass
class _Job:
    """One task of an epoch as this process unrolls it."""

    task: Task
    truncations: list[list[float]]  # the weights w_t of each truncation
    carried: Any  # what the next truncation starts from (PES: its particles)
    generator: torch.Generator  # ES / PES perturbations
    pairs: list[int] | None  # the ES / PES pairs this process runs (None: all)
    reports: bool  # this process counts the task's meta-loss and losses (one process does)
    coordinates: int  # theta's size
    final_loss: float = math.nan  # mean f(theta) after the last meta-update's truncation
    steps: int = 0  # inner steps taken up to then
    reached: tuple[float, int] = (math.nan, 0)  # the same after the truncation just run


def _pairs(pairs: list[int] | None) -> dict[str, Any]:
    """``share=`` for the ES / PES estimators when a process runs some of the pairs."""
    return {} if pairs is None else {"share": pairs}


def trainable_names(optimizer: StepOptimizer, patterns: Sequence[str]) -> list[str]:
    """The names of ``optimizer``'s parameters that ``meta.train_only`` = ``patterns`` (glob
    patterns) selects: all of them when there are none. Refuses (one line) a pattern that
    matches no parameter, naming the parameters there are."""
    names = [name for name, _ in optimizer.named_parameters()]
    if not patterns:
        return names
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise InvalidInput(
                f"Invalid meta.train_only pattern {pattern!r}: it matches none of the "
                f"optimizer's parameters ({', '.join(names)})"
            )
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def freeze_all_but(optimizer: StepOptimizer, patterns: Sequence[str]) -> None:
    """Meta-train only the parameters ``patterns`` select (``trainable_names``): the others get
    ``requires_grad = False``, which every estimator reads (truncated BPTT differentiates only
    the trainable ones; ES and PES perturb only them)."""
    chosen = set(trainable_names(optimizer, patterns))
    for name, p in optimizer.named_parameters():
        p.requires_grad_(name in chosen)


def check_split(config: MetaTrainConfig, processes: int) -> None:
    """Refuse (one line) an epoch that ``processes`` processes cannot share: each unrolls
    whole tasks (ES / PES: whole (task, pair) units), so there must be at least one each."""
    if processes <= 1:
        return
    tasks = config.tasks_per_epoch
    if config.estimator in ("es", "pes"):
        units = tasks * config.pairs
        if units < processes:
            raise InvalidInput(
                f"cannot share an epoch of meta.tasks_per_epoch = {tasks} task(s) x meta.pairs "
                f"= {config.pairs} pairs among {processes} processes (each runs whole pairs): "
                f"run at most {units} process{'es' if units > 1 else ''}, or raise meta.pairs "
                f"or meta.tasks_per_epoch"
            )
        return
    if tasks < processes:
        raise InvalidInput(
            f"cannot share an epoch of meta.tasks_per_epoch = {tasks} task(s) among {processes} "
            f"processes (each unrolls whole tasks): set meta.tasks_per_epoch to {processes} or "
            f"a multiple of it (the meta-batch, the same for any number of processes), or run "
            f"at most {tasks} process{'es' if tasks > 1 else ''}"
        )
