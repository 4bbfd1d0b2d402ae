"""Causal language models to LiteRT: KV-cache export, weight quantization, verification, running.

`convert_lm` traces a Keras causal LM (keras-hub's GPT-2, Llama, Gemma, Qwen,
... or any model with `call_with_cache`) into a `.tflite` with `prefill_<L>`
and `decode` signatures and an explicit KV cache, quantizes its weights
(int8 / int4, per channel or blockwise) and checks it token by token against
Keras; `LiteRTLM` runs such a file; `benchmark_lm` measures it.
"""

from __future__ import annotations

from tflight.lm.bench import LMBenchmarkResult, benchmark_lm
from tflight.lm.data import TextCorpus, stdlib_text
from tflight.lm.export import CacheLayout, LMConversionResult, convert_lm
from tflight.lm.generate import GenerationResult, LiteRTLM, Sampler
from tflight.lm.tokenizer import ByteTokenizer
from tflight.lm.verify import LMVerification

__all__ = [
    "ByteTokenizer",
    "CacheLayout",
    "GenerationResult",
    "LMBenchmarkResult",
    "LMConversionResult",
    "LMVerification",
    "LiteRTLM",
    "Sampler",
    "TextCorpus",
    "benchmark_lm",
    "convert_lm",
    "stdlib_text",
]
