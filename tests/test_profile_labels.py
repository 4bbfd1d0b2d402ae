"""The per-op profile never shows another device's estimate as host milliseconds."""

from __future__ import annotations

from tflight.bench.results import OpProfile, OpTiming


def _ops():
    return (OpTiming(0, "CONV_2D", True, 0.5, 0.5), OpTiming(1, "FULLY_CONNECTED", True, 0.5, 0.5))


def test_host_profile_column_says_host_ms():
    lines: list[str] = []
    OpProfile(_ops(), "estimated by timing model prefixes", True).summary(lines.append)
    assert "host ms" in lines[1] and "(est.)" not in lines[1]


def test_fallback_estimate_is_labelled_with_its_device():
    lines: list[str] = []
    prof = OpProfile(_ops(), "not measured on this host: the pixel4 device profile's estimate",
                     True, device="pixel4")
    prof.summary(lines.append)
    assert "pixel4 ms (est.)" in lines[1]
    assert "host ms" not in "\n".join(lines)
