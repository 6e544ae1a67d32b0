"""Run directories: create them safely, meta-train into them, evaluate what they hold.

Nothing is lost: every input of a command (configuration, checkpoint, dataset, device) is
checked before the first file is written, and ``--force`` replaces only a directory that l2o
created for the same kind of output (its ``.l2o`` marker says which), never one that holds an
input of the command, the current directory, the home directory or an ancestor of them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from l2o.checkpoint import (
    atomic_write_text,
    checkpoint_path,
    load_weights,
    read_checkpoint,
    remove_interrupted_writes,
    resolve,
)
from l2o.config import ExperimentConfig, config_from_dict, load_config_dict, to_toml
from l2o.devices import check_device
from l2o.distributed import World
from l2o.errors import InvalidInput, L2OError, RunDirectoryExists
from l2o.meta.train import MetaTrainer, TrainingState
from l2o.monitor import Monitor
from l2o.optimizers import (
    LSTMGAC,
    NTMBFGS,
    CoordinatewiseLSTM,
    GroupedOptimizer,
    LSTMGACConfig,
    MLPOptimizerConfig,
    NTMBFGSConfig,
    PerParameterMLP,
    RNNprop,
    RNNpropConfig,
    StepOptimizer,
    assign_groups,
)

MARKER = ".l2o"  # {"kind": ..., "l2o_version": ...} in every directory that l2o creates
KINDS = ("run", "evaluation", "demo")


def directory_kind(path: str | Path) -> str | None:
    """The kind of output l2o created ``path`` for (its marker), or None if it has no marker."""
    try:
        return json.loads((Path(path) / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _check_replaceable(path: Path, kind: str, inputs: Iterable[str | Path]) -> None:
    """Refuse (one line, naming the reason) to let ``--force`` delete ``path``."""
    target = path.resolve()
    refuse = f"refusing to replace {path} with --force"
    protected = [("the current directory", Path.cwd()), ("your home directory", Path.home())]
    protected += [(f"{p}, an input of this command", Path(p)) for p in inputs]
    for what, other in protected:
        other = other.expanduser().resolve()
        if target == other or target in other.parents:
            held = "is" if target == other else "holds"
            raise RunDirectoryExists(f"{refuse}: it {held} {what}")
    found = directory_kind(path)
    if found is None:
        raise RunDirectoryExists(
            f"{refuse}: l2o did not create it (no {MARKER} marker in it); delete it yourself "
            f"or choose another directory"
        )
    if found != kind:
        raise RunDirectoryExists(
            f"{refuse}: it holds an l2o {found} directory, not an {kind} directory; "
            f"choose another directory"
        )


def prepare_directory(
    path: str | Path, force: bool, kind: str, inputs: Iterable[str | Path] = ()
) -> Path:
    """Create an empty output directory for ``kind`` of output and mark it as l2o's.

    An existing empty directory (or one that holds only the marker: a command killed just
    after creating it) is used as it is; a non-empty one needs ``force``, and even
    then is replaced only if l2o created it for the same ``kind`` and it is none of the
    protected places (it holds none of ``inputs``, and is not the current or home directory or
    an ancestor of them). Call it only once every input has been validated: it is the first
    write of a command."""
    if kind not in KINDS:
        raise InvalidInput(f"Invalid directory kind: {kind!r} (valid: {', '.join(KINDS)})")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirectoryExists(f"{path} exists and is not a directory")
    if path.exists() and any(p.name != MARKER for p in path.iterdir()):
        if not force:
            raise RunDirectoryExists(
                f"directory {path} exists and is not empty; use --force to overwrite it "
                f"(or --resume to continue a meta-training run)"
            )
        _check_replaceable(path, kind, inputs)
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    from l2o import __version__

    atomic_write_text(path / MARKER, json.dumps({"kind": kind, "l2o_version": __version__}) + "\n")
    return path


def build_learned_optimizer(
    config: ExperimentConfig, param_names: Sequence[str] | None = None
) -> StepOptimizer:
    """phi initialised from the run's seed alone, so a run is reproducible.

    One optimizer for all parameters (the LSTM, the MLP of ``[optimizer] kind = "mlp"``,
    RNNprop of ``kind = "rnnprop"``, LSTM+GAC of ``"lstm-gac"`` or NTM-BFGS of ``"ntm-bfgs"``), or, with ``config.groups``, a ``GroupedOptimizer`` whose
    groups are assigned by their glob patterns to ``param_names`` (default: those of the
    config's task); each learned group gets its own weights."""
    if not config.groups:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.meta.seed)
            if isinstance(config.optimizer, MLPOptimizerConfig):
                return PerParameterMLP(config.optimizer)
            if isinstance(config.optimizer, RNNpropConfig):
                return RNNprop(config.optimizer)
            if isinstance(config.optimizer, LSTMGACConfig):
                return LSTMGAC(config.optimizer)
            if isinstance(config.optimizer, NTMBFGSConfig):
                return NTMBFGS(config.optimizer)
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


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_resumable(config: ExperimentConfig, run_dir: Path) -> int:
    """Check that ``run_dir`` is a run of ``config`` (only meta.epochs may differ, and not be
    fewer than the epochs done). Returns the epochs its last checkpoint has done (0: none)."""
    saved = run_dir / "config.toml"
    if not saved.is_file():
        raise L2OError(f"cannot resume: {saved} not found (is {run_dir} a run directory?)")
    theirs = _flatten(config_from_dict(load_config_dict(saved)).to_dict())
    ours = _flatten(config.to_dict())
    differ = sorted(
        k for k in {*theirs, *ours} if k != "meta.epochs" and theirs.get(k) != ours.get(k)
    )
    if differ:
        details = ", ".join(f"{k} = {theirs.get(k)!r} there, {ours.get(k)!r} now" for k in differ)
        raise L2OError(
            f"cannot resume {run_dir}: the configuration differs from {saved} ({details}); "
            f"only meta.epochs may change"
        )
    last = checkpoint_path(run_dir / "checkpoints" / "last")
    if not last.is_file():
        return 0
    done = int(read_checkpoint(last)[1].get("epoch", 0))
    if config.meta.epochs < done:
        raise L2OError(
            f"cannot resume {run_dir} with meta.epochs = {config.meta.epochs}: it has done {done} "
            f"epochs already (set meta.epochs > {done} to train for longer; nothing was changed)"
        )
    return done


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    force: bool = False,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
    inputs: Sequence[str | Path] = (),
    restarted: bool = False,
    world: World | None = None,
) -> TrainingState:
    """Meta-train as ``config`` says into ``run_dir`` (a new directory, or one to resume).

    Everything is checked before the first file is written: the configuration, the device, the
    dataset files and ``meta.init_from``'s checkpoint. ``inputs``: more files the caller read
    (the config file), which ``force`` must not delete. ``resume`` continues from
    ``checkpoints/last`` (or from epoch 0 if the run stopped before its first checkpoint);
    ``metrics.jsonl`` and TensorBoard are cut back to that epoch, so every epoch appears once.

    Progress goes to stdout (a bar on a terminal, log lines otherwise; nothing if ``quiet``),
    TensorBoard event files to ``run_dir/tensorboard``.

    ``world``: the processes of a torchrun job (``l2o.distributed``; default: this process
    alone), which all call it alike: each checks its own inputs (device, dataset, ``init_from``) and a failure on any of
    them stops all with one line; rank 0 alone reads and writes ``run_dir``; the processes
    share the epochs (see ``l2o.meta.train``). ``restarted``: torchrun restarted the job
    (``--max-restarts``): continue the run in ``run_dir`` if the first attempt got as far as
    writing its config (as ``resume``), else start it (never ``force``: that would delete what
    the first attempt did)."""
    run_dir = Path(run_dir)
    world = world or World()
    if force and resume:
        raise InvalidInput("--force and --resume cannot be combined (resume keeps the run)")
    if restarted:
        resume = resume or world.from_main(lambda: (run_dir / "config.toml").is_file())
        force = False

    def check_inputs() -> StepOptimizer:
        from l2o.meta.train import check_split, trainable_names

        check_device(config.meta.device)
        world.check_device(config.meta.device)
        check_split(config.meta, world.size)
        locate_data = getattr(config.task, "locate_data", None)
        if locate_data is not None:
            locate_data()  # reads and verifies the dataset files
        # before any file is written: groups may not fit, patterns may match nothing
        optimizer = build_learned_optimizer(config)
        trainable_names(optimizer, config.meta.train_only)
        return optimizer

    optimizer = world.agree(check_inputs)
    done = world.from_main(lambda: _check_resumable(config, run_dir) if resume else 0)
    protected = [*inputs]
    if config.meta.init_from and done == 0:  # resuming loads phi from checkpoints/last
        protected.append(resolve(config.meta.init_from))
        world.agree(lambda: initialise_from(optimizer, config.meta.init_from))
    if getattr(config.task, "data_dir", ""):
        protected.append(config.task.data_dir)

    def prepare() -> None:
        if not resume:
            prepare_directory(run_dir, force, "run", protected)
        for directory in (run_dir, run_dir / "checkpoints"):
            remove_interrupted_writes(directory)
        atomic_write_text(run_dir / "config.toml", to_toml(config.to_dict()))

    world.from_main(prepare)
    if world.is_main and not quiet:  # announced once the inputs are checked and the run made
        processes = f" in {world.size} processes" if world.distributed else ""
        print(
            f"meta-training on {config.task.name} for {config.meta.epochs} epochs{processes} -> "
            f"{run_dir}",
            flush=True,
        )
    from l2o.evaluate.behaviour import state_histograms

    trainer = MetaTrainer(
        optimizer,
        config.task,
        # each process on its own GPU when several share a node (meta.device = "cuda")
        replace(config.meta, device=world.device(config.meta.device)),
        run_dir,
        # Group patterns, so that the optimizer can be assigned to another net's parameters.
        record={"groups": config.group_patterns()} if config.groups else None,
        monitor=(
            Monitor(run_dir, config.meta.epochs, quiet=quiet, tensorboard=tensorboard)
            if world.is_main
            else None
        ),
        histograms=state_histograms,  # of the validated optimizer, for TensorBoard
        world=world,
    )
    if done:
        trainer.resume()
        before = trainer.resumed_from_processes
        if before != world.size and world.is_main and not quiet:
            print(
                f"resuming a run of {before} process{'es' if before > 1 else ''} with "
                f"{world.size}: the same meta-batch (meta.tasks_per_epoch = "
                f"{config.meta.tasks_per_epoch}), its meta-gradients summed in another order "
                f"(equal to float rounding, not bit for bit)",
                flush=True,
            )
    elif resume:  # stopped before its first checkpoint: start again from epoch 0
        trainer.restart()
    return trainer.run()
