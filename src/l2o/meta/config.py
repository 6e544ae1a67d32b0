"""The [meta] section of a config file: how phi is meta-trained, as one flat table.

``MetaTrainConfig`` holds the options as config files, a run's ``config.toml`` and checkpoints'
``training`` records write them: one flat table of the keys below. They fall into three parts,
each validated and used by its own module:

    config.objective               MetaObjective (l2o.meta.objective): what L(phi) is and how
                                   its gradient is estimated
    config.meta_optimizer_config   MetaOptimizerConfig (l2o.meta.meta_optimizer): clip ->
                                   Adam / SGD / RMSprop -> learning-rate schedule
    config.run                     RunConfig (below; used by l2o.meta.train): epochs,
                                   validation, checkpoints, averaging, seed, device

Values renamed since l2o first wrote records (``RENAMED``) are refused in a config, with one
line saying what to write instead; records that an older l2o wrote are read in today's names
(``upgrade_record``, which ``l2o.config.config_from_dict`` applies), so that old runs resume
and old checkpoints keep their recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from l2o.checks import check_positive_int, check_real
from l2o.errors import InvalidInput
from l2o.meta.meta_optimizer import MetaOptimizerConfig
from l2o.meta.objective import MetaObjective

# {option: {old value: (new value, why)}}: value names changed since l2o first wrote records.
RENAMED = {
    "meta_loss": {
        "sum": (
            "plain",
            'each term is f(theta_t), as in the paper; "sum" is a value of meta.loss_weights',
        )
    },
}


def upgrade_record(options: Mapping[str, Any]) -> dict[str, Any]:
    """[meta] options as any l2o wrote them (a run's config.toml, a checkpoint's "training"
    record), in today's value names (``RENAMED``)."""
    upgraded = dict(options)
    for name, renames in RENAMED.items():
        value = upgraded.get(name)
        if isinstance(value, str) and value in renames:
            upgraded[name] = renames[value][0]
    return upgraded


