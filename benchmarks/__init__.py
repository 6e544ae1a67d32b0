"""The benchmarks of l2o, one folder per experiment, each with its script and its results.

Run them as modules from the repository root, e.g. ``python -m benchmarks.mnist.run``; see
benchmarks/README.md for what each measures and where it writes.
"""
