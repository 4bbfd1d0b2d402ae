"""The published latencies the device profiles are fitted to, and their models' work.

`tflight/devices/data/published_latency.csv` holds per-model latencies of real
devices, each row named by its source; `tflight/devices/data/model_work.json` holds the
work of each of those models, read from its `.tflite` graph by
`benchmarks/device_models.py`. This module joins the two and names the
architecture family of every model, the unit that family-held-out
cross-validation leaves out.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from tflight.errors import BenchmarkError

__all__ = ["PublishedRow", "published_rows", "published_latency_path", "model_work_path",
           "model_family"]


def published_latency_path() -> Path:
    """Path of the published latency table the profiles are fitted to."""
    return Path(__file__).with_name("data") / "published_latency.csv"


def model_work_path() -> Path:
    """Path of the cached work of the published models."""
    return Path(__file__).with_name("data") / "model_work.json"


@dataclasses.dataclass(frozen=True)
class PublishedRow:
    """One published latency, joined with the work of its model.

    Attributes:
      device: the device column of the table (a profile name or a device the
        profiles are only checked against).
      model: architecture name, e.g. `"mobilenet_v1_0.50_160"`.
      precision: `"fp32"` or `"int8"`.
      ms: the published latency in milliseconds.
      source: the key of the source in the table's header.
      totals: the model's work per `"op_class/arith"` (`ModelWork.totals()`).
    """

    device: str
    model: str
    precision: str
    ms: float
    source: str
    totals: Mapping[str, Sequence[float]]

    @property
    def family(self) -> str:
        return model_family(self.model)


# Longest prefix first: `inception_resnet_v2` is an Inception, `resnet_v2_101` a ResNet.
_FAMILIES = (
    ("mobilenet_v1", "mobilenet_v1"), ("mobilenet_v2", "mobilenet_v2"),
    ("mobilenet_v3", "mobilenet_v3"), ("efficientnet_lite", "efficientnet_lite"),
    ("inception", "inception"), ("resnet", "resnet"), ("vgg", "vgg"), ("nasnet", "nasnet"),
)


def model_family(model: str) -> str:
    """The architecture family of a published model.

    Every width and resolution of an architecture, and its related versions,
    share a family: `mobilenet_v1_0.50_160` -> `mobilenet_v1`;
    `inception_v3` and `inception_resnet_v2` -> `inception`; ResNet-50 v1/v2,
    ResNet-101 v2 and ResNet-152 v2 -> `resnet`; NASNet mobile and large ->
    `nasnet`; VGG16/19 -> `vgg`.
    """
    for prefix, family in _FAMILIES:
        if model.startswith(prefix):
            return family
    return model


@functools.cache
def published_rows() -> tuple[PublishedRow, ...]:
    """The published figures joined with the cached work of their models.

    Raises:
      BenchmarkError: a model of the table has no cached work.
    """
    work = json.loads(model_work_path().read_text())["models"]
    rows = []
    with open(published_latency_path(), newline="") as f:
        for r in csv.DictReader(line for line in f if not line.startswith("#")):
            key = f"{r['model']}/{r['precision']}"
            if key not in work:
                raise BenchmarkError(
                    f"{model_work_path()} has no work for {key}; run "
                    "`python benchmarks/device_models.py` to rebuild it"
                )
            if not r["source"]:
                raise BenchmarkError(f"{published_latency_path()}: the row {key} on "
                                     f"{r['device']} names no source")
            rows.append(PublishedRow(r["device"], r["model"], r["precision"], float(r["ms"]),
                                     r["source"], work[key]["totals"]))
    return tuple(rows)
