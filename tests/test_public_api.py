"""The package surface: `import tflight` is cheap, every public name resolves lazily."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TFLIGHT_ALL = {
    "errors", "load_digits", "TflightError",
    # bridge
    "BridgeReport", "to_keras3", "to_tf_keras",
    # compression
    "CentroidInit", "Cluster", "cluster", "strip_clustering", "Pipeline", "PipelineResult",
    "callbacks", "fit", "freeze", "CompressionReport", "compression_report", "FlattenResult",
    "flatten", "ConstantSparsity", "PolynomialDecay", "Prune",
    "SparsityReport", "prune", "sparsity_report", "strip_pruning", "QAT", "AgreementReport",
    "check_agreement", "qat", "strip_qat",
    # structure
    "ChannelGroup", "DependencyGraph", "APoZImportance", "BNScaleImportance", "Importance",
    "MagnitudeImportance", "TaylorImportance", "LowRankResult", "factorize", "ChannelSensitivity",
    "channel_sensitivity", "ChannelPruningResult", "GroupCut", "prune_channels",
    "ResidualBlock", "residual_blocks", "rank_blocks", "drop_blocks",
    # mixed precision
    "Precision", "QuantizedModel", "PrecisionSensitivity", "quantize_int4", "quantize_layers",
    "precision_sensitivity", "SearchResult", "search_precision",
    # distillation
    "Distiller", "DistillationResult", "TeacherCache", "distill", "load_distiller",
    "DistillationLoss", "SoftTargetLoss", "HardTargetLoss", "GroundTruthLoss", "FeatureLoss",
    "LossInputs",
    # benchmark
    "Accelerator", "BenchmarkConfig", "BenchmarkResult", "Comparison", "DEVICE_PROFILES",
    "Device", "DeviceProfile", "append_history", "benchmark", "benchmark_many",
    "estimate_latency", "plot_latency_vs_size", "read_history", "setup_arm64",
    # optimize
    "OptimizeError", "CandidateResult", "OptimizeResult", "optimize",
    # language models
    "LiteRTLM", "benchmark_lm", "convert_lm",
}

CONVERTERS_ALL = {
    "errors", "ConversionError", "ConversionResult", "InspectReport", "Mode", "ModelStats",
    "Target", "TargetReport", "TensorInfo", "TFLiteModel", "Thresholds", "ValidationReport",
    "VerifiedTFLite", "convert", "convert_many", "default_thresholds", "inspect",
    "verify_tflite", "PartialConversionError", "GpuRun", "run_on_gpu", "setup_gpu",
}

HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_import_tflight_loads_no_tensorflow():
    proc = _python(
        f"""
        import sys
        import tflight
        assert 'tensorflow' not in sys.modules
        # The cheap names stay cheap on first use.
        assert issubclass(tflight.TflightError, Exception)
        assert tflight.errors.TflightError is tflight.TflightError
        assert callable(tflight.load_digits)
        assert tflight.__version__
        print(sorted(m for m in {HEAVY!r} + ('sklearn',) if m in sys.modules))
        """
    )
    assert proc.stdout.strip() == "[]"


def test_first_use_imports_the_area():
    proc = _python(
        """
        import sys
        import tflight
        prune = tflight.prune
        from tflight.compress.pruning import prune as real
        assert prune is real
        assert 'tensorflow' in sys.modules
        assert 'prune' in vars(tflight)  # resolved once, then a plain attribute
        print('ok')
        """
    )
    assert proc.stdout.strip() == "ok"


def test_benchmark_stays_the_function_when_its_module_is_imported_first():
    # `tflight.benchmark` is both a submodule and a public function; importing
    # the submodule must not rebind the package attribute to the module.
    _python(
        """
        from tflight.bench.run import BenchmarkConfig
        import tflight
        from tflight.bench import emulator as device
        from tflight.bench.run import benchmark
        assert tflight.benchmark is benchmark, tflight.benchmark
        assert tflight.BenchmarkConfig is BenchmarkConfig
        assert device.setup_arm64 is tflight.setup_arm64
        """
    )


def test_exported_sets_are_pinned():
    import converters
    import tflight

    assert len(tflight.__all__) == len(set(tflight.__all__))
    assert set(tflight.__all__) == TFLIGHT_ALL
    assert set(converters.__all__) == CONVERTERS_ALL


def test_every_public_name_resolves_and_is_listed():
    import tflight

    listed = set(dir(tflight))
    for name in tflight.__all__:
        assert getattr(tflight, name) is not None, name
        assert name in listed, name
    from tflight.devices.profiles import PROFILES

    assert tflight.DEVICE_PROFILES is PROFILES
    assert callable(tflight.benchmark)


def test_unknown_attribute_raises_attribute_error():
    import tflight

    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        tflight.no_such_name  # noqa: B018
    assert not hasattr(tflight, "pruning_typo")
    with pytest.raises(ImportError):
        from tflight import no_such_name  # noqa: F401


def test_every_public_name_is_declared_once():
    # Each public name is written in exactly one stage's `_EXPORTS` (or the
    # top level's own few); `__all__` and the lazy table are derived from them.
    import importlib

    import tflight

    seen: dict[str, str] = {name: "tflight" for name in tflight._EXPORTS}
    for stage in tflight.STAGES:
        module = importlib.import_module(stage)
        assert module.__all__ == list(module._EXPORTS), stage
        for name in module._EXPORTS:
            if name in getattr(module, "_LOCAL", ()):
                continue
            assert name not in seen, f"{name} is declared by {seen[name]} and {stage}"
            seen[name] = stage
        # A public name equal to a submodule's name would be rebound by the import system.
        folder = ROOT / Path(*stage.split("."))
        submodules = {p.stem for p in folder.glob("*.py")}
        assert not submodules & set(module._EXPORTS), stage
    assert set(seen) == set(tflight.__all__)
    # Nor may a public name be a stage's name: importing the stage would rebind it
    # (`tflight.distill` is the function; its stage is `tflight.distillation`).
    stage_names = {stage.rsplit(".", 1)[1] for stage in tflight.STAGES}
    assert not stage_names & set(tflight.__all__), stage_names & set(tflight.__all__)


OLD_NAMES = {
    "quantize": "qat",
    "strip_quantization": "strip_qat",
    "SensitivityResult": "ChannelSensitivity",
    "analyze_sensitivity": "channel_sensitivity",
    "SensitivityReport": "PrecisionSensitivity",
    "quantization_sensitivity": "precision_sensitivity",
}


@pytest.mark.parametrize("old, new", sorted(OLD_NAMES.items()))
def test_renamed_names_still_work_and_warn(old, new):
    import tflight

    with pytest.warns(DeprecationWarning, match=f"use tflight.{new}"):
        value = getattr(tflight, old)
    assert value is getattr(tflight, new)
    assert old not in tflight.__all__


def test_old_module_paths_still_import_and_warn():
    proc = _python(
        """
        import warnings
        warnings.simplefilter("error", DeprecationWarning)
        try:
            import tflight.structured
        except DeprecationWarning as w:
            assert "tflight.shrink.channels" in str(w), w
        else:
            raise AssertionError("no warning")
        warnings.simplefilter("ignore", DeprecationWarning)
        from tflight.structured import fine_tune
        from tflight.shrink.channels import fine_tune as real
        assert fine_tune is real
        from tflight.profiles import PROFILES
        import tflight
        assert PROFILES is tflight.DEVICE_PROFILES
        print("ok")
        """
    )
    assert proc.stdout.strip() == "ok"
