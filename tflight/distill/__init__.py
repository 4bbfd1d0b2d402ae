"""Knowledge distillation: a `Distiller` that trains a student on a frozen teacher's outputs."""

from tflight._lazy import attach

_EXPORTS = {
    "DistillationResult": "tflight.distill.result",
    "Distiller": "tflight.distill.distiller",
    "TeacherCache": "tflight.distill.cache",
    "distill": "tflight.distill.run",
    "load_distiller": "tflight.distill.saving",
    "DistillationLoss": "tflight.distill.losses",
    "FeatureLoss": "tflight.distill.losses",
    "GroundTruthLoss": "tflight.distill.losses",
    "HardTargetLoss": "tflight.distill.losses",
    "LossInputs": "tflight.distill.losses",
    "SoftTargetLoss": "tflight.distill.losses",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
