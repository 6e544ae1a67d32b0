"""Tools shared by the experiments; each writes into benchmarks/<experiment>/results/."""
