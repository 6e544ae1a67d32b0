"""The quadratic experiment (paper section 3.1): run.py and its results/."""
