"""What `optimize` is given, checked before any training: model, data, budget, device, output.

Every check here runs before the first candidate is built, so that a mistake
costs seconds, not a search: data that does not fit the model, labels out of
range, a `max_drop` the validation set is too small to resolve (with the
number of samples it would need), an unknown device, an output folder that is
or holds an input.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from tflight.errors import TflightError

# The paired bound is the precision search's, one copy for both stages.
from tflight.precision.stats import net_drop_bound_pt, net_samples_needed

__all__ = ["DEVICES", "Device", "OptimizeError", "Prepared", "prepare", "resolve_device",
           "net_samples_needed", "net_drop_bound_pt"]


class OptimizeError(TflightError):
    """`optimize` cannot run on these inputs (raised before any training)."""


@dataclasses.dataclass(frozen=True)
class Device:
    """A target of `optimize`: the latency profile it is estimated on and the converter target.

    Attributes:
      name: the word the user gives (`--device`).
      profile: the `tflight.devices` profile of the latency estimate.
      target: the `converters` target whose rules decide what counts.
      rule: one sentence on what the device requires of a candidate.
    """

    name: str
    profile: str
    target: str
    rule: str


DEVICES = {
    "pixel4": Device("pixel4", "pixel4", "cpu", "any LiteRT CPU model; ranked by the pixel4 "
                     "profile's latency estimate"),
    "pixel3": Device("pixel3", "pixel3", "cpu", "any LiteRT CPU model; ranked by the pixel3 "
                     "profile's latency estimate"),
    "cortex-a53": Device("cortex-a53", "cortex-a53", "cpu", "any LiteRT CPU model; ranked by "
                         "the cortex-a53 profile's latency estimate"),
    "edgetpu": Device("edgetpu", "edgetpu", "edgetpu", "full-int8 models only (int8 inputs and "
                      "outputs); ops the Edge TPU lacks, and every op after the first of them, "
                      "run on the CPU"),
    "gpu": Device("gpu", "pixel4-gpu", "gpu", "every op taken by LiteRT's GPU accelerator (run "
                  "for real on a software Vulkan device); latency is the pixel4-gpu profile's "
                  "estimate"),
    "npu": Device("npu", "pixel4", "npu", "builtin ops only, static shapes, integer compute, ops "
                  "NPU compilers commonly place (a static check, no vendor compiler); latency is "
                  "the pixel4 CPU profile's estimate"),
}


def resolve_device(name: str) -> Device:
    """The `Device` named `name`, or an `OptimizeError` listing the known ones."""
    device = DEVICES.get(str(name).strip().lower())
    if device is None:
        raise OptimizeError(
            f"Unknown device {name!r}; choose one of: {', '.join(DEVICES)}.",
            option="device", fix=f"device in {sorted(DEVICES)}", kind="unknown_device",
        )
    return device


@dataclasses.dataclass
class Prepared:
    """The checked model and the three disjoint splits the search uses."""

    model: Any
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    validation_source: str
    test_source: str
    paths: dict[str, str | None]


def _load_data(data: Any, what: str, option: str) -> tuple[np.ndarray, Any, str | None]:
    from tflight import _io

    if isinstance(data, (str, os.PathLike)):
        x, y = _io.load_xy(data, labels=True, error=OptimizeError)
        return np.asarray(x, dtype="float32"), y, os.fspath(data)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise OptimizeError(
            f"`{option}` must be an (x, y) pair of arrays or an .npz path, got "
            f"{type(data).__name__}.", option=option, kind="bad_data",
        )
    x, y = np.asarray(data[0], dtype="float32"), np.asarray(data[1])
    if x.ndim < 2 or len(x) == 0:
        raise OptimizeError(f"{what} `x` must have shape (n, ...) with n > 0, got {x.shape}.",
                            option=option, kind="bad_data")
    if not np.all(np.isfinite(x)):
        raise OptimizeError(f"{what} `x` holds NaN or infinite values.", option=option,
                            kind="bad_data")
    return x, y, None


def _check_output_dir(output_dir: str | None, inputs: dict[str, str | None]) -> None:
    if output_dir is None:
        return
    out = os.path.realpath(output_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OptimizeError(f"Output folder {output_dir!r} is a file; give a folder with -o.",
                            option="output_dir", kind="bad_output")
    for role, path in inputs.items():
        if path is None:
            continue
        src = os.path.realpath(path)
        if src == out or src.startswith(out + os.sep) or out.startswith(src + os.sep):
            raise OptimizeError(
                f"Output folder {output_dir!r} is or holds the {role} {path!r}; the search "
                "writes and replaces files there. Give a new folder with -o.",
                option="output_dir", fix="an output folder apart from the inputs",
                kind="output_is_input",
            )
    try:
        os.makedirs(out, exist_ok=True)
        import tempfile

        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise OptimizeError(
            f"Cannot write to the output folder {output_dir!r}: {e.strerror or e}. Choose a "
            "writable folder with -o.", option="output_dir", kind="bad_output",
        ) from e


def prepare(
    model: Any,
    train_data: Any,
    validation_data: Any = None,
    test_data: Any = None,
    *,
    holdout: float = 0.2,
    test_fraction: float = 0.2,
    max_drop: float = 0.5,
    confidence: float = 0.95,
    output_dir: str | None = None,
    custom_objects: dict[str, Any] | None = None,
    seed: int = 0,
) -> Prepared:
    """Loads and checks everything `optimize` needs; raises `OptimizeError` on the first problem.

    Without `test_data` a share `test_fraction` of `train_data` is held back from
    the start (never seen by the search); without `validation_data` a share
    `holdout` of the rest is kept for selection.
    """
    from tflight import _io

    paths: dict[str, str | None] = {"model": None}
    if isinstance(model, (str, os.PathLike)):
        paths["model"] = os.fspath(model)
    x, y, paths["training data"] = _load_data(train_data, "The training data's", "train_data")
    val = test = None
    if validation_data is not None:
        val = _load_data(validation_data, "The validation data's", "validation_data")
        paths["validation data"] = val[2]
    if test_data is not None:
        test = _load_data(test_data, "The test data's", "test_data")
        paths["test data"] = test[2]
    _check_output_dir(output_dir, paths)
    if not 0.0 < holdout < 1.0 or not 0.0 < test_fraction < 1.0:
        raise OptimizeError(f"holdout and test_fraction must be in (0, 1), got {holdout!r} and "
                            f"{test_fraction!r}.", option="holdout", kind="bad_split")
    if not 0.5 <= confidence < 1.0:
        raise OptimizeError(f"confidence must be in [0.5, 1), got {confidence!r}.",
                            option="confidence", kind="bad_budget")
    if not 0.0 < max_drop <= 100.0:
        raise OptimizeError(f"max_drop must be in (0, 100] accuracy points, got {max_drop!r}.",
                            option="max_drop", kind="bad_budget")
    if paths["model"] is not None:
        model = _io.load_model(paths["model"], custom_objects=custom_objects,
                               error=OptimizeError)
    label = paths["training data"] or "train_data"
    _io.check_input_shape(model, x, label, error=OptimizeError)
    classes = _io.output_classes(model, error=OptimizeError)
    y = _io.class_ids(y, len(x), classes=classes, what=f"the labels of {label!r}",
                      error=OptimizeError)
    for split, name in ((val, "validation data"), (test, "test data")):
        if split is not None:
            where = split[2] or name
            _io.check_input_shape(model, split[0], where, error=OptimizeError)
    if test is None:
        (x, y), (x_test, y_test) = _io.split_holdout(x, y, test_fraction, seed=seed + 1)
        test_source = f"{len(x_test)} samples held back from the training data at the start"
    else:
        x_test = test[0]
        y_test = _io.class_ids(test[1], len(x_test), classes=classes,
                               what="the test labels", error=OptimizeError)
        test_source = test[2] or "test_data"
    if val is None:
        (x, y), (x_val, y_val) = _io.split_holdout(x, y, holdout, seed=seed)
        validation_source = f"{len(x_val)} samples held out of the training data ({holdout:g})"
    else:
        x_val = val[0]
        y_val = _io.class_ids(val[1], len(x_val), classes=classes,
                              what="the validation labels", error=OptimizeError)
        validation_source = val[2] or "validation_data"
    need = net_samples_needed(max_drop, confidence)
    if need is not None and len(x_val) < need:
        raise OptimizeError(
            f"max_drop {max_drop:g} pt cannot be resolved on {len(x_val)} validation samples: "
            f"even with no prediction changed, the {confidence:.0%} bound on the drop stays above it "
            f"until there are {need} samples. Give at least {need} validation samples, or a "
            "larger max_drop.",
            option="max_drop", fix=f"at least {need} validation samples", kind="bad_budget",
            needed=need,
        )
    if len(x) < 8:
        raise OptimizeError(f"Only {len(x)} training samples remain after the splits; give "
                            "more training data.", option="train_data", kind="bad_data")
    return Prepared(model, x, y, x_val, y_val, x_test, y_test, classes, validation_source,
                    test_source, paths)
