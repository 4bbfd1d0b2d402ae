"""Make a model faster by making it smaller: channel pruning, low rank, dropping residual blocks.

One dependency graph (`DependencyGraph`) says which channels are coupled;
importance criteria are small objects; per-layer ratios can be allocated from
measured sensitivity curves (`channel_sensitivity`).
"""

from tflight._lazy import attach

_EXPORTS = {
    "ChannelGroup": "tflight.shrink.depgraph",
    "DependencyGraph": "tflight.shrink.depgraph",
    "APoZImportance": "tflight.shrink.importance",
    "BNScaleImportance": "tflight.shrink.importance",
    "Importance": "tflight.shrink.importance",
    "MagnitudeImportance": "tflight.shrink.importance",
    "TaylorImportance": "tflight.shrink.importance",
    "LowRankResult": "tflight.shrink.lowrank",
    "factorize": "tflight.shrink.lowrank",
    "ChannelSensitivity": "tflight.shrink.sensitivity:SensitivityResult",
    "channel_sensitivity": "tflight.shrink.sensitivity:analyze_sensitivity",
    "ChannelPruningResult": "tflight.shrink.channels",
    "GroupCut": "tflight.shrink.channels",
    "prune_channels": "tflight.shrink.channels",
    "fine_tune": "tflight.shrink.channels",
    "ResidualBlock": "tflight.shrink.depth",
    "residual_blocks": "tflight.shrink.depth",
    "rank_blocks": "tflight.shrink.depth",
    "drop_blocks": "tflight.shrink.depth",
}
_LOCAL = frozenset({"fine_tune"})
# "Sensitivity" meant channel pruning here and quantization in `tflight.precision`.
_DEPRECATED = {"SensitivityResult": "ChannelSensitivity", "analyze_sensitivity": "channel_sensitivity"}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, deprecated=_DEPRECATED)
