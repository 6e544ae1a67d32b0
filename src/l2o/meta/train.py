"""The outer loop: meta-train a learned optimizer's parameters phi with Adam (paper, section 2).

For each epoch a fresh task is drawn; its horizon of T steps is unrolled in truncations of K
steps; after each truncation the meta-gradient updates phi and theta / optimizer state are
detached. Every ``validate_every`` epochs the optimizer is scored on held-out validation tasks
and the best one is kept. The run directory holds::

    config.toml                  the full configuration of the run
    metrics.jsonl                one JSON line per epoch and per validation
    checkpoints/best.*           best validation score so far (what ``l2o.load(run_dir)`` loads)
    checkpoints/last.*           latest state, meta-optimizer included, for ``--resume``
    checkpoints/epoch-NNNNNN.*   with ``keep_checkpoints``: what each validation scored

With ``ema_decay`` > 0 (Polyak averaging), an exponential moving average of phi over the
meta-updates is what gets validated and saved as ``best``: meta-gradients from one sampled task
are noisy, and the average of the recent iterates is usually better than the last one. The
meta-optimizer still steps the raw phi (in ``last``, with the average, for resuming).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from l2o.checkpoint import (
    RESUME_PREFIX,
    atomic_write_text,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from l2o.errors import CheckpointError, InvalidInput, L2OError, MetaTrainingDiverged
from l2o.evaluate.behaviour import state_histograms
from l2o.evaluate.rollout import rollout
from l2o.meta.seeds import task_seed
from l2o.meta.truncated_bptt import TruncatedBPTT
from l2o.meta.unroll import META_LOSSES, init_unroll
from l2o.monitor import Monitor
from l2o.optimizers.base import StepOptimizer
from l2o.tasks.base import TaskFamily

LOSS_WEIGHTS = ("sum", "mean", "last", "linear")
META_OPTIMIZERS = ("adam", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MetaTrainConfig:
    """How phi is meta-trained. Defaults follow the paper (T = 100, K = 20, Adam 1e-3)."""

    epochs: int = 2000  # meta-training epochs: one fresh task each, unrolled over the horizon
    horizon: int = 100  # T: inner steps per task
    truncation: int = 20  # K: steps per truncated-BPTT segment
    # w_t of L = sum_t w_t f(theta_t): "sum" (w_t = 1, the paper), "mean" (w_t = 1/T), "last"
    # (only the last step of each truncation, i.e. f(theta_T) when K = T) or "linear" (w_t = t/T:
    # the later steps, nearer the f(theta_T) that evaluation reports, weigh more).
    loss_weights: str = "sum"
    # Each term of L: "sum" = f(theta_t) (the paper); "relative" = the truncation's sum divided
    # by the mean loss at its start (equalises meta-gradient scales across truncations);
    # "log" = log f(theta_t).
    meta_loss: str = "sum"
    second_order: bool = False  # keep d grad_t / d phi (the paper drops it)
    meta_optimizer: str = "adam"  # the optimizer of phi: adam (the paper), sgd or rmsprop
    meta_lr: float = 1e-3  # its learning rate (the paper: about 1e-3)
    # "constant" (the paper) or "cosine": meta_lr * (1 + cos(pi * progress)) / 2, progress going
    # from 0 to 1 over the epochs after the first meta_lr_decay_from of them (0 = all along;
    # 0.7 = constant for 70% of the epochs, annealed to 0 over the last 30%).
    meta_lr_schedule: str = "constant"
    meta_lr_decay_from: float = 0.0  # the fraction of the epochs before the cosine decay starts
    clip_grad_norm: float = 0.0  # clip the meta-gradient's global norm; 0 = no clipping
    # Polyak averaging: validate / keep an EMA of phi, phi_avg <- d phi_avg + (1 - d) phi after
    # each meta-update, d = min(ema_decay, (1 + n) / (10 + n)) at update n; 0 = off.
    ema_decay: float = 0.0
    # Start phi from a trained optimizer's weights (fine-tuning) instead of the seed's random
    # init: a pretrained name, a checkpoint path or a run directory (its best checkpoint). Its
    # architecture must be the config's; the meta-optimizer starts fresh. "" = random init.
    init_from: str = ""
    validate_every: int = 100  # epochs between validations (and checkpoints)
    # Also keep what every validation scored as checkpoints/epoch-NNNNNN (not only best / last),
    # e.g. to compare checkpoints on test runs after the fact.
    keep_checkpoints: bool = False
    validation_tasks: int = 2  # tasks drawn from the validation seed stream
    seed: int = 0  # seeds phi's init and the training tasks (validation tasks are fixed)
    max_nonfinite_in_a_row: int = 10  # stop after this many skipped meta-updates in a row
    device: str = "cpu"  # torch device of tasks, unrolls and phi: cpu, cuda, cuda:1, mps

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "horizon",
            "truncation",
            "validate_every",
            "validation_tasks",
            "max_nonfinite_in_a_row",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise InvalidInput(f"Invalid {name}: {value!r} (must be an integer >= 1)")
        if self.truncation > self.horizon:
            raise InvalidInput(
                f"Invalid truncation: K = {self.truncation} is longer than the horizon "
                f"T = {self.horizon} (need 1 <= K <= T)"
            )
        if self.loss_weights not in LOSS_WEIGHTS:
            raise InvalidInput(
                f"Invalid loss_weights: {self.loss_weights!r} (valid: {', '.join(LOSS_WEIGHTS)})"
            )
        if self.meta_loss not in META_LOSSES:
            raise InvalidInput(
                f"Invalid meta_loss: {self.meta_loss!r} (valid: {', '.join(META_LOSSES)})"
            )
        if self.meta_lr_schedule not in LR_SCHEDULES:
            raise InvalidInput(
                f"Invalid meta_lr_schedule: {self.meta_lr_schedule!r} "
                f"(valid: {', '.join(LR_SCHEDULES)})"
            )
        decay_from = self.meta_lr_decay_from
        if not (
            isinstance(decay_from, (int, float))
            and not isinstance(decay_from, bool)
            and 0 <= decay_from < 1
        ):
            raise InvalidInput(
                f"Invalid meta_lr_decay_from: {decay_from!r} (must be in [0, 1): "
                f"the fraction of the epochs before the cosine decay starts)"
            )
        if decay_from > 0 and self.meta_lr_schedule != "cosine":
            raise InvalidInput(
                f"Invalid meta_lr_decay_from: {decay_from!r} with meta_lr_schedule = "
                f"{self.meta_lr_schedule!r} (it needs meta_lr_schedule = 'cosine', or 0)"
            )
        if self.meta_optimizer not in META_OPTIMIZERS:
            raise InvalidInput(
                f"Invalid meta_optimizer: {self.meta_optimizer!r} "
                f"(valid: {', '.join(META_OPTIMIZERS)})"
            )
        if not (_is_real(self.meta_lr) and 0 < self.meta_lr < math.inf):
            raise InvalidInput(f"Invalid meta_lr: {self.meta_lr!r} (must be a finite number > 0)")
        if not (_is_real(self.clip_grad_norm) and 0 <= self.clip_grad_norm < math.inf):
            raise InvalidInput(
                f"Invalid clip_grad_norm: {self.clip_grad_norm!r} (a number >= 0; 0 = no clipping)"
            )
        if not (_is_real(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise InvalidInput(
                f"Invalid ema_decay: {self.ema_decay!r} (must be in [0, 1); 0 = no averaging)"
            )
        if not isinstance(self.init_from, str):
            raise InvalidInput(
                f"Invalid init_from: {self.init_from!r} (must be a string: a pretrained name, "
                f'a checkpoint or a run directory; "" = random init)'
            )
        if not isinstance(self.keep_checkpoints, bool):
            raise InvalidInput(
                f"Invalid keep_checkpoints: {self.keep_checkpoints!r} (must be true or false)"
            )
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise InvalidInput(f"Invalid seed: {self.seed!r} (must be an integer >= 0)")
        if not isinstance(self.second_order, bool):
            raise InvalidInput(f"Invalid second_order: {self.second_order!r} (true or false)")
        try:
            if not isinstance(self.device, str):
                raise RuntimeError(self.device)
            torch.device(self.device)
        except RuntimeError as e:
            raise InvalidInput(f"Invalid device: {self.device!r} (e.g. cpu, cuda, cuda:1)") from e

    def meta_lr_at(self, epoch: int) -> float:
        """The meta-learning rate used during ``epoch`` (0-based)."""
        if self.meta_lr_schedule == "cosine":
            start = self.meta_lr_decay_from * self.epochs
            progress = max(0.0, epoch - start) / (self.epochs - start)
            return self.meta_lr * 0.5 * (1 + math.cos(math.pi * progress))
        return self.meta_lr

    def truncation_weights(self) -> list[list[float]]:
        """w_t for every step, split into truncations of K (the last may be shorter)."""
        T, K = self.horizon, self.truncation
        if self.loss_weights == "linear":
            w = [t / T for t in range(1, T + 1)]
        else:
            w = [1.0 / T if self.loss_weights == "mean" else 1.0] * T
        chunks = [w[s : s + K] for s in range(0, T, K)]
        if self.loss_weights == "last":
            chunks = [[0.0] * (len(c) - 1) + [1.0] for c in chunks]
        return chunks


def make_meta_optimizer(name: str, params: Sequence[Tensor], lr: float) -> torch.optim.Optimizer:
    """The optimizer of phi: Adam in the paper; SGD and RMSprop for the ablation."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise InvalidInput(f"Invalid meta_optimizer: {name!r} (valid: {', '.join(META_OPTIMIZERS)})")


