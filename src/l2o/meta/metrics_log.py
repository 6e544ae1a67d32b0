"""A run's ``metrics.jsonl``: one JSON line per epoch, that a resumed run cuts back to the epochs
its checkpoint covers, so that every epoch appears once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from l2o.checkpoint import atomic_write_text
from l2o.errors import L2OError


class MetricsLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, entry: dict[str, Any], sync: bool = False) -> None:
        """Append the epoch's line; ``sync``: make it durable before a checkpoint covers it."""
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            if sync:
                os.fsync(f.fileno())

    def truncate(self, epochs: int) -> None:
        """Keep the lines of the first ``epochs`` epochs, those the checkpoint covers; the
        epochs after it will be run (and written) again. A last line cut short by a kill is
        dropped; any other unreadable line is an error naming it."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                if number == len(lines):
                    break  # the line being written when the run was killed
                raise L2OError(
                    f"cannot resume {self.path.parent}: {self.path} line {number} is not valid "
                    f"JSON ({e.msg}); fix or delete that line"
                ) from e
            if entry.get("epoch", epochs) < epochs:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
