"""Causal language models to LiteRT: KV-cache export, weight quantization, verification, running.

`convert_lm` traces a Keras causal LM (keras-hub's GPT-2, Llama, Gemma, Qwen,
... or any model with `call_with_cache`) into a `.tflite` with `prefill_<L>`
and `decode` signatures and an explicit KV cache, quantizes its weights
(int8 / int4, per channel or blockwise) and checks it token by token against
Keras; `LiteRTLM` runs such a file; `benchmark_lm` measures it.
"""

from tflight._lazy import attach

_EXPORTS = {
    "LiteRTLM": "tflight.lm.generate",
    "benchmark_lm": "tflight.lm.bench",
    "convert_lm": "tflight.lm.export",
    # Stage-only names.
    "ByteTokenizer": "tflight.lm.tokenizer",
    "CacheLayout": "tflight.lm.export",
    "GenerationResult": "tflight.lm.generate",
    "LMBenchmarkResult": "tflight.lm.bench",
    "LMConversionResult": "tflight.lm.export",
    "LMVerification": "tflight.lm.verify",
    "Sampler": "tflight.lm.generate",
    "TextCorpus": "tflight.lm.data",
    "stdlib_text": "tflight.lm.data",
}
_LOCAL = frozenset(set(_EXPORTS) - {"LiteRTLM", "benchmark_lm", "convert_lm"})

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
