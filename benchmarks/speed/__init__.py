"""What one step() of a learned optimizer costs next to Adam: run.py and its results/."""
