"""The neural art experiment (paper section 3.4, Figs. 7-8): run.py and its results/."""
