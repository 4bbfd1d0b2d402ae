"""The package surface: `import tflight` is cheap, every public name resolves lazily."""

from __future__ import annotations

import ast
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
    "check_agreement", "quantize", "strip_quantization",
    # structure
    "ChannelGroup", "DependencyGraph", "APoZImportance", "BNScaleImportance", "Importance",
    "MagnitudeImportance", "TaylorImportance", "LowRankResult", "factorize", "SensitivityResult",
    "analyze_sensitivity", "ChannelPruningResult", "GroupCut", "prune_channels",
    # mixed precision
    "Precision", "QuantizedModel", "SensitivityReport", "quantize_int4", "quantize_layers",
    "quantization_sensitivity", "SearchResult", "search_precision",
    # distillation
    "Distiller", "DistillationResult", "TeacherCache", "distill", "load_distiller",
    "DistillationLoss", "SoftTargetLoss", "HardTargetLoss", "GroundTruthLoss", "FeatureLoss",
    "LossInputs",
    # benchmark
    "Accelerator", "BenchmarkConfig", "BenchmarkResult", "Comparison", "DEVICE_PROFILES",
    "Device", "DeviceProfile", "append_history", "benchmark", "benchmark_many",
    "estimate_latency", "plot_latency_vs_size", "read_history", "setup_arm64",
    # language models
    "lm", "LiteRTLM", "benchmark_lm", "convert_lm",
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
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
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
        from tflight.pruning import prune as real
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
        from tflight.benchmark import BenchmarkConfig
        import tflight
        from tflight import device
        from tflight.benchmark import benchmark
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
    from tflight.profiles import PROFILES

    assert tflight.DEVICE_PROFILES is PROFILES
    assert callable(tflight.benchmark)


def test_unknown_attribute_raises_attribute_error():
    import tflight

    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        tflight.no_such_name  # noqa: B018
    assert not hasattr(tflight, "pruning_typo")
    with pytest.raises(ImportError):
        from tflight import no_such_name  # noqa: F401


def _imports_under_type_checking(tree: ast.Module) -> dict[str, str]:
    block = next(
        node for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    names: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            names[alias.asname or alias.name] = f"{node.module}:{alias.name}"
    return names


def test_type_checking_imports_match_the_lazy_table():
    import tflight

    tree = ast.parse((ROOT / "tflight" / "__init__.py").read_text())
    static = _imports_under_type_checking(tree)
    lazy = {
        name: f"{module}:{tflight._RENAMED.get(name, name)}"
        for name, module in tflight._EXPORTS.items()
    }
    assert static == lazy
    assert set(lazy) == set(tflight.__all__)
