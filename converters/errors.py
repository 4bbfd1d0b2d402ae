"""Exceptions raised by `converters`.

Every error a user can cause (a wrong path, a file that is not a model, data of
the wrong shape) derives from `ConversionError`, so that a command-line front end
can turn it into one readable line and a non-zero exit code.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConversionError",
    "ModelLoadError",
    "InvalidTFLiteError",
    "RepresentativeDataError",
    "UnsupportedModelError",
    "ValidationError",
    "TargetError",
    "ConversionWarning",
    "PartialConversionError",
    "ConverterCrashError",
]


class ConversionError(Exception):
    """Base class of every error raised by `converters`.

    Attributes:
      mode: the conversion mode the error concerns (a mode word), or None.
      log_path: a file holding the converter's own output for this failure
        (kept for the user to read), or None.
      option: the argument of the call the error is about (its Python keyword,
        e.g. "representative_data", "validation_data"), or None.
      layer: the layer or op the error is about, or None.
      fix: what would work, in the library's terms, or None.
      kind: a short machine-readable word for the failure, or None.
      internal: True for a failure that is not the user's to fix (the
        converter process crashed natively); a front end reports it as an
        internal error, not as a mistake of the user's.
      wording: for an error about one argument (made with `about`), the
        message's text before and after the argument's name, so that a front
        end can name it in its own words (`message_for`); else None.

    The fields let a front end say the fix in its own flags without reading
    the message text.
    """

    mode: str | None = None
    log_path: str | None = None
    option: str | None = None
    layer: str | None = None
    fix: str | None = None
    kind: str | None = None
    internal: bool = False
    wording: tuple[str, str] | None = None

    def __init__(
        self,
        *args: object,
        option: str | None = None,
        layer: str | None = None,
        fix: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(*args)
        # Class-level defaults stay unless a field is given.
        for name, value in (("option", option), ("layer", layer), ("fix", fix), ("kind", kind)):
            if value is not None:
                setattr(self, name, value)

    @classmethod
    def about(cls, option: str, rest: str, *, lead: str = "", **fields: Any) -> ConversionError:
        """An error about the argument `option`: the message is `lead`, `option` in backticks, `rest`.

        Example:
          >>> e = RepresentativeDataError.about("representative_data", " has no samples.")
          >>> str(e), e.message_for("--calibration x.npy")
          ('`representative_data` has no samples.', '--calibration x.npy has no samples.')
        """
        e = cls(f"{lead}`{option}`{rest}", option=option, **fields)
        e.wording = (lead, rest)
        return e

    def message_for(self, name: str | None) -> str:
        """The message, with the argument it is about called `name` (a front end's flag).

        Without a `wording` (or a `name`) this is `str(self)`.
        """
        if self.wording is None or name is None:
            return str(self)
        lead, rest = self.wording
        return f"{lead}{name}{rest}"


class ModelLoadError(ConversionError):
    """The source model could not be found or read."""


class InvalidTFLiteError(ConversionError):
    """A file or buffer is not a valid `.tflite` flatbuffer."""


class RepresentativeDataError(ConversionError):
    """Calibration or sample data does not match the model's inputs."""


class UnsupportedModelError(ConversionError):
    """The model uses something the requested conversion cannot handle."""


class ValidationError(ConversionError):
    """The converted model disagrees with the source model beyond the thresholds.

    Attributes:
      report: the `ValidationReport` that failed, or None.
      finding: the message without the advice (what disagreed, by how much),
        for front ends that give their own advice.
    """

    report = None
    finding: str = ""


class ConverterCrashError(ConversionError):
    """The converter (or calibrator) process died in native code (SIGSEGV, abort).

    Not the user's mistake: `internal` is True, so the command line exits 1
    with "internal error" and the log path. Still a `ConversionError`, so that
    `convert_many` callers catching it keep working.
    """

    internal = True


class TargetError(ConversionError):
    """The model does not meet the constraints of the requested target."""


class ConversionWarning(UserWarning):
    """A conversion succeeded but something deserves the user's attention."""


class PartialConversionError(ConversionError):
    """Some modes of a `convert_many` call converted, others failed.

    Nothing is lost: the modes that converted are in `results`, each failure
    (with its own message, naming its mode) in `failures`.

    Attributes:
      results: mode word -> `ConversionResult` of every mode that succeeded.
      failures: mode word -> the `ConversionError` of every mode that failed.
    """

    def __init__(self, results: dict, failures: dict) -> None:
        self.results = dict(results)
        self.failures = dict(failures)
        done = ", ".join(results) or "none"
        lines = [
            f"{len(failures)} of {len(results) + len(failures)} modes failed "
            f"(converted: {done}):"
        ]
        lines.extend(f"  {m}: {e}" for m, e in failures.items())
        super().__init__("\n".join(lines))

    @property
    def internal(self) -> bool:  # type: ignore[override]
        """True if any failed mode failed for a reason of ours (a native crash)."""
        return any(getattr(e, "internal", False) for e in self.failures.values())
