"""Watching meta-training: TensorBoard event files and progress on the terminal.

``Monitor`` receives what the trainer measures and writes it to ``RUN_DIR/tensorboard``
(open with ``tensorboard --logdir RUN_DIR``) and to the terminal: a progress bar with ETA and
the current meta-loss / validation loss when stdout is a terminal, plain periodic log lines
otherwise (CI, files), nothing with ``quiet``.

TensorBoard tags:
    meta/loss, meta/grad_norm, meta/nonfinite_skipped, meta/lr, meta/coordinate_steps_per_s
    validation/final_loss, validation/summed_loss, validation/loss_curve (image)
    optimizer/updates_step_K, optimizer/hidden_layer_L, optimizer/cell_layer_L (histograms)
    the Graphs tab: one unrolled step and the meta-optimizer (see l2o.unroll_graph)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from torch import Tensor


class Progress:
    """A tqdm bar on a terminal, or a log line every ``every`` items elsewhere."""

    def __init__(
        self,
        total: int,
        description: str,
        quiet: bool = False,
        stream: TextIO | None = None,
        every: int | None = None,
        initial: int = 0,
    ) -> None:
        self.total, self.description, self.quiet = total, description, quiet
        self.stream = stream or sys.stdout
        self.every = every or max(total // 20, 1)
        self.done, self.start = initial, time.perf_counter()
        self.initial = initial
        self.bar = None
        if not quiet and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=description, file=self.stream, leave=True
            )

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        if self.quiet:
            return
        shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(n)
            return
        if self.done % self.every == 0 or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else math.nan
            fields = "  ".join(f"{k} {v}" for k, v in shown.items())
            print(
                f"{self.description} {self.done}/{self.total}  {fields}  "
                f"elapsed {elapsed:.0f}s  eta {eta:.0f}s",
                file=self.stream,
                flush=True,
            )

    def write(self, message: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Monitor:
    """TensorBoard writer + progress display for one meta-training run."""

    def __init__(
        self,
        run_dir: str | Path,
        total_epochs: int,
        quiet: bool = False,
        tensorboard: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.total_epochs, self.quiet, self.stream = total_epochs, quiet, stream
        self.tensorboard = tensorboard
        self.writer = None
        self.progress: Progress | None = None
        self.last_validation = math.nan
        self.said_skipped = False  # that a histogram could not be drawn (said once)

    def start(self, first_epoch: int, graph: Any | None = None, resumed: bool = False) -> None:
        """Open the event file; ``resumed``: the run continues after ``first_epoch`` epochs in
        an existing directory, so TensorBoard discards what an earlier attempt logged after
        them (``purge_step``) and no step appears twice."""
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(self.run_dir / "tensorboard"),
                purge_step=first_epoch + 1 if resumed else None,
            )
        self.progress = Progress(
            self.total_epochs, "meta-training", self.quiet, self.stream, initial=first_epoch
        )
        if self.writer is not None and graph is not None and first_epoch == 0:
            from l2o.unroll_graph import write_graph

            write_graph(self.writer, graph)

    def epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.writer is not None:
            w, step = self.writer, epoch + 1
            for tag, key in [
                ("meta/loss", "meta_loss"),
                ("meta/grad_norm", "meta_grad_norm"),
                ("meta/nonfinite_skipped", "nonfinite_total"),
                ("meta/lr", "meta_lr"),
                ("meta/coordinate_steps_per_s", "coordinate_steps_per_s"),
                ("train/final_loss", "train_final_loss"),
                # With meta.ema_decay, validation/final_loss scores the average of phi.
                ("validation/final_loss_raw", "validation_final_loss_raw"),
            ]:
                if key in metrics and math.isfinite(metrics[key]):
                    w.add_scalar(tag, metrics[key], step)
        if "validation_final_loss" in metrics:
            self.last_validation = metrics["validation_final_loss"]
            if self.progress is not None and self.progress.bar is None:
                self.progress.write(
                    f"epoch {epoch + 1}: validation f(theta_T) {self.last_validation:.4g}"
                )
        if metrics.get("nonfinite_skipped") and self.progress is not None:
            self.progress.write(
                f"epoch {epoch + 1}: skipped {metrics['nonfinite_skipped']} non-finite "
                f"meta-update(s) ({metrics.get('nonfinite_total', '?')} in total)"
            )
        if self.progress is not None:
            shown = {"meta_loss": float(metrics["meta_loss"])}
            if math.isfinite(self.last_validation):
                shown["validation"] = float(self.last_validation)
            self.progress.update(1, **shown)

    def validation(
        self,
        epoch: int,
        scores: dict[str, Any],
        histograms: dict[str, Tensor],
        task_name: str,
    ) -> None:
        if self.writer is None:
            return
        w, step = self.writer, epoch + 1
        if math.isfinite(scores["final_loss"]):
            w.add_scalar("validation/final_loss", scores["final_loss"], step)
        if math.isfinite(scores["summed_loss"]):
            w.add_scalar("validation/summed_loss", scores["summed_loss"], step)
        for tag, values in histograms.items():
            finite = values[values.isfinite()].double()
            try:
                if finite.numel():
                    w.add_histogram(tag, finite, step)
            except ValueError as e:  # e.g. values so large that numpy cannot bin them
                if not self.said_skipped:
                    self._say(
                        f"TensorBoard: histograms whose values cannot be binned are skipped "
                        f"(first: {tag} at epoch {step}: {e})"
                    )
                self.said_skipped = True
        w.add_figure("validation/loss_curve", _curve_figure(scores["curve"], task_name, step), step)
        w.flush()

    def flush(self) -> None:
        """Put every event logged so far into the event file (before a checkpoint covers it)."""
        if self.writer is not None:
            self.writer.flush()

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress.write(message)
        elif not self.quiet:
            print(message, file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.writer is not None:
            self.writer.close()


def _curve_figure(curve: list[float], task_name: str, epoch: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=90)
    ax.plot(range(len(curve)), curve)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean loss f(θ)")
    ax.set_title(f"{task_name}: validation after epoch {epoch}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig
