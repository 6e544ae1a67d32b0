"""The former name of benchmarks/checkpoints.py: the commands recorded in older result files
(benchmarks/results/mnist-*.md, conv-*.md) run it under this name."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("checkpoints.py")), run_name="__main__")
