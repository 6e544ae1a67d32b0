"""The unroll, truncated BPTT and the meta-training loop."""

import itertools
import json
import math

import pytest
import torch

from coupled_tasks import TwoTensorTask
from l2o.checkpoint import load_checkpoint
from l2o.config import config_from_dict, load_config
from l2o.errors import CheckpointError, InvalidInput, MetaTrainingDiverged
from l2o.meta import (
    MetaOptimizer,
    MetaOptimizerConfig,
    MetaTrainConfig,
    MetaTrainer,
    TruncatedBPTT,
    init_unroll,
    rollout,
    unroll,
    validate,
)
from l2o.meta.meta_optimizer import scheduled_lr
from l2o.optimizers import (
    LSTMGAC,
    Adam,
    CoordinatewiseLSTM,
    LSTMConfig,
    LSTMGACConfig,
    MLPOptimizerConfig,
    PerParameterMLP,
    RNNprop,
    RNNpropConfig,
)
from l2o.tasks import QuadraticFamily, QuadraticTask
from learned_checks import assert_same_meta_gradients, both_paths


def _tiny_task():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, generator=g, dtype=torch.float64)
    theta0 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    return QuadraticTask(W, y, theta0)


def _tiny_lstm(preprocess="none"):
    torch.manual_seed(2)
    cfg = LSTMConfig(num_layers=1, hidden_size=3, preprocess=preprocess, output_scale=0.1)
    return CoordinatewiseLSTM(cfg).double()


def _meta_loss(opt, task, weights):
    return unroll(task, opt, init_unroll(task, opt), weights).meta_loss


@pytest.mark.parametrize("preprocess", ["none", "log_sign"])
def test_second_order_meta_gradient_matches_central_finite_differences(preprocess):
    task, opt = _tiny_task(), _tiny_lstm(preprocess)
    weights = [1.0, 0.5, 1.0, 2.0]
    estimate = TruncatedBPTT(second_order=True).meta_gradient(
        opt, task, init_unroll(task, opt), weights
    )
    first_order = TruncatedBPTT(second_order=False).meta_gradient(
        opt, task, init_unroll(task, opt), weights
    )
    eps = 1e-6
    numeric = []
    with torch.no_grad():
        for p in opt.parameters():
            grad = torch.zeros_like(p)
            for i in range(p.numel()):
                flat = p.view(-1)
                old = flat[i].item()
                flat[i] = old + eps
                with torch.enable_grad():
                    up = _meta_loss(opt, task, weights).item()
                flat[i] = old - eps
                with torch.enable_grad():
                    down = _meta_loss(opt, task, weights).item()
                flat[i] = old
                grad.view(-1)[i] = (up - down) / (2 * eps)
            numeric.append(grad)
    for analytic, fd in zip(estimate.grads, numeric):
        torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-7)
    # The first-order approximation is really different here, so the test can tell them apart.
    diff = sum((a - b).abs().sum() for a, b in zip(first_order.grads, numeric))
    assert diff > 1e-3


def test_no_autograd_graph_survives_a_truncation_boundary():
    task = QuadraticFamily(num_problems=4).sample(0)
    opt = CoordinatewiseLSTM()
    result = TruncatedBPTT().meta_gradient(opt, task, init_unroll(task, opt), [1.0] * 5)
    tensors = list(result.state.params) + result.state.opt_state["h"] + result.state.opt_state["c"]
    assert all(t.grad_fn is None and not t.requires_grad for t in tensors)
    assert result.state.step == 5
    # Continuing from the detached state works and depends on phi only through new steps.
    again = TruncatedBPTT().meta_gradient(opt, task, result.state, [1.0] * 5)
    assert again.finite and again.state.step == 10


def test_unroll_losses_and_meta_loss_agree_with_the_evaluation_rollout():
    task = QuadraticFamily(num_problems=8).sample(3)
    reference = rollout(Adam(lr=0.1), task, 12).losses  # f(theta_0..theta_12)
    state = init_unroll(task, Adam(lr=0.1))
    first = unroll(task, Adam(lr=0.1), state, [1.0] * 6)
    second = unroll(task, Adam(lr=0.1), first.state.detached(), [1.0] * 6)
    torch.testing.assert_close(torch.cat([first.losses, second.losses]), reference[1:])
    # L = sum_t w_t mean_k f_k(theta_t) over the truncation's steps t = s+1 .. s+K.
    torch.testing.assert_close(first.meta_loss.detach(), reference[1:7].mean(1).sum())


