"""The conv net experiment (paper section 3.3, Fig. 6): run.py and its results/."""
