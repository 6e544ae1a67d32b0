"""Figures that say what they draw: final-loss bars, update-vs-gradient axes, metrics.jsonl."""

import itertools
import json
import math

import matplotlib
import pytest
import torch
from matplotlib.container import ErrorbarContainer

from l2o.cli import main
from l2o.errors import InvalidInput, L2OError
from l2o.evaluate.behaviour import gradient_decades, two_d_task, update_vs_gradient_figure
from l2o.evaluate.compare import OptimizerResult
from l2o.evaluate.draw import draw, read_metrics
from l2o.evaluate.report import final_loss_figure

matplotlib.use("Agg")


def comparison(finals: dict[str, list[float]], steps: int = 5) -> dict:
    """A results.json as ``compare`` writes it, of optimizers with these final losses (one per
    run); the losses before the last step are 1."""
    optimizers = {}
    for name, final in finals.items():
        losses = torch.ones(steps + 1, len(final), dtype=torch.float64)
        losses[-1] = torch.tensor(final)
        optimizers[name] = OptimizerResult(name, losses, 1.0).summary()
    return {"task": {"name": "toy"}, "steps": steps, "runs": len(final), "optimizers": optimizers}


def test_final_loss_bars_are_medians_with_whiskers_at_the_quartiles():
    # A skewed spread: one bad run puts the mean (0.218) far above the 75th percentile (0.031).
    finals = {"lstm": [0.01, 0.02, 0.03, 0.031, 1.0], "adam": [0.2, 0.3, 0.4, 0.5, 0.6]}
    fig = final_loss_figure(comparison(finals))
    ax = fig.axes[0]
    bars = [patch.get_height() for patch in ax.patches]
    whiskers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(whiskers) == 2
    for height, container, final in zip(bars, whiskers, finals.values()):
        q25, median, q75 = torch.tensor(final, dtype=torch.float64).quantile(
            torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
        )
        ((x0, low), (x1, high)) = container.lines[2][0].get_segments()[0]
        assert x0 == x1
        assert height == pytest.approx(float(median))
        assert (low, high) == (pytest.approx(float(q25)), pytest.approx(float(q75)))
    label = ax.get_ylabel()
    assert "median" in label and "25th–75th percentile" in label
    assert ax.get_yscale() == "log"


def test_final_loss_bars_show_diverged_runs():
    inf = math.inf
    finals = {
        "ok": [0.1, 0.2, 0.3, 0.4, 0.5],
        "some": [0.1, 0.2, 0.3, inf, inf],  # a median, but an infinite 75th percentile
        "most": [0.1, 0.2, inf, inf, inf],  # an infinite median
    }
    fig = final_loss_figure(comparison(finals))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["ok", "some\n2/5 diverged", "most\n3/5 diverged"]
    # "some": a bar without whiskers; "most": no bar, but the word.
    assert len(ax.patches) == 2
    assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 1
    assert [t.get_text() for t in ax.texts] == ["diverged"]
    assert ax.get_xlim()[1] > 2.3  # the word is inside the axes


def test_gradient_decades_follow_the_bulk_of_the_values():
    bulk = torch.logspace(-4, -1, 1000)
    tiny = torch.full((20,), 1e-22)
    assert gradient_decades(torch.cat([bulk, tiny, torch.zeros(50)])) == [1e-3, 1e-2, 1e-1]
    assert gradient_decades(torch.linspace(0.5, 1.5, 100)) == [0.1, 1.0]
    assert gradient_decades(torch.zeros(10)) == []


def test_update_vs_gradient_tick_labels_stay_at_the_data_scale_and_do_not_overlap():
    generator = torch.Generator().manual_seed(0)

    def spread(low: float, high: float, n: int = 2000) -> torch.Tensor:
        """Magnitudes log-uniform in [10^low, 10^high] with random signs."""
        exponents = low + (high - low) * torch.rand(n, generator=generator)
        signs = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
        return signs * 10.0**exponents

    gradients = {
        1: torch.cat([spread(-4, -1), torch.full((60,), -1e-22), torch.zeros(100)]),
        10: torch.cat([spread(-8, -2), spread(-44, -13, 200)]),
        50: spread(-0.3, 0.2),  # within a decade
        100: torch.zeros(500),  # nothing to scale by: a linear axis
    }
    records = {t: {"gradient": g, "update": -0.1 * g.sign()} for t, g in gradients.items()}
    fig = update_vs_gradient_figure(records)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, (t, g) in zip(fig.axes, gradients.items()):
        nonzero = g.abs()[g != 0]
        scale = float(nonzero.quantile(0.05)) / 10 if nonzero.numel() else 0.0
        low, high = ax.get_xlim()
        ticks = [v for v in ax.get_xticks() if low <= v <= high]
        assert all(v == 0 or abs(v) >= scale for v in ticks), (t, ticks)
        assert all(abs(v) >= 1e-6 for v in ticks if v != 0), (t, ticks)
        labels = sorted(
            (
                label.get_window_extent(renderer)
                for label in ax.get_xticklabels()
                if label.get_text()
            ),
            key=lambda box: box.x0,
        )
        assert len(labels) >= 3, t
        for left, right in itertools.pairwise(labels):
            assert left.x1 < right.x0, (t, [label.get_text() for label in ax.get_xticklabels()])


def write_lines(path, *lines: str, newline_at_end: bool = True):
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


def entry(epoch: int) -> str:
    return json.dumps({"epoch": epoch, "meta_loss": 1.0 / (epoch + 1), "seconds": epoch + 1.0})


def test_read_metrics_names_the_file_and_line_of_a_damaged_entry(tmp_path):
    path = write_lines(tmp_path / "metrics.jsonl", entry(0), "", entry(1)[:9] + entry(2), entry(3))
    with pytest.raises(
        L2OError, match=r"metrics\.jsonl line 3 is not valid JSON \(.*: column \d+\)"
    ):
        read_metrics(path)
    # A last line that ends with its newline was written whole: it is not cut short.
    path = write_lines(tmp_path / "metrics.jsonl", entry(0), entry(1)[:9])
    with pytest.raises(L2OError, match=r"metrics\.jsonl line 2 is not valid JSON"):
        read_metrics(path)


def test_read_metrics_leaves_out_a_last_entry_cut_short(tmp_path):
    path = write_lines(
        tmp_path / "metrics.jsonl", entry(0), entry(1), entry(2)[:20], newline_at_end=False
    )
    with pytest.warns(UserWarning, match=r"metrics\.jsonl line 3 is not valid JSON.*left out"):
        entries = read_metrics(path)
    assert [e["epoch"] for e in entries] == [0, 1]


def test_plot_of_a_damaged_metrics_file_says_where_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    metrics = write_lines(run / "metrics.jsonl", entry(0), entry(1)[:9], entry(2))
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{metrics} line 2 is not valid JSON" in err and len(err.strip().splitlines()) == 1
    write_lines(run / "metrics.jsonl", entry(0), entry(1), entry(2)[:9], newline_at_end=False)
    with pytest.warns(UserWarning, match="line 3"):
        assert main(["plot", str(run)]) == 0
    assert (run / "figures" / "meta_training.png").stat().st_size > 0


def test_bad_argument_values_are_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="Invalid format: 'jpg'"):
        draw(tmp_path, fmt="jpg")
    with pytest.raises(InvalidInput, match="unknown 2-D function 'beale'"):
        two_d_task("beale")