def _weights(**kwargs):
    return MetaTrainConfig(**kwargs).objective.truncation_weights()


def test_loss_weights():
    assert _weights(horizon=5, truncation=2) == [[1, 1], [1, 1], [1]]
    assert _weights(horizon=4, truncation=2, loss_weights="mean") == [[0.25, 0.25], [0.25, 0.25]]
    assert _weights(horizon=6, truncation=3, loss_weights="last") == [[0, 0, 1], [0, 0, 1]]
    assert _weights(horizon=5, truncation=2, loss_weights="linear") == [[0.2, 0.4], [0.6, 0.8], [1]]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"horizon": 10, "truncation": 20}, "K = 20 is longer than the horizon T = 10"),
        ({"meta_lr": -1e-3}, "Invalid meta_lr: -0.001"),
        (
            {"meta_optimizer": "adagrad"},
            "Invalid meta_optimizer: 'adagrad' (valid: adam, sgd, rmsprop)",
        ),
        ({"loss_weights": "max"}, "Invalid loss_weights: 'max' (valid: sum, mean, last, linear)"),
        ({"epochs": 0}, "Invalid epochs: 0"),
        ({"device": "gpu7"}, "Invalid device: 'gpu7'"),
        ({"ema_decay": 1.0}, "Invalid ema_decay: 1.0 (must be in [0, 1)"),
        ({"ema_decay": -0.1}, "Invalid ema_decay: -0.1"),
        ({"init_from": 3}, "Invalid init_from: 3 (must be a string"),
        ({"keep_checkpoints": 1}, "Invalid keep_checkpoints: 1 (must be true or false)"),
    ],
)
def test_invalid_meta_config_names_the_value(kwargs, message):
    with pytest.raises(ValueError) as e:
        MetaTrainConfig(**kwargs)
    assert message in str(e.value)


SMALL = dict(horizon=20, truncation=10, validate_every=3, validation_tasks=1, meta_lr=3e-3)


def _trainer(run_dir, epochs, family=None, **kw):
    torch.manual_seed(0)
    cfg = MetaTrainConfig(epochs=epochs, **{**SMALL, **kw})
    return MetaTrainer(
        CoordinatewiseLSTM(), family or QuadraticFamily(num_problems=8), cfg, run_dir
    )


def test_resume_equals_uninterrupted(tmp_path):
    straight = _trainer(tmp_path / "a", 6)
    straight.run()
    first = _trainer(tmp_path / "b", 3)
    first.run()
    resumed = _trainer(tmp_path / "b", 6)
    resumed.resume()
    assert resumed.state.epoch == 3
    resumed.run()
    for (name, a), b in zip(
        straight.optimizer.state_dict().items(), resumed.optimizer.state_dict().values()
    ):
        assert torch.equal(a, b), name
    sa, sb = straight.meta_opt.state_dict()["state"], resumed.meta_opt.state_dict()["state"]
    for i in sa:
        for key in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][key]), torch.as_tensor(sb[i][key]))
    assert straight.state.best_validation == resumed.state.best_validation


def test_keep_checkpoints_saves_what_every_validation_scored(tmp_path):
    trainer = _trainer(tmp_path / "kept", 6, keep_checkpoints=True)
    trainer.run()
    kept = sorted(p.name for p in (tmp_path / "kept" / "checkpoints").glob("epoch-*.safetensors"))
    assert kept == ["epoch-000003.safetensors", "epoch-000006.safetensors"]
    entries = [json.loads(line) for line in (tmp_path / "kept" / "metrics.jsonl").open()]
    scores = [e["validation_final_loss"] for e in entries if "validation_final_loss" in e]
    kept_dir = tmp_path / "kept" / "checkpoints"
    for epoch, score in zip((3, 6), scores):
        optimizer, record = load_checkpoint(kept_dir / f"epoch-{epoch:06d}")
        assert record["epoch"] == epoch and "resume" not in record
        # the kept checkpoint is the optimizer that validation scored
        assert validate(optimizer, trainer.family, trainer.config)["final_loss"] == score
    final = load_checkpoint(kept_dir / "last")[0].state_dict()
    kept_last = load_checkpoint(kept_dir / "epoch-000006")[0].state_dict()
    for name, value in final.items():
        assert torch.equal(value, kept_last[name])
    # off by default: only best and last
    _trainer(tmp_path / "default", 3).run()
    assert not list((tmp_path / "default" / "checkpoints").glob("epoch-*"))


