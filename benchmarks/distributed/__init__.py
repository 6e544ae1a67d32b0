"""Meta-training in 1 and 2 processes under torchrun (issue #29): run.py and its results/."""
