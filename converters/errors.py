"""Exceptions raised by `converters`.

Every error a user can cause (a wrong path, a file that is not a model, data of
the wrong shape) derives from `ConversionError`, so that a command-line front end
can turn it into one readable line and a non-zero exit code.
"""

from __future__ import annotations

__all__ = [
    "ConversionError",
    "ModelLoadError",
    "InvalidTFLiteError",
    "RepresentativeDataError",
    "UnsupportedModelError",
    "ValidationError",
    "TargetError",
    "ConversionWarning",
]


class ConversionError(Exception):
    """Base class of every error raised by `converters`."""


class ModelLoadError(ConversionError):
    """The source model could not be found or read."""


class InvalidTFLiteError(ConversionError):
    """A file or buffer is not a valid `.tflite` flatbuffer."""


class RepresentativeDataError(ConversionError):
    """Calibration or sample data does not match the model's inputs."""


class UnsupportedModelError(ConversionError):
    """The model uses something the requested conversion cannot handle."""


class ValidationError(ConversionError):
    """The converted model disagrees with the source model beyond the thresholds."""


class TargetError(ConversionError):
    """The model does not meet the constraints of the requested target."""


class ConversionWarning(UserWarning):
    """A conversion succeeded but something deserves the user's attention."""
