"""The MNIST MLP experiment (paper section 3.2, Figs. 3-5): run.py and its results/."""