@dataclass(frozen=True)
class RunConfig:
    """The [meta] options of the run itself (documented in MetaTrainConfig)."""

    epochs: int
    tasks_per_epoch: int
    normalize_task_gradients: bool
    validate_every: int
    validation_tasks: int
    keep_checkpoints: bool
    ema_decay: float
    init_from: str
    seed: int
    max_nonfinite_in_a_row: int
    device: str

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "tasks_per_epoch",
            "validate_every",
            "validation_tasks",
            "max_nonfinite_in_a_row",
        ):
            check_positive_int(name, getattr(self, name))
        for name in ("keep_checkpoints", "normalize_task_gradients"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInput(
                    f"Invalid {name}: {getattr(self, name)!r} (must be true or false)"
                )
        check_real(
            "ema_decay", self.ema_decay, lambda x: 0 <= x < 1, "must be in [0, 1); 0 = no averaging"
        )
        if not isinstance(self.init_from, str):
            raise InvalidInput(
                f"Invalid init_from: {self.init_from!r} (must be a string: a pretrained name, "
                f'a checkpoint or a run directory; "" = random init)'
            )
        seed = self.seed
        if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
            raise InvalidInput(f"Invalid seed: {seed!r} (must be an integer >= 0)")
        try:
            if not isinstance(self.device, str):
                raise RuntimeError(self.device)
            torch.device(self.device)
        except RuntimeError as e:
            raise InvalidInput(f"Invalid device: {self.device!r} (e.g. cpu, cuda, cuda:1)") from e


@dataclass(frozen=True)
class MetaTrainConfig:
    """How phi is meta-trained. Defaults follow the paper (T = 100, K = 20, Adam 1e-3).
    The options fall into three parts: the objective, L(phi) = sum_t w_t f(theta_t) and how its
    gradient is estimated (horizon, truncation, loss_weights, meta_loss, second_order,
    estimator, sigma, pairs); the
    meta-optimizer (meta_optimizer, meta_lr, meta_lr_schedule, meta_lr_decay_from,
    clip_grad_norm); and the run (the others)."""

    epochs: int = 2000  # meta-training epochs: fresh tasks each, unrolled over the horizon
    # The meta-batch: tasks drawn per epoch; after each truncation phi steps along the mean of
    # their meta-gradients. Under torchrun the processes share them out (ES / PES: tasks x
    # pairs), at least one each; the result is the single process's (docs/distributed.md).
    tasks_per_epoch: int = 1
    # Divide each task's meta-gradient of a truncation by its norm before the mean over the
    # meta-batch, so that every task sets the direction of phi's step equally (a mixture's
    # tasks differ in meta-gradient scale by orders of magnitude: under the log meta-loss a
    # quadratic's can be 100 times an MLP's and would decide the direction alone).
    normalize_task_gradients: bool = False
    horizon: int = 100  # T: inner steps per task
    truncation: int = 20  # K: steps per truncated-BPTT segment
    # w_t of L = sum_t w_t f(theta_t): "sum" (w_t = 1, the paper), "mean" (w_t = 1/T), "last"
    # (only the last step of each truncation, i.e. f(theta_T) when K = T) or "linear" (w_t = t/T:
    # the later steps, nearer the f(theta_T) that evaluation reports, weigh more).
    loss_weights: str = "sum"
    # The form of each term w_t f(theta_t) of L: "plain" = f(theta_t) itself (the paper; called
    # "sum" before, a name that meta.loss_weights also uses); "relative" = the truncation's sum
    # divided by the mean loss at its start (equalises meta-gradient scales across truncations);
    # "log" = log f(theta_t).
    meta_loss: str = "plain"
    second_order: bool = False  # keep d grad_t / d phi (the paper drops it)
    # How each truncation's meta-gradient is estimated: "tbptt" (truncated backpropagation
    # through time, the paper), "es" (antithetic evolution strategies over the truncation; over
    # the whole unroll when truncation = horizon) or "pes" (persistent evolution strategies,
    # Vicol et al. 2021: unbiased for the whole horizon). ES and PES need no backward pass.
    estimator: str = "tbptt"
    sigma: float = 0.01  # ES / PES: standard deviation of each coordinate of the perturbation
    pairs: int = 8  # ES / PES: antithetic pairs phi +- eps per meta-gradient (2 x pairs unrolls)
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
    # Meta-train only the optimizer parameters whose names match one of these glob patterns
    # (names as ``optimizer.named_parameters()`` gives them, e.g. ["output.*",
    # "adaptation_log_gain"]); the others keep their values (from init_from, or the init).
    # ES / PES perturb only those, so their estimates are as noisy as that many parameters
    # make them, not as all of phi. [] = train every parameter.
    train_only: tuple[str, ...] = ()
    validate_every: int = 100  # epochs between validations (and checkpoints)
    # Also keep what every validation scored as checkpoints/epoch-NNNNNN (not only best / last),
    # e.g. to compare checkpoints on test runs after the fact.
    keep_checkpoints: bool = False
    validation_tasks: int = 2  # tasks drawn from the validation seed stream
    seed: int = 0  # seeds phi's init and the training tasks (validation tasks are fixed)
    max_nonfinite_in_a_row: int = 10  # stop after this many skipped meta-updates in a row
    device: str = "cpu"  # torch device of tasks, unrolls and phi: cpu, cuda, cuda:1, mps

    def __post_init__(self) -> None:
        for name, renames in RENAMED.items():
            value = getattr(self, name)
            if isinstance(value, str) and value in renames:
                new, why = renames[value]
                raise InvalidInput(
                    f'meta.{name} = "{value}" is now "{new}" ({why}): write {name} = "{new}"'
                )
        patterns = self.train_only
        if isinstance(patterns, list):  # as TOML gives it
            patterns = tuple(patterns)
            object.__setattr__(self, "train_only", patterns)
        if not isinstance(patterns, tuple) or not all(isinstance(p, str) and p for p in patterns):
            raise InvalidInput(
                f"Invalid train_only: {patterns!r} (a list of glob patterns of the optimizer's "
                f'parameter names, e.g. ["output.*"]; [] = train all)'
            )
        # Building each part checks its options (one line naming a bad value).
        _ = self.run, self.objective, self.meta_optimizer_config

    @property
    def objective(self) -> MetaObjective:
        return MetaObjective(
            horizon=self.horizon,
            truncation=self.truncation,
            loss_weights=self.loss_weights,
            meta_loss=self.meta_loss,
            second_order=self.second_order,
            estimator=self.estimator,
            sigma=self.sigma,
            pairs=self.pairs,
        )

    @property
    def meta_optimizer_config(self) -> MetaOptimizerConfig:
        # Not "meta_optimizer": that option names the step (adam, sgd, rmsprop).
        return MetaOptimizerConfig(
            meta_optimizer=self.meta_optimizer,
            meta_lr=self.meta_lr,
            meta_lr_schedule=self.meta_lr_schedule,
            meta_lr_decay_from=self.meta_lr_decay_from,
            clip_grad_norm=self.clip_grad_norm,
        )

    @property
    def run(self) -> RunConfig:
        return RunConfig(
            epochs=self.epochs,
            tasks_per_epoch=self.tasks_per_epoch,
            normalize_task_gradients=self.normalize_task_gradients,
            validate_every=self.validate_every,
            validation_tasks=self.validation_tasks,
            keep_checkpoints=self.keep_checkpoints,
            ema_decay=self.ema_decay,
            init_from=self.init_from,
            seed=self.seed,
            max_nonfinite_in_a_row=self.max_nonfinite_in_a_row,
            device=self.device,
        )
