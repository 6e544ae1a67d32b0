"""The sharded learned optimizer step (``l2o.optim.ShardedLearnedOptimizer``) against the
unsharded one (``LearnedOptimizer``) on every process: seconds per step and state per
process, on ``nn.Linear(SIZE, SIZE)`` with the pretrained ``quadratic-lstm``; and how far
apart their parameters end. Run by ``benchmarks.distributed.run`` under torchrun (and alone,
as one process); prints one JSON line from rank 0.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        -m benchmarks.distributed.sharded_step --size 1000 --steps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import l2o
from l2o.distributed import finish, init_from_environment
from l2o.optim import LearnedOptimizer, ShardedLearnedOptimizer


def state_bytes(states) -> int:
    total = 0
    for value in states:
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            total += state_bytes(value.values())
        elif isinstance(value, (list, tuple)):
            total += state_bytes(value)
    return total


def timed(opt, model, grads, steps: int, barrier) -> list[float]:
    times = []
    for step in range(steps + 1):  # the first builds the state: not timed
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        barrier()
        start = time.perf_counter()
        opt.step()
        barrier()
        if step:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizer", default="quadratic-lstm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = init_from_environment()
    barrier = world.barrier
    torch.manual_seed(0)
    net = torch.nn.Linear(args.size, args.size)
    grads = [torch.randn_like(p) * 1e-3 for p in net.parameters()]
    optimizer = l2o.load(args.optimizer)
    plain, sharded = torch.nn.Linear(args.size, args.size), torch.nn.Linear(args.size, args.size)
    plain.load_state_dict(net.state_dict())
    sharded.load_state_dict(net.state_dict())
    opt_plain = LearnedOptimizer(plain.parameters(), optimizer)
    opt_sharded = ShardedLearnedOptimizer(sharded.parameters(), optimizer, world=world)
    plain_times = timed(opt_plain, plain, grads, args.steps, barrier)
    sharded_times = timed(opt_sharded, sharded, grads, args.steps, barrier)
    with torch.no_grad():
        moved = max(
            float((p - q).abs().max()) for p, q in zip(plain.parameters(), net.parameters())
        )
        apart = max(
            float((p - q).abs().max()) for p, q in zip(plain.parameters(), sharded.parameters())
        )
    shard_state = sum(state_bytes(s.inner.state.values()) for s in opt_sharded._shards.values())
    found = {
        "processes": world.size,
        "parameters": sum(p.numel() for p in net.parameters()),
        "optimizer": args.optimizer,
        "steps": args.steps,
        "unsharded_seconds_per_step": statistics.median(plain_times),
        "sharded_seconds_per_step": statistics.median(sharded_times),
        "unsharded_state_bytes": state_bytes(opt_plain.state.values()),
        "sharded_state_bytes_this_process": shard_state,
        "parameters_apart_over_moved": apart / moved,
    }
    if world.is_main:
        print(json.dumps(found), flush=True)
    if world.distributed:
        finish()


if __name__ == "__main__":
    main()
