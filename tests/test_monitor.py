"""TensorBoard event files, progress output, `l2o plot` figures and report.md."""

import io
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from l2o.cli import main
from l2o.config import load_config
from l2o.monitor import Progress
from l2o.runs import train

SMALL = [
    "task.num_problems=8",
    "meta.epochs=4",
    "meta.horizon=10",
    "meta.truncation=5",
    "meta.validate_every=2",
    "meta.validation_tasks=1",
    "meta.ema_decay=0.5",  # validation/final_loss scores the average, .._raw the last phi
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "run"
    train(load_config(None, SMALL), path, quiet=True)
    return path


def test_event_files_hold_scalars_histograms_images_and_graph(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ["meta/loss", "meta/grad_norm", "meta/nonfinite_skipped", "meta/lr",
                "meta/coordinate_steps_per_s", "validation/final_loss", "validation/summed_loss"]:  # fmt: skip
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("meta/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("validation/final_loss")] == [2, 4]
    assert [e.step for e in events.Scalars("validation/final_loss_raw")] == [2, 4]
    assert events.Scalars("meta/lr")[0].value == pytest.approx(1e-3)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert events.Scalars("meta/loss")[2].value == pytest.approx(metrics[2]["meta_loss"], rel=1e-6)
    for tag in ["optimizer/updates_step_1", "optimizer/updates_step_10",
                "optimizer/hidden_layer_0", "optimizer/cell_layer_1"]:  # fmt: skip
        assert tag in tags["histograms"], tag
    assert "validation/loss_curve" in tags["images"]
    assert tags["graph"]
    names = {node.name for node in events.Graph().node}
    for name in ["optimizee/loss_f", "optimizee/gradient", "optimizer/preprocess",
                 "optimizer/lstm/layer_0", "optimizer/lstm/layer_1", "optimizer/output",
                 "unroll/theta_next", "meta/meta_loss", "meta/adam", "optimizer/phi_update"]:  # fmt: skip
        assert name in names, name
    update = next(n for n in events.Graph().node if n.name == "optimizer/phi_update")
    assert "meta/adam" in update.input and "optimizer/phi/cells_0_weight" in update.input


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_lines_elsewhere_and_silent_when_quiet():
    tty = _Terminal()
    bar = Progress(10, "meta-training", stream=tty)
    for _ in range(10):
        bar.update(meta_loss=1.5)
    bar.close()
    assert (
        "meta-training" in tty.getvalue() and "10/10" in tty.getvalue() and "\r" in tty.getvalue()
    )

    plain = io.StringIO()
    lines = Progress(10, "meta-training", stream=plain, every=5)
    for _ in range(10):
        lines.update(meta_loss=1.5)
    out = plain.getvalue().splitlines()
    assert (
        len(out) == 2 and out[0].startswith("meta-training 5/10  meta_loss 1.5") and "eta" in out[0]
    )
    assert "\r" not in plain.getvalue()

    quiet = io.StringIO()
    silent = Progress(10, "x", quiet=True, stream=quiet)
    silent.update()
    silent.write("hello")
    assert quiet.getvalue() == ""


def test_train_prints_progress_lines_unless_quiet(tmp_path, capsys):
    overrides = [word for s in SMALL for word in ("--set", s)]
    assert main(["train", "--run-dir", str(tmp_path / "a"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "meta-training 4/4" in out and "validation f(theta_T)" in out
    assert main(["train", "--quiet", "--run-dir", str(tmp_path / "b"), *overrides]) == 0
    assert capsys.readouterr().out == ""


def test_plot_run_directory_and_results(run_dir, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    for name in ["meta_training.png", "update_vs_gradient.png", "trajectories_rosenbrock.png",
                 "trajectories_quadratic.png"]:  # fmt: skip
        assert (out / name).stat().st_size > 10_000, name
    evaluation = tmp_path / "eval"
    argv = ["evaluate", str(run_dir), "--out", str(evaluation), "--test-tasks", "1",
            "--validation-tasks", "1", "--lr-grid", "1e-2,1,2", "--baselines", "sgd,adam"]  # fmt: skip
    assert main(argv) == 0
    report = (evaluation / "report.md").read_text()
    assert "| adam |" in report and "| lstm |" in report and "![loss](loss.png)" in report
    assert (evaluation / "final_loss.png").is_file()
    assert (
        main(
            [
                "plot",
                str(evaluation / "results.json"),
                "--out",
                str(tmp_path / "svg"),
                "--format",
                "svg",
            ]
        )
        == 0
    )
    assert (tmp_path / "svg" / "loss.svg").read_text().lstrip().startswith("<?xml")


def test_plot_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "nothing to plot at" in capsys.readouterr().err
    bad = tmp_path / "x.json"
    bad.write_text('{"a": 1}')
    assert main(["plot", str(bad)]) == 2
    assert "not an l2o results file" in capsys.readouterr().err
    assert main(["plot", str(bad), "--format", "jpg"]) == 2
    assert "Invalid format: 'jpg' (valid: png, svg)" in capsys.readouterr().err


def test_plot_settings_file_draws_each_setting_and_the_generalization_grid(run_dir, tmp_path):
    evaluation = tmp_path / "eval"
    argv = ["evaluate", str(run_dir), "--out", str(evaluation), "--test-tasks", "1",
            "--validation-tasks", "1", "--lr-grid", "1e-2,1,2", "--baselines", "sgd,adam"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((evaluation / "results.json").read_text())
    settings = {"100-steps": result}
    for units, layers in [(5, 1), (20, 1), (5, 2), (20, 2)]:
        cell = json.loads(json.dumps(result))
        cell["task"]["hidden_sizes"] = [units] * layers
        settings[f"grid-{layers}x{units}"] = cell
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"settings": settings}))
    assert main(["plot", str(path), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "100-steps.loss.png").is_file()
    assert (tmp_path / "figs" / "generalization_grid.png").stat().st_size > 10_000


def test_results_with_diverged_runs_are_written_as_valid_json(tmp_path):
    from l2o.evaluate import write_json

    write_json(tmp_path / "r.json", {"a": float("inf"), "b": [1.0, float("nan")], "c": {"d": 2}})
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "a": None,
        "b": [1.0, None],
        "c": {"d": 2},
    }


def test_result_curves_are_written_one_list_per_line(tmp_path):
    from l2o.evaluate import write_json

    data = {"curve": [0.5, 1e-07, -2.0, float("nan"), 3], "names": ["a", "b"], "n": {"m": [1, 2]}}
    write_json(tmp_path / "r.json", data)
    text = (tmp_path / "r.json").read_text()
    assert '"curve": [0.5, 1e-07, -2.0, null, 3]' in text
    assert '"m": [1, 2]' in text
    assert json.loads(text) == {**data, "curve": [0.5, 1e-07, -2.0, None, 3]}


@pytest.mark.parametrize("momentum", [(), (0.9, 0.99)])
def test_graph_shows_the_lstm_inputs(momentum):
    from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
    from l2o.unroll_graph import GraphSpec, build_graph

    lstm = CoordinatewiseLSTM(LSTMConfig(momentum=momentum))
    graph = build_graph(GraphSpec(lstm, "quadratic", "adam", 1e-3, 20, False))
    nodes = {n.name: n for n in graph.node}
    inputs = list(nodes["optimizer/preprocess"].input)
    if momentum:
        assert inputs == ["optimizee/gradient", "optimizer/momentum"]
        assert "0.99" in nodes["optimizer/momentum"].attr["description"].s.decode()
    else:
        assert inputs == ["optimizee/gradient"] and "optimizer/momentum" not in nodes
    assert nodes["optimizer/lstm/layer_0"].input[0] == "optimizer/preprocess"
    assert "optimizer/rms" not in nodes


def test_graph_shows_theta_read_by_optimizers_that_read_it():
    from l2o.optimizers import SGD, CoordinatewiseLSTM, LSTMConfig
    from l2o.unroll_graph import GraphSpec, build_graph

    lstm = CoordinatewiseLSTM(LSTMConfig(param_input=True))
    nodes = {
        n.name: n for n in build_graph(GraphSpec(lstm, "quadratic", "adam", 1e-3, 20, False)).node
    }
    assert list(nodes["optimizer/preprocess"].input) == ["optimizee/gradient", "optimizee/theta_t"]

    class DecayedSGD(SGD):
        reads_params = True

    for opt, reads in ((SGD(0.1), False), (DecayedSGD(0.1), True)):
        graph = build_graph(GraphSpec(opt, "quadratic", "adam", 1e-3, 20, False))
        output = {n.name: n for n in graph.node}["optimizer/output"]
        assert ("optimizee/theta_t" in output.input) is reads


def test_graph_shows_the_rms_scaled_inputs():
    from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
    from l2o.unroll_graph import GraphSpec, build_graph

    lstm = CoordinatewiseLSTM(LSTMConfig(momentum=(0.9,), rms_decay=0.999))
    graph = build_graph(GraphSpec(lstm, "quadratic", "adam", 1e-3, 20, False))
    nodes = {n.name: n for n in graph.node}
    assert list(nodes["optimizer/rms"].input) == ["optimizee/gradient", "optimizer/state/rms"]
    assert "0.999" in nodes["optimizer/rms"].attr["description"].s.decode()
    scaled = ["optimizee/gradient", "optimizer/momentum", "optimizer/rms"]
    assert list(nodes["optimizer/rms_scaled"].input) == scaled
    layer = list(nodes["optimizer/lstm/layer_0"].input)
    assert layer[:2] == ["optimizer/preprocess", "optimizer/rms_scaled"]
    assert nodes["optimizer/lstm/layer_1"].input[0] == "optimizer/lstm/layer_0"


def test_graph_shows_the_step_features_entering_the_first_layer():
    from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
    from l2o.unroll_graph import GraphSpec, build_graph

    lstm = CoordinatewiseLSTM(LSTMConfig(time_scales=(10, 100)))
    graph = build_graph(GraphSpec(lstm, "quadratic", "adam", 1e-3, 20, False))
    nodes = {n.name: n for n in graph.node}
    assert list(nodes["optimizer/step_features"].input) == ["optimizer/state/step"]
    assert "[10.0, 100.0]" in nodes["optimizer/step_features"].attr["description"].s.decode()
    layer = list(nodes["optimizer/lstm/layer_0"].input)
    assert layer[:2] == ["optimizer/preprocess", "optimizer/step_features"]
    assert "optimizer/phi/time_weight" in layer
    assert "optimizer/phi/time_weight" not in nodes["optimizer/lstm/layer_1"].input
    paper = build_graph(GraphSpec(CoordinatewiseLSTM(), "quadratic", "adam", 1e-3, 20, False))
    assert "optimizer/step_features" not in {n.name for n in paper.node}


def test_graph_shows_the_linear_term_reading_the_signals():
    from l2o.optimizers import CoordinatewiseLSTM, LSTMConfig
    from l2o.unroll_graph import GraphSpec, build_graph

    lstm = CoordinatewiseLSTM(LSTMConfig(momentum=(0.9,), gain=0.001))
    graph = build_graph(GraphSpec(lstm, "quadratic", "adam", 1e-3, 20, False))
    output = {n.name: n for n in graph.node}["optimizer/output"]
    inputs = list(output.input)
    assert inputs[:3] == ["optimizer/lstm/layer_1", "optimizee/gradient", "optimizer/momentum"]
    assert {"optimizer/phi/gain_weight", "optimizer/phi/gain_bias"} <= set(inputs)
    assert "exp(A_j h_t + c_j) s_j" in output.attr["description"].s.decode()
    # Only Adam's m_hat / sqrt(v_hat): the term reads the RMS-scaled signals, not the raw ones.
    adam_start = LSTMConfig(momentum=(0.9,), rms_decay=0.999, gain=(0, 0, 0, 0.01))
    graph = build_graph(
        GraphSpec(CoordinatewiseLSTM(adam_start), "quadratic", "adam", 1e-3, 20, False)
    )
    inputs = list({n.name: n for n in graph.node}["optimizer/output"].input)
    assert inputs[:2] == ["optimizer/lstm/layer_1", "optimizer/rms_scaled"]
    assert "optimizee/gradient" not in inputs and "optimizer/momentum" not in inputs