def test_short_meta_training_beats_the_untrained_optimizer(tmp_path):
    family = QuadraticFamily(num_problems=32)
    trainer = _trainer(tmp_path, 120, family, validate_every=40)
    cfg = trainer.config
    untrained = validate(trainer.optimizer, family, cfg)["final_loss"]
    trainer.run()
    trained = validate(trainer.optimizer, family, cfg)["final_loss"]
    assert trained < 0.3 * untrained, (trained, untrained)


class _NaNFamily(QuadraticFamily):
    """Quadratics whose loss is NaN on tasks drawn for the epochs listed in ``bad``."""

    def sample(self, seed, device="cpu", dtype=torch.float32):
        task = super().sample(seed, device, dtype)
        if seed in self.bad_seeds:
            task.y = task.y * math.nan
        return task


def _nan_family(epochs, seed=0):
    from l2o.meta import task_seed

    family = _NaNFamily(num_problems=4)
    object.__setattr__(family, "bad_seeds", {task_seed("train", e, seed) for e in epochs})
    return family


def test_nonfinite_meta_updates_are_skipped_and_counted(tmp_path):
    family = _nan_family({1, 2, 4})
    trainer = _trainer(tmp_path, 6, family, max_nonfinite_in_a_row=3)
    before = [p.clone() for p in trainer.optimizer.parameters()]
    trainer.run()
    assert trainer.state.nonfinite_total == 3
    assert all(torch.isfinite(p).all() for p in trainer.optimizer.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.optimizer.parameters()))


def test_too_many_nonfinite_in_a_row_stops_with_a_clear_message(tmp_path):
    family = _nan_family({3, 4, 5, 6})
    trainer = _trainer(tmp_path, 10, family, max_nonfinite_in_a_row=3)
    with pytest.raises(MetaTrainingDiverged, match=r"3 non-finite .* in a row at epoch 6"):
        trainer.run()
    # The checkpoint of epoch 3 is intact and finite.
    optimizer, record = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert record["epoch"] == 3
    assert all(torch.isfinite(p).all() for p in optimizer.parameters())


def test_relative_and_log_meta_losses():
    task = QuadraticFamily(num_problems=8).sample(4)
    reference = rollout(Adam(lr=0.1), task, 5).losses  # f(theta_0..theta_5)
    state = init_unroll(task, Adam(lr=0.1))
    relative = unroll(task, Adam(lr=0.1), state, [1.0] * 5, meta_loss="relative").meta_loss
    log = unroll(task, Adam(lr=0.1), state, [1.0] * 5, meta_loss="log").meta_loss
    torch.testing.assert_close(relative, reference[1:].mean(1).sum() / reference[0].mean())
    torch.testing.assert_close(log, reference[1:].log().mean(1).sum())
    plain = unroll(task, Adam(lr=0.1), state, [1.0] * 5, meta_loss="plain").meta_loss
    torch.testing.assert_close(plain, reference[1:].mean(1).sum())
    with pytest.raises(
        ValueError, match=r"Invalid meta_loss: 'max' \(valid: plain, relative, log\)"
    ):
        MetaTrainConfig(meta_loss="max")


def _lr_at(cfg, epoch):
    return scheduled_lr(cfg.meta_optimizer_config, epoch, cfg.epochs)


def test_cosine_meta_lr_schedule():
    cfg = MetaTrainConfig(epochs=10, meta_lr=0.01, meta_lr_schedule="cosine")
    assert _lr_at(cfg, 0) == pytest.approx(0.01)
    assert _lr_at(cfg, 5) == pytest.approx(0.005)
    assert _lr_at(cfg, 9) < 0.0003
    assert _lr_at(MetaTrainConfig(meta_lr=0.01), 9) == 0.01


def test_cosine_meta_lr_schedule_with_a_constant_start():
    cfg = MetaTrainConfig(
        epochs=100, meta_lr=0.01, meta_lr_schedule="cosine", meta_lr_decay_from=0.6
    )
    assert [_lr_at(cfg, e) for e in (0, 30, 60)] == [0.01, 0.01, 0.01]
    assert _lr_at(cfg, 80) == pytest.approx(0.005)  # halfway through the decay
    assert _lr_at(cfg, 99) < 0.0002
    lrs = [_lr_at(cfg, e) for e in range(60, 100)]
    assert all(a > b for a, b in itertools.pairwise(lrs))
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(
            ValueError, match=r"Invalid meta_lr_decay_from: .* \(must be in \[0, 1\)"
        ):
            MetaTrainConfig(meta_lr_schedule="cosine", meta_lr_decay_from=bad)
    with pytest.raises(ValueError, match=r"it needs meta_lr_schedule = 'cosine'"):
        MetaTrainConfig(meta_lr_decay_from=0.5)  # the constant schedule has no decay


