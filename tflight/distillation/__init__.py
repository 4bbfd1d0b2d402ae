"""Knowledge distillation: a `Distiller` that trains a student on a frozen teacher's outputs."""

from tflight._lazy import attach

_EXPORTS = {
    "DistillationResult": "tflight.distillation.result",
    "Distiller": "tflight.distillation.distiller",
    "TeacherCache": "tflight.distillation.cache",
    "distill": "tflight.distillation.run",
    "load_distiller": "tflight.distillation.saving",
    "DistillationLoss": "tflight.distillation.losses",
    "FeatureLoss": "tflight.distillation.losses",
    "GroundTruthLoss": "tflight.distillation.losses",
    "HardTargetLoss": "tflight.distillation.losses",
    "LossInputs": "tflight.distillation.losses",
    "SoftTargetLoss": "tflight.distillation.losses",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
