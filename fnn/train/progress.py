"""Progress on stderr: the ``Progress`` callback and ``echo``, a print that does not break a bar."""

from __future__ import annotations

import sys
from typing import TextIO

from fnn.train.callbacks import Callback, Run


class Progress(Callback):
    """A tqdm bar on stderr (per epoch when fused, per step otherwise), or one plain line per
    epoch when tqdm is not installed.

    Args:
      enabled: True shows it, False hides it, None (the default) shows it only when stderr is a
        terminal (tqdm's own ``disable=None`` rule), so logs redirected to a file stay clean.
    """

    order = 30

    def __init__(self, enabled: bool | None = None):
        self.setting, self.bar = enabled, None

    def on_fit_start(self, run: Run) -> None:
        isatty = getattr(sys.stderr, "isatty", None)
        self.enabled = bool(self.setting) if self.setting is not None else bool(isatty and isatty())

    def on_epoch_start(self, run: Run) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                per = 1 if run.fused else run.steps_per_epoch
                self.bar = tqdm(total=run.epochs * per, initial=run.start_epoch * per,
                                unit="epoch" if run.fused else "step", desc="fit", file=sys.stderr,
                                dynamic_ncols=True, leave=True)
        if self.bar is not None:
            self.bar.set_description(f"epoch {run.epoch}/{run.epochs}", refresh=False)

    def on_step_end(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, run: Run) -> None:
        if not self.enabled:
            return
        if self.bar is not None and run.fused:
            self.bar.update(1)
        r = run.record
        info = {"loss": f"{r['train_loss']:.4f}"}
        if r.get("train_accuracy") is not None:
            info["acc"] = f"{r['train_accuracy']:.4f}"
        if r.get("val_accuracy") is not None:
            info["val_acc"] = f"{r['val_accuracy']:.4f}"
        info["img/s"] = f"{r['images_per_second']:.0f}"
        if self.bar is not None:
            self.bar.set_postfix(info, refresh=True)
        else:
            print(f"epoch {r['epoch']}/{run.epochs} " + " ".join(f"{k}={v}" for k, v in info.items()),
                  file=sys.stderr, flush=True)

    def on_fit_end(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def echo(line: str, file: TextIO | None = None) -> None:
    """Print a line without breaking a tqdm bar that may be running on stderr."""
    file = sys.stdout if file is None else file
    try:
        from tqdm import tqdm
    except ImportError:
        print(line, file=file, flush=True)
        return
    tqdm.write(line, file=file)
    file.flush()
