"""Disjoint streams of task seeds: meta-training, validation and test tasks never coincide."""

from __future__ import annotations

import numpy as np

from l2o.errors import InvalidInput

# "perturbations": the eps of ES / PES in each meta-training epoch.
STREAMS = {"train": 0, "validation": 1, "test": 2, "perturbations": 3}


def task_seed(stream: str, index: int, base_seed: int = 0) -> int:
    """The seed of task ``index`` of ``stream`` ("train", "validation", "test" or
    "perturbations").

    A hash of (stream, base_seed, index), so the three streams do not overlap in practice and a
    run's tasks are reproducible from its seed alone (which is what makes resume exact).
    """
    if stream not in STREAMS:
        raise InvalidInput(f"unknown seed stream {stream!r} (valid: {', '.join(STREAMS)})")
    sequence = np.random.SeedSequence([STREAMS[stream], base_seed, index])
    # 63 bits: collisions between streams are out of reach for any realistic run length.
    return int(sequence.generate_state(1, dtype=np.uint64)[0]) >> 1
