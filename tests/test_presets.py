"""The presets in configs/: every training preset loads, and the small ones meta-train."""

from pathlib import Path

import pytest
import torch

from l2o.config import load_config
from l2o.evaluate import rollout
from l2o.evaluate.figures import load_figure_preset
from l2o.meta.seeds import task_seed
from l2o.runs import build_learned_optimizer, train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FIGURE_PRESETS = {"mnist-fig4.toml", "mnist-fig5.toml", "conv-fig6.toml", "art-fig7.toml"}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_preset_loads(path):
    if path.name in FIGURE_PRESETS:
        _, settings = load_figure_preset(path)
        assert settings
    else:
        load_config(path)


def _mean_loss(optimizer, family, horizon):
    """Mean over held-out problems and steps 1..T of f(theta_t): how fast it optimizes."""
    task = family.sample(task_seed("test", 0))
    return rollout(optimizer, task, horizon).losses[1:].mean().item()


@pytest.mark.parametrize(
    "preset,epochs,untrained_over_trained",
    [("simple.toml", 20, 10.0), ("polynomial.toml", 10, 1.5)],
)
def test_small_presets_meta_train(tmp_path, preset, epochs, untrained_over_trained):
    """DeepMind's convergence check (f(x) = x^2) and the 7-coefficient polynomial: a few epochs
    of the preset, at its own sizes but with fewer problems, beat the untrained optimizer."""
    overrides = [f"meta.epochs={epochs}", f"meta.validate_every={epochs}"]
    if preset == "polynomial.toml":
        overrides.append("task.num_problems=16")
    config = load_config(CONFIGS / preset, overrides)
    untrained = build_learned_optimizer(config)
    train(config, tmp_path / "run", quiet=True, tensorboard=False)
    from l2o import load

    trained = load(tmp_path / "run")
    before = _mean_loss(untrained, config.task, config.meta.horizon)
    after = _mean_loss(trained, config.task, config.meta.horizon)
    assert torch.isfinite(torch.tensor(after))
    print(f"{preset}: untrained / trained = {before / after:.3g}")
    assert before / after > untrained_over_trained, (before, after)
