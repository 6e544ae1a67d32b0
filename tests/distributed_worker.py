"""Run by tests/test_distributed.py under torchrun (2 processes, gloo): each check computes a
quantity shared among the processes and the single process's, and rank 0 writes how far apart
they are to OUT/worker.json.

    torchrun --nproc_per_node=2 tests/distributed_worker.py OUT
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from l2o.config import config_from_dict
from l2o.distributed import World, init_from_environment
from l2o.meta.train import MetaTrainer, validate
from l2o.optim import LearnedOptimizer, ShardedLearnedOptimizer
from l2o.optimizers import Adam, CoordinatewiseLSTM, LSTMConfig, MLPOptimizerConfig, PerParameterMLP
from l2o.runs import build_learned_optimizer

# The small preset of the tests: 10-d quadratics, 8 problems a task, T = 10 in truncations of 5.
META = {"horizon": 10, "truncation": 5, "validation_tasks": 3, "epochs": 4}
TASK = {"name": "quadratic", "num_problems": 8}


def meta_gradients(world: World, run_dir: Path, **meta) -> list[torch.Tensor]:
    """The meta-gradients that phi steps along in epoch 0 (one per truncation), flattened."""
    config = config_from_dict({"task": TASK, "meta": {**META, **meta}})
    trainer = MetaTrainer(
        build_learned_optimizer(config), config.task, config.meta, run_dir, world=world
    )
    seen = []
    step = trainer.meta_opt.step

    def record(grads):
        seen.append(torch.cat([g.reshape(-1) for g in grads]).clone())
        return step(grads)

    trainer.meta_opt.step = record
    trainer.train_epoch(0)
    return seen


def relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max |a - b| / max |b| over the list (inf if the lengths differ)."""
    if len(a) != len(b) or not a:
        return float("inf")
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b))


def sharded_steps(world: World, optimizer, steps: int = 4) -> dict[str, float]:
    """A small net trained for ``steps`` steps by the sharded and the unsharded step from the
    same start on the same batches: how far apart the parameters end, relative to how far they
    moved."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 3))
    start = [p.detach().clone() for p in net.parameters()]
    plain, sharded = copy.deepcopy(net), copy.deepcopy(net)
    opts = [
        LearnedOptimizer(plain.parameters(), optimizer, weight_decay=1e-3),
        ShardedLearnedOptimizer(sharded.parameters(), optimizer, weight_decay=1e-3, world=world),
    ]
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x, y = torch.randn(16, 7, generator=g), torch.randn(16, 3, generator=g)
        for model, opt in zip((plain, sharded), opts):
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step(loss=loss)
    with torch.no_grad():
        moved = max(float((p - s).abs().max()) for p, s in zip(plain.parameters(), start))
        apart = max(
            float((p - q).abs().max()) for p, q in zip(plain.parameters(), sharded.parameters())
        )
    state = sum(
        t.numel() for s in opts[1]._shards.values() for st in s.inner.state.values()
        for t in _tensors(st)
    )  # fmt: skip
    full = sum(t.numel() for st in opts[0].state.values() for t in _tensors(st))
    return {"relative": apart / moved, "state_fraction": state / full}


def _tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in _tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _tensors(v)]
    return []


def main(out: Path) -> None:
    world = init_from_environment()
    assert world.size == 2, world
    single = World()
    results: dict[str, float] = {}
    for name, meta in {
        "tbptt": {"tasks_per_epoch": 2},
        "tbptt-3-tasks": {"tasks_per_epoch": 3},
        "es": {"estimator": "es", "pairs": 3},
        "pes": {"estimator": "pes", "pairs": 3, "tasks_per_epoch": 2},
    }.items():
        shared = meta_gradients(world, out / name, **meta)
        if world.is_main:
            results[f"meta_gradient_{name}"] = relative(
                shared, meta_gradients(single, out / f"{name}-single", **meta)
            )
    config = config_from_dict({"task": TASK, "meta": META})
    optimizer = build_learned_optimizer(config)
    scores = validate(optimizer, config.task, config.meta, world)
    if world.is_main:
        alone = validate(optimizer, config.task, config.meta, single)
        results["validation_equal"] = float(scores == alone)
    torch.manual_seed(0)
    for name, optimizer in {
        "lstm": CoordinatewiseLSTM(LSTMConfig(hidden_size=8)),
        "mlp": PerParameterMLP(MLPOptimizerConfig()),
        "adam": Adam(lr=1e-2),
    }.items():
        found = sharded_steps(world, optimizer)
        results[f"sharded_{name}"] = found["relative"]
        results[f"sharded_{name}_state_fraction"] = found["state_fraction"]
    if world.is_main:
        (out / "worker.json").write_text(json.dumps(results, indent=1))
    # Both ranks leave together: a rank that tore its process group down while the other was
    # still writing was seen to abort at exit ("terminate called without an active exception")
    # on a loaded machine.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
