"""What several commands share: options for the user's files, progress, output checks."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

__all__ = [
    "custom_objects_option",     "progress_option",
    "progress_printer",
    "stage_callback",
]

custom_objects_option = click.option(
    "--custom-objects",
    "custom_objects_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Python file defining the model's custom layers; it is imported before loading "
    "(it may register them with keras.saving.register_keras_serializable and "
    "tflight.bridge.register).",
)

progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show stages and epochs on stderr [default: only when stderr is a terminal].",
)


def progress_printer(enabled: bool | None) -> Callable[[str], None] | None:
    """A function printing progress lines to stderr, or None when progress is off.

    Progress is shown when asked for, or by default when stderr is a
    terminal: piped or captured output stays quiet.
    """
    if enabled is None:
        stream = sys.stderr
        enabled = bool(getattr(stream, "isatty", lambda: False)())
    if not enabled:
        return None
    return lambda message: click.echo(message, err=True)


def stage_callback(keras_module: Any, say: Callable[[str], None], stages: list[str]) -> Any:
    """A Keras callback of `keras_module`'s generation announcing stages and epochs."""

    class _Progress(keras_module.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stage = 0
            self.start = 0.0

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.stage += 1
            self.start = time.perf_counter()
            name = stages[self.stage - 1] if self.stage <= len(stages) else "training"
            say(f"stage {self.stage}/{len(stages)}: {name} ...")

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            epochs = self.params.get("epochs", "?") if self.params else "?"
            parts = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
            elapsed = time.perf_counter() - self.start
            say(f"  epoch {epoch + 1}/{epochs}: {parts} ({elapsed:.0f} s)")

    return _Progress()


