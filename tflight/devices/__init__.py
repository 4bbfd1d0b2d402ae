"""What tflight knows about devices: published latencies and the fitted cost model.

`estimate_latency` turns a `.tflite` file's op work into a latency estimate for a
named phone or accelerator profile; every estimate is labelled as such.
"""

from tflight._lazy import attach

_EXPORTS = {
    "DEVICE_PROFILES": "tflight.devices.profiles:PROFILES",
    "DeviceProfile": "tflight.devices.profiles",
    "estimate_latency": "tflight.devices.profiles",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
