"""Run directories: create them safely, meta-train into them, evaluate what they hold."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from l2o.checkpoint import atomic_write_text, load_weights, read_checkpoint, resolve
from l2o.config import ExperimentConfig, config_from_dict, load_config_dict, to_toml
from l2o.errors import L2OError, RunDirectoryExists
from l2o.meta.train import MetaTrainer, TrainingState
from l2o.monitor import Monitor
from l2o.optimizers import CoordinatewiseLSTM, GroupedOptimizer, StepOptimizer, assign_groups


def prepare_directory(path: str | Path, force: bool) -> Path:
    """Create an empty output directory; an existing non-empty one needs ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirectoryExists(f"{path} exists and is not a directory")
    if path.exists() and any(path.iterdir()):
        if not force:
            raise RunDirectoryExists(
                f"directory {path} exists and is not empty; use --force to overwrite it "
                f"(or --resume to continue a meta-training run)"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_learned_optimizer(
    config: ExperimentConfig, param_names: Sequence[str] | None = None
) -> StepOptimizer:
    """phi initialised from the run's seed alone, so a run is reproducible.

    One LSTM for all parameters, or, with ``config.groups``, a ``GroupedOptimizer`` whose
    groups are assigned by their glob patterns to ``param_names`` (default: those of the
    config's task); each learned group gets its own weights."""
    if not config.groups:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.meta.seed)
            return CoordinatewiseLSTM(config.optimizer)
    if param_names is None:
        param_names = config.task.sample(0).param_names
    assignment = assign_groups(param_names, config.group_patterns())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.meta.seed)
        return GroupedOptimizer({name: g.build() for name, g in config.groups.items()}, assignment)


def initialise_from(optimizer: StepOptimizer, source: str) -> None:
    """Load a trained optimizer's weights into ``optimizer`` (``meta.init_from``): a pretrained
    name, checkpoint or run directory whose optimizer has the same architecture (spec). An
    ungrouped one initialises every learned group of a grouped optimizer (e.g. the MNIST LSTM
    as the start of both the conv and the fc LSTM)."""
    path = resolve(source)
    tensors, record = read_checkpoint(path)
    theirs = record.get("optimizer") or {}
    if isinstance(optimizer, GroupedOptimizer) and theirs.get("kind") != "grouped":
        targets = {
            f"the config's group {g!r}": opt
            for g, opt in optimizer.groups.items()
            if opt.is_learned
        }
    else:
        targets = {"the config's": optimizer}
    for name, target in targets.items():
        ours = target.spec()
        if theirs != ours:
            differ = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
            details = ", ".join(
                f"{k} = {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ
            )
            raise L2OError(
                f"cannot initialise from {source!r}: its optimizer differs from {name} "
                f"({details}); set the optimizer.* options to match it"
            )
        load_weights(target, tensors, str(path))


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    force: bool = False,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
) -> TrainingState:
    """Meta-train as ``config`` says into ``run_dir`` (a new directory, or one to resume).

    Progress goes to stdout (a bar on a terminal, log lines otherwise; nothing if ``quiet``),
    TensorBoard event files to ``run_dir/tensorboard``."""
    run_dir = Path(run_dir)
    if resume:
        saved = run_dir / "config.toml"
        if not saved.is_file():
            raise L2OError(f"cannot resume: {saved} not found (is {run_dir} a run directory?)")
        # Only the number of epochs may change on resume (to train for longer).
        saved_config = config_from_dict(load_config_dict(saved)).to_dict()
        saved_config["meta"]["epochs"] = config.meta.epochs
        if saved_config != config.to_dict():
            raise L2OError(
                f"cannot resume {run_dir}: the configuration differs from {saved} "
                f"(only meta.epochs may change)"
            )
    optimizer = build_learned_optimizer(config)  # before any file is written: groups may not fit
    if config.meta.init_from and not resume:  # resuming loads phi from checkpoints/last
        initialise_from(optimizer, config.meta.init_from)
    if not resume:
        prepare_directory(run_dir, force)
    atomic_write_text(run_dir / "config.toml", to_toml(config.to_dict()))
    trainer = MetaTrainer(
        optimizer,
        config.task,
        config.meta,
        run_dir,
        # Group patterns, so that the optimizer can be assigned to another net's parameters.
        record={"groups": config.group_patterns()} if config.groups else None,
        monitor=Monitor(run_dir, config.meta.epochs, quiet=quiet, tensorboard=tensorboard),
    )
    if resume:
        trainer.resume()
    return trainer.run()