def _phi_after_each_meta_update(trainer):
    """Run ``trainer`` and return phi (cloned) after each of its meta-updates."""
    seen, step = [], trainer.meta_opt.step

    def record(*args, **kwargs):
        out = step(*args, **kwargs)
        seen.append([p.detach().clone() for p in trainer.optimizer.parameters()])
        return out

    trainer.meta_opt.step = record
    trainer.run()
    return seen


def test_ema_averages_phi_without_changing_its_trajectory(tmp_path):
    plain = _trainer(tmp_path / "plain", 4, validate_every=4)
    iterates = _phi_after_each_meta_update(plain)
    assert plain.average is None
    averaged = _trainer(tmp_path / "ema", 4, validate_every=4, ema_decay=0.6)
    initial = [p.detach().clone() for p in averaged.optimizer.parameters()]
    averaged.run()
    # The raw phi follows exactly the same path as without averaging.
    for a, b in zip(plain.optimizer.parameters(), averaged.optimizer.parameters()):
        assert torch.equal(a, b)
    # The average is the EMA of the iterates, with the (1 + n) / (10 + n) warm-up.
    expected = initial
    for n, phi in enumerate(iterates):
        d = min(0.6, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * p for e, p in zip(expected, phi)]
    assert averaged.state.meta_updates == len(iterates) == 8
    for e, a in zip(expected, averaged.average.parameters()):
        torch.testing.assert_close(a, e)
    # Validation scored the average: "best" holds it, "last" holds the raw phi (and the average).
    best, _ = load_checkpoint(tmp_path / "ema" / "checkpoints" / "best")
    last, _ = load_checkpoint(tmp_path / "ema" / "checkpoints" / "last")
    score = validate(averaged.average, averaged.family, averaged.config)["final_loss"]
    assert averaged.state.best_validation == score
    raw = validate(averaged.optimizer, averaged.family, averaged.config)["final_loss"]
    assert raw != score
    lines = (tmp_path / "ema" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["validation_final_loss_raw"] == raw
    for a, b in zip(best.parameters(), averaged.average.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(last.parameters(), averaged.optimizer.parameters()):
        assert torch.equal(a, b)


def test_resume_with_ema_equals_uninterrupted(tmp_path):
    straight = _trainer(tmp_path / "a", 6, ema_decay=0.9)
    straight.run()
    first = _trainer(tmp_path / "b", 3, ema_decay=0.9)
    first.run()
    resumed = _trainer(tmp_path / "b", 6, ema_decay=0.9)
    resumed.resume()
    resumed.run()
    for a, b in zip(straight.average.parameters(), resumed.average.parameters()):
        assert torch.equal(a, b)
    assert straight.state.best_validation == resumed.state.best_validation
    # A run saved without averaging cannot silently resume with it.
    _trainer(tmp_path / "c", 3).run()
    with pytest.raises(CheckpointError, match="holds no averaged phi"):
        _trainer(tmp_path / "c", 6, ema_decay=0.9).resume()


# -- the meta-optimizer: clip -> step -> schedule ------------------------------------------------
def _meta_optimizer(name="sgd", clip=0.0, schedule="constant", epochs=10):
    torch.manual_seed(0)
    phi = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    config = MetaOptimizerConfig(name, 0.1, schedule, 0.0, clip)
    return phi, MetaOptimizer(phi, config, epochs)


def test_the_meta_optimizer_clips_the_global_norm_then_steps():
    grads = [torch.full((3, 2), 2.0, dtype=torch.float64), torch.full((4,), -1.0).double()]
    norm = math.sqrt(6 * 4 + 4 * 1)
    for clip, scale in ((0.0, 1.0), (100.0, 1.0), (2.0, 2.0 / (norm + 1e-6))):
        phi, meta_opt = _meta_optimizer(clip=clip)
        before = [p.clone() for p in phi]
        assert meta_opt.step([g.clone() for g in grads]) == pytest.approx(norm)
        for p, b, g in zip(phi, before, grads):  # SGD: phi <- phi - lr * clipped gradient
            torch.testing.assert_close(p, b - 0.1 * scale * g)
        assert all(p.grad is None for p in phi)


def test_the_meta_optimizer_schedule_sets_the_learning_rate_per_epoch():
    _, meta_opt = _meta_optimizer(schedule="cosine", epochs=10)
    meta_opt.start_epoch(5)
    assert meta_opt.lr == pytest.approx(0.05)
    assert meta_opt.state_dict()["param_groups"][0]["lr"] == meta_opt.lr


def test_the_meta_optimizer_state_round_trips_through_tensors_and_json():
    phi, meta_opt = _meta_optimizer("adam", clip=1.0)
    for k in range(3):
        meta_opt.step([torch.full_like(p, k + 1.0) for p in phi])
    tensors, rest = meta_opt.state_tensors()
    assert sorted(tensors) == ["0/exp_avg", "0/exp_avg_sq", "0/step", "1/exp_avg", "1/exp_avg_sq",
                               "1/step"]  # fmt: skip
    json.dumps(rest)
    copy = [p.clone() for p in phi]
    restored = MetaOptimizer(copy, meta_opt.config, meta_opt.epochs)
    saved = {name: t.clone() for name, t in tensors.items()}  # as read back from a file
    restored.load_state_tensors(saved, json.loads(json.dumps(rest)))
    meta_opt.step([torch.full_like(p, -2.0) for p in phi])
    restored.step([torch.full_like(p, -2.0) for p in phi])
    for a, b in zip(phi, copy):
        assert torch.equal(a, b)


# -- meta_loss "plain" (was "sum") ---------------------------------------------------------------
MIGRATE = (
    'meta.meta_loss = "sum" is now "plain" (each term is f(theta_t), as in the paper; "sum" is '
    'a value of meta.loss_weights): write meta_loss = "plain"'
)


def test_meta_loss_sum_in_a_config_is_refused_with_how_to_migrate(tmp_path):
    config = tmp_path / "old.toml"
    config.write_text('[meta]\nmeta_loss = "sum"\n')
    for make in (
        lambda: MetaTrainConfig(meta_loss="sum"),
        lambda: load_config(config),
        lambda: load_config(None, ['meta.meta_loss="sum"']),
    ):
        with pytest.raises(InvalidInput) as e:
            make()
        assert str(e.value) == MIGRATE
    assert MetaTrainConfig().meta_loss == "plain"
    assert load_config(None, ["meta.loss_weights=sum"]).meta.loss_weights == "sum"


def test_records_that_say_meta_loss_sum_are_read_as_plain():
    """A run's config.toml or a checkpoint's "training" written before the rename."""
    assert config_from_dict({"meta": {"meta_loss": "sum"}}).meta.meta_loss == "plain"
    assert config_from_dict({"meta": {"meta_loss": "log"}}).meta.meta_loss == "log"
    from l2o import pretrained

    for name in pretrained.names():  # what `l2o demo` rebuilds a config from
        record = pretrained.info(name)
        for meta_loss in (record["training"]["meta_loss"], "sum"):
            meta = {**record["training"], "meta_loss": meta_loss}
            built = config_from_dict({"task": record["trained_on"], "meta": meta}).meta
            expected = {**meta, "meta_loss": "plain" if meta_loss == "sum" else meta_loss}
            as_json = {k: getattr(built, k) for k in meta}  # tuples (train_only) as JSON lists
            as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in as_json.items()}
            assert as_json == expected


def test_meta_loss_sum_in_code_still_runs_with_a_deprecation_warning():
    task, opt = _tiny_task(), _tiny_lstm()
    plain = TruncatedBPTT(meta_loss="plain").meta_gradient(opt, task, init_unroll(task, opt), [1])
    with pytest.warns(DeprecationWarning, match=r'meta_loss="sum" is now "plain"'):
        old = TruncatedBPTT(meta_loss="sum").meta_gradient(opt, task, init_unroll(task, opt), [1])
    assert old.meta_loss == plain.meta_loss
    assert all(torch.equal(a, b) for a, b in zip(old.grads, plain.grads))


def _as_written_before_the_rename(run):
    """Make ``run`` look as if an l2o from before the rename had written it."""
    import l2o
    from l2o.checkpoint import read_checkpoint, save_checkpoint

    config = run / "config.toml"
    config.write_text(config.read_text().replace('meta_loss = "plain"', 'meta_loss = "sum"'))
    assert 'meta_loss = "sum"' in config.read_text()
    for path in (run / "checkpoints").glob("*.safetensors"):
        tensors, record = read_checkpoint(path)
        record["training"]["meta_loss"] = "sum"
        resume = {k: v for k, v in tensors.items() if k.startswith("meta_optimizer/")}
        save_checkpoint(path, l2o.load(path), record, resume)


def test_a_run_written_before_the_rename_loads_resumes_and_initialises(tmp_path):
    import l2o
    from l2o.runs import train

    overrides = ["meta.horizon=6", "meta.truncation=3", "meta.validate_every=1",
                 "meta.validation_tasks=1", "task.num_problems=2"]  # fmt: skip
    train(load_config(None, [*overrides, "meta.epochs=2"]), tmp_path / "old", quiet=True)
    _as_written_before_the_rename(tmp_path / "old")
    assert l2o.load(tmp_path / "old").is_learned
    state = train(
        load_config(None, [*overrides, "meta.epochs=3"]), tmp_path / "old", resume=True, quiet=True
    )
    assert state.epoch == 3
    source = tmp_path / "old" / "checkpoints" / "last"
    _as_written_before_the_rename(tmp_path / "old")
    fine_tuned = load_config(None, [*overrides, "meta.epochs=1", f"meta.init_from='{source}'"])
    assert train(fine_tuned, tmp_path / "new", quiet=True).epoch == 1


def test_meta_does_not_import_evaluate():
    """Meta-training stands on its own: evaluation builds on it, not the other way round."""
    import ast
    from pathlib import Path

    import l2o.meta

    imported = []
    for path in Path(l2o.meta.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                imported += [(path.name, alias.name) for alias in node.names]
    assert [(f, m) for f, m in imported if m.startswith("l2o.evaluate")] == []


@pytest.mark.parametrize("meta_loss", ["plain", "relative", "log"])
@pytest.mark.parametrize("preprocess", ["none", "log_sign"])
def test_first_order_meta_gradients_need_no_graph_through_the_task(meta_loss, preprocess):
    # The paper's first-order meta-gradient as one vector-Jacobian product through the
    # optimizer's steps equals backpropagation through the task's graph; zero weights too.
    task, opt = _tiny_task(), _tiny_lstm(preprocess)
    fast, reference = both_paths(opt, task, [[1.0, 0.0, 0.5], [0.0, 2.0, 1.0], [0, 0]], meta_loss)
    assert_same_meta_gradients(fast, reference, rtol=1e-10)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in fast[2].grads)  # all weights 0
    assert fast[0].meta_loss != fast[1].meta_loss


def test_first_order_meta_gradients_of_other_optimizers():
    # RNNprop, LSTM+GAC (couples coordinates: problems kept apart) and the LSTM with momenta
    # and RMS-scaled inputs, in float32 on two tensors of three problems.
    torch.manual_seed(0)
    task = TwoTensorTask(num_problems=3)
    optimizers = [
        RNNprop(RNNpropConfig(hidden_size=6, preprocess_size=5)),
        LSTMGAC(LSTMGACConfig(hidden_size=6, global_cells=2)),
        CoordinatewiseLSTM(LSTMConfig(hidden_size=6, momentum=[0.9], rms_decay=0.99)),
    ]
    for opt in optimizers:
        fast, reference = both_paths(opt, task, [[1.0] * 4, [1.0] * 4], "log")
        assert all(any(g.abs().max() > 0 for g in r.grads) for r in reference)
        assert_same_meta_gradients(fast, reference, rtol=1e-5)


def test_first_order_meta_gradients_of_optimizers_that_read_theta():
    # Their updates depend on theta_t: the vector-Jacobian product runs through those paths too.
    # The MLP optimizer (per-tensor statistics: problems stepped apart; its scheduler and rate
    # adaptation) and the LSTM reading theta_t.
    torch.manual_seed(1)
    task = TwoTensorTask(num_problems=3)
    optimizers = [
        PerParameterMLP(MLPOptimizerConfig(scheduler_size=4, lr_adaptation=0.3)),
        CoordinatewiseLSTM(LSTMConfig(hidden_size=4, param_input=True)),
    ]
    for opt in optimizers:
        assert opt.reads_params
        fast, reference = both_paths(opt, task, [[1.0] * 3, [0.5, 0.0, 1.0]], "plain")
        assert all(any(g.abs().max() > 0 for g in r.grads) for r in reference)
        assert_same_meta_gradients(fast, reference, rtol=1e-5)
