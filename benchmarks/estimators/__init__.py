"""Meta-gradient estimators side by side (issue #26): run.py and its results/."""
