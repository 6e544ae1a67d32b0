"""The pipelines behind the l2o command, called from Python."""

import pytest

from l2o.errors import InvalidInput
from l2o.pipelines import evaluate_checkpoint


def test_evaluate_a_pretrained_optimizer_from_python(tmp_path):
    out = tmp_path / "evaluation"
    result = evaluate_checkpoint(
        "quadratic-lstm", out, steps=10, test_tasks=1, validation_tasks=1,
        baselines=["adam"], grid=[0.01, 0.1], quiet=True,
    )  # fmt: skip
    assert set(result["optimizers"]) == {"lstm", "adam"}
    assert result["steps"] == 10 and result["lstm_over_adam"] > 0
    for name in ("results.json", "report.md", "loss.png", "final_loss.png", ".l2o"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"test_tasks": 0}, "Invalid test_tasks: 0"),
        ({"baselines": ["adamw"]}, "unknown optimizer 'adamw'"),
        ({"overrides": ["meta.epochs=3"]}, "only task.* may be set"),
        ({"task": "nonsense"}, "unknown task 'nonsense'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        evaluate_checkpoint("quadratic-lstm", tmp_path / "evaluation", quiet=True, **kwargs)
    assert not (tmp_path / "evaluation").exists()