def validate(
    optimizer: StepOptimizer, family: TaskFamily, config: MetaTrainConfig
) -> dict[str, float]:
    """Score on held-out validation tasks: mean f(theta_T) and mean sum_t f(theta_t)."""
    curves = []
    for i in range(config.validation_tasks):
        task = family.sample(task_seed("validation", i), device=config.device)
        curves.append(rollout(optimizer, task, config.horizon).losses)
    losses = torch.cat(curves, dim=1)  # (T + 1, problems)
    final = losses[-1].double().mean().item()
    return {
        "final_loss": final if math.isfinite(final) else math.inf,
        "summed_loss": losses[1:].double().sum(0).mean().item(),
        "curve": losses.double().mean(1).tolist(),
    }


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


def meta_optimizer_tensors(meta_opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Split a torch optimizer's state_dict into safetensors-ready tensors and JSON-ready rest."""
    state = meta_opt.state_dict()
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{RESUME_PREFIX}{index}/{key}"] = value
            else:
                rest["state"].setdefault(str(index), {})[key] = value
    return tensors, rest


EMA_PREFIX = f"{RESUME_PREFIX}ema/"  # the averaged phi, in ``last`` checkpoints


def restore_meta_optimizer(
    meta_opt: torch.optim.Optimizer, tensors: dict[str, Tensor], rest: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(RESUME_PREFIX) and not name.startswith(EMA_PREFIX):
            index, key = name[len(RESUME_PREFIX) :].split("/", 1)
            state.setdefault(int(index), {})[key] = value
    for index, entries in rest["state"].items():
        state.setdefault(int(index), {}).update(entries)
    meta_opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


class MetaTrainer:
    """Meta-trains ``optimizer`` on ``family``; writes checkpoints and metrics to ``run_dir``.

    ``record`` is stored in every checkpoint (task and config, so a checkpoint describes
    itself). ``monitor`` (an ``l2o.monitor.Monitor``) receives the metrics of every epoch and
    validation, for TensorBoard and progress display.
    """

    def __init__(
        self,
        optimizer: StepOptimizer,
        family: TaskFamily,
        config: MetaTrainConfig,
        run_dir: str | Path,
        record: dict[str, Any] | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        if not optimizer.is_learned:
            raise InvalidInput(f"optimizer {optimizer} has no meta-parameters to train")
        self.optimizer = optimizer.to(config.device)
        self.family, self.config = family, config
        self.run_dir = Path(run_dir)
        self.record = dict(record or {})
        self.monitor = monitor
        self.estimator = TruncatedBPTT(second_order=config.second_order, meta_loss=config.meta_loss)
        self.meta_opt = make_meta_optimizer(
            config.meta_optimizer, list(self.optimizer.parameters()), config.meta_lr
        )
        self.state = TrainingState()
        self.checkpoint_epoch: int | None = None  # the epoch of the latest ``last`` checkpoint
        self.resumed = False  # continuing in a run directory: TensorBoard drops later steps
        self.monitor_failed = False
        # The averaged phi (ema_decay > 0), validated and saved as "best" instead of phi.
        self.average = None
        if config.ema_decay > 0:
            self.average = copy.deepcopy(self.optimizer).requires_grad_(False)

    @property
    def evaluated(self) -> StepOptimizer:
        """The optimizer that validation scores and ``best`` keeps: phi, or its average."""
        return self.optimizer if self.average is None else self.average

    @torch.no_grad()
    def update_average(self) -> None:
        """phi_avg <- d phi_avg + (1 - d) phi, with the warm-up d = min(decay, (1+n)/(10+n))."""
        if self.average is None:
            return
        n = self.state.meta_updates
        decay = min(self.config.ema_decay, (1 + n) / (10 + n))
        for avg, p in zip(self.average.parameters(), self.optimizer.parameters()):
            avg.lerp_(p, 1 - decay)

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
            extra, rest = meta_optimizer_tensors(self.meta_opt)
            if self.average is not None:
                extra.update({EMA_PREFIX + k: v for k, v in self.average.state_dict().items()})
            record["resume"] = {"meta_optimizer": rest, "training_state": asdict(self.state)}
        saved = self.optimizer if kind == "last" else self.evaluated
        save_checkpoint(self.run_dir / "checkpoints" / kind, saved, record, extra)
        if kind == "last":
            self.checkpoint_epoch = self.state.epoch

    def resume(self) -> None:
        """Continue from ``checkpoints/last``: phi, meta-optimizer state, epoch, counters."""
        path = self.run_dir / "checkpoints" / "last.safetensors"
        tensors, record = read_checkpoint(path)
        if "resume" not in record:
            raise CheckpointError(f"checkpoint {path} holds no meta-training state to resume")
        if (
            record["training"]["seed"] != self.config.seed
            or record["task"] != self.family.to_config()
        ):
            raise CheckpointError(
                f"cannot resume {path}: its task/seed differ from this run's configuration"
            )
        load_weights(self.optimizer, tensors, str(path))
        if self.average is not None:
            averaged = {
                k[len(EMA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)
            }
            if not averaged:
                raise CheckpointError(f"cannot resume {path}: it holds no averaged phi (ema_decay)")
            load_weights(self.average, averaged, str(path))
        restore_meta_optimizer(self.meta_opt, tensors, record["resume"]["meta_optimizer"])
        self.state = TrainingState(**record["resume"]["training_state"])
        self.checkpoint_epoch = self.state.epoch
        self._truncate_metrics(self.state.epoch)

    def restart(self) -> None:
        """Start again from epoch 0 in a run directory that has no checkpoint yet (meta-training
        was stopped before its first validation): forget the metrics of that attempt."""
        self._truncate_metrics(0)
        self.resumed = True

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def _truncate_metrics(self, epochs: int) -> None:
        """Keep the metrics of the first ``epochs`` epochs, those the checkpoint covers; the
        epochs after it will be run (and written) again. A last line cut short by a kill is
        dropped; any other unreadable line is an error naming it."""
        self.resumed = True
        path = self.metrics_path
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                if number == len(lines):
                    break  # the line being written when the run was killed
                raise L2OError(
                    f"cannot resume {self.run_dir}: {path} line {number} is not valid JSON "
                    f"({e.msg}); fix or delete that line"
                ) from e
            if entry.get("epoch", epochs) < epochs:
                kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def _write_metrics(self, entry: dict[str, Any], sync: bool = False) -> None:
        """Append the epoch's line; ``sync``: make it durable before a checkpoint covers it."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            if sync:
                os.fsync(f.fileno())

    # -- the loop ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One fresh task, unrolled over the horizon in truncations; phi updated after each."""
        cfg = self.config
        start = time.perf_counter()
        task = self.family.sample(task_seed("train", epoch, cfg.seed), device=cfg.device)
        state = init_unroll(task, self.optimizer)
        coordinates = sum(p.numel() for p in state.params)
        for group in self.meta_opt.param_groups:
            group["lr"] = cfg.meta_lr_at(epoch)
        meta_losses, grad_norms, skipped, final_loss = [], [], 0, math.nan
        for weights in cfg.truncation_weights():
            result = self.estimator.meta_gradient(self.optimizer, task, state, weights)
            if not result.finite:
                # Skip this meta-update and abandon the task: theta has probably diverged.
                skipped += 1
                self.state.nonfinite_total += 1
                self.state.nonfinite_in_a_row += 1
                if self.state.nonfinite_in_a_row >= cfg.max_nonfinite_in_a_row:
                    raise MetaTrainingDiverged(
                        f"{self.state.nonfinite_in_a_row} non-finite meta-losses/gradients in a "
                        f"row at epoch {epoch + 1} (max_nonfinite_in_a_row = "
                        f"{cfg.max_nonfinite_in_a_row}); lower meta.meta_lr or set "
                        f"meta.clip_grad_norm; {self._checkpoints_left()}"
                    )
                break
            self.state.nonfinite_in_a_row = 0
            for p, g in zip(self.optimizer.parameters(), result.grads):
                p.grad = g
            norm = torch.nn.utils.clip_grad_norm_(
                list(self.optimizer.parameters()),
                cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else math.inf,
            )
            self.meta_opt.step()
            self.meta_opt.zero_grad(set_to_none=True)
            self.update_average()
            self.state.meta_updates += 1
            meta_losses.append(result.meta_loss)
            grad_norms.append(float(norm))
            state = result.state
            final_loss = float(result.losses[-1].mean())
        seconds = time.perf_counter() - start
        steps_done = state.step
        return {
            "epoch": epoch,
            "meta_loss": sum(meta_losses) if meta_losses else math.nan,
            "train_final_loss": math.nan if skipped else final_loss,
            "meta_grad_norm": max(grad_norms) if grad_norms else math.nan,
            "nonfinite_skipped": skipped,
            "nonfinite_total": self.state.nonfinite_total,
            "meta_lr": self.meta_opt.param_groups[0]["lr"],
            "coordinate_steps_per_s": coordinates * steps_done / seconds,
        }

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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter() - self.state.seconds
        self._monitor("start", self.state.epoch, self.graph_spec(), self.resumed)
        try:
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
                    self._write_metrics(entry, sync=True)
                    self._monitor("epoch", epoch, entry)
                    self._monitor("flush")
                    self.save_checkpoints(improved)
                else:
                    self._write_metrics(entry)
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
        scores = validate(self.evaluated, self.family, self.config)
        entry["validation_final_loss"] = scores["final_loss"]
        entry["validation_summed_loss"] = scores["summed_loss"]
        entry["validation_curve"] = scores["curve"]
        if self.average is not None:  # the raw phi too, to see what averaging gains
            raw = validate(self.optimizer, self.family, self.config)
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
        """The optimizer's updates and states on validation task 0, for TensorBoard."""
        task = self.family.sample(task_seed("validation", 0), device=self.config.device)
        return state_histograms(self.evaluated, task, self.config.horizon)

    def save_checkpoints(self, improved: bool) -> None:
        """``best`` if the validation improved, ``epoch-N`` with keep_checkpoints, ``last``."""
        if improved:
            self.save("best")
        if self.config.keep_checkpoints:
            self.save(f"epoch-{self.state.epoch:06d}")
        self.save("last")
