"""A Keras causal LM to a LiteRT `.tflite` with an explicit KV cache: prefill and decode signatures.

keras-hub's causal LMs (GPT-2, Llama, Gemma, Qwen, ...) and any Keras model
that implements `call_with_cache(token_ids, cache, cache_update_index)` are
traced into static-shape `tf.function`s, one `prefill_<L>` per prompt block
length and one `decode`, with the weights captured as constants (a
`keras.StatelessScope` maps every variable to its value, so the file holds no
resource variables that LiteRT would have to initialise). The signatures share
the weight buffers in the file.

Cache layout, close to litert-torch's generative API so files move between the
two: a keras-hub cache `[batch, num_layers, 2, max_length, heads, head_dim]`
becomes one input and one output per layer and kind, `kv_cache_k_<i>` and
`kv_cache_v_<i>` of shape `[1, max_length, heads, head_dim]`; any other cache
shape is one tensor `kv_cache`. Both signatures take `tokens` `[1, L]` and
`input_pos` `[L]` (the positions of the tokens; the first one is where they go
in the cache) and return `logits` `[1, L, vocab]` and the updated cache.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from tflight.errors import LanguageModelError, UnsupportedOpError

__all__ = ["CacheLayout", "LMConversionResult", "convert_lm", "trace_lm"]

DECODE = "decode"


def prefill_name(length: int) -> str:
    """The signature name of the prefill block of `length` tokens."""
    return f"prefill_{length}"


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """The KV cache as the model sees it and as the `.tflite` signatures expose it.

    Attributes:
      shape: the model's cache shape (batch 1).
      per_layer: True for keras-hub's `[1, layers, 2, max_length, heads, head_dim]`,
        exposed as `kv_cache_k_<i>` / `kv_cache_v_<i>`; False: one `kv_cache`.
    """

    shape: tuple[int, ...]
    per_layer: bool

    @property
    def max_length(self) -> int:
        return int(self.shape[3]) if self.per_layer else int(self.shape[-3])

    @property
    def names(self) -> list[str]:
        if not self.per_layer:
            return ["kv_cache"]
        return [f"kv_cache_{kv}_{i}" for i in range(self.shape[1]) for kv in ("k", "v")]

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        return (1, *self.shape[3:]) if self.per_layer else self.shape

    def split(self, cache: Any) -> dict[str, Any]:
        """The model's cache tensor as the signature's named tensors."""
        if not self.per_layer:
            return {"kv_cache": cache}
        return {f"kv_cache_{kv}_{i}": cache[:, i, j]
                for i in range(self.shape[1]) for j, kv in enumerate(("k", "v"))}

    def join(self, tensors: dict[str, Any]) -> Any:
        """The signature's named tensors as the model's one cache tensor."""
        from tflight._keras import tf

        if not self.per_layer:
            return tensors["kv_cache"]
        layers = [tf.stack([tensors[f"kv_cache_k_{i}"], tensors[f"kv_cache_v_{i}"]], axis=1)
                  for i in range(self.shape[1])]
        return tf.stack(layers, axis=1)


@dataclasses.dataclass(frozen=True)
class LMConversionResult:
    """A converted causal LM and what was checked about it.

    Attributes:
      model: the `.tflite` file's bytes.
      path: where it was written, or None.
      mode: "fp32", "fp16", "int8" or "int4".
      block_size: int4 block size, or None for per-channel scales.
      max_length: tokens the cache holds (prompt + generated).
      prefill_lengths: the prefill block lengths (one signature each).
      vocabulary_size: logits per position.
      cache: the cache layout.
      sizes: bytes per tensor group (`converters.lm.TensorGroups` as a dict).
      verification: the `tflight.lm.verify.LMVerification` as a dict.
    """

    model: bytes
    path: str | None
    mode: str
    block_size: int | None
    max_length: int
    prefill_lengths: tuple[int, ...]
    vocabulary_size: int
    cache: CacheLayout
    sizes: dict[str, Any]
    verification: dict[str, Any]

    def summary(self) -> str:
        """Two lines: the file and its sizes, the verification."""
        s = self.sizes
        mode = self.mode + (f" (blocks of {self.block_size})" if self.block_size else "")
        head = (f"{mode}: {s['file_bytes']:,} bytes (matrices {s['matrices']:,}, embedding "
                f"{s['embedding']:,}, other {s['other']:,}); signatures "
                f"{', '.join(prefill_name(n) for n in self.prefill_lengths)}, decode; cache "
                f"{self.max_length} tokens")
        return head + "\n" + self.verification.get("text", "")


# ----------------------------------------------------------------- checks


def _check_model(causal_lm: Any) -> None:
    if not callable(getattr(causal_lm, "call_with_cache", None)):
        raise LanguageModelError(
            f"causal_lm ({type(causal_lm).__name__}) has no call_with_cache method; a causal LM "
            "needs call_with_cache(token_ids, cache, cache_update_index) returning (logits, "
            "hidden_states, cache) to be exported with a KV cache",
            argument="causal_lm", value=type(causal_lm).__name__,
            fix="use a keras-hub CausalLM (GPT2CausalLM, LlamaCausalLM, ...) or implement "
                "call_with_cache on your model")


def _model_limit(causal_lm: Any) -> int | None:
    backbone = getattr(causal_lm, "backbone", None)
    for obj in (backbone, causal_lm):
        n = getattr(obj, "max_sequence_length", None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _check_lengths(causal_lm: Any, max_length: int, prefill_lengths: Sequence[int]) -> None:
    if not isinstance(max_length, int) or max_length < 2:
        raise LanguageModelError(f"max_length must be an integer >= 2, got {max_length!r}",
                                 argument="max_length", value=max_length)
    limit = _model_limit(causal_lm)
    if limit is not None and max_length > limit:
        raise LanguageModelError(
            f"max_length={max_length} exceeds the model's max_sequence_length={limit} (its "
            "position table has no rows beyond that)", argument="max_length", value=max_length,
            fix=f"use max_length <= {limit}")
    if not prefill_lengths:
        raise LanguageModelError("prefill_lengths is empty; give at least one block length",
                                 argument="prefill_lengths", value=list(prefill_lengths))
    for n in prefill_lengths:
        if not isinstance(n, int) or not 1 <= n <= max_length:
            raise LanguageModelError(
                f"each prefill length must be an integer in [1, max_length={max_length}], got "
                f"{n!r}", argument="prefill_lengths", value=list(prefill_lengths))


def resolve_cache(causal_lm: Any, max_length: int,
                  cache_shape: Sequence[int] | None) -> CacheLayout:
    """The cache layout: `cache_shape` if given, else what keras-hub's `_build_cache` builds."""
    from tflight._keras import tf

    if cache_shape is None:
        build = getattr(causal_lm, "_build_cache", None)
        if not callable(build):
            raise LanguageModelError(
                f"the cache shape of {type(causal_lm).__name__} is unknown: it is not a keras-hub "
                "CausalLM (no _build_cache)", argument="cache_shape", value=None,
                fix="pass cache_shape=(1, ...) with max_length in the position keras-hub uses "
                    "([1, layers, 2, max_length, heads, head_dim]) or as the third-from-last axis")
        _, cache = build(tf.zeros([1, max_length], tf.int32))
        cache_shape = tuple(int(d) for d in cache.shape)
    shape = tuple(int(d) for d in cache_shape)
    if not shape or shape[0] != 1:
        raise LanguageModelError(f"cache_shape must start with batch 1, got {list(shape)}",
                                 argument="cache_shape", value=list(shape))
    per_layer = len(shape) == 6 and shape[2] == 2 and shape[3] == max_length
    layout = CacheLayout(shape, per_layer)
    if len(shape) < 3 or layout.max_length != max_length:
        raise LanguageModelError(
            f"cache_shape {list(shape)} does not hold max_length={max_length} tokens (expected "
            "it as axis 3 of a keras-hub cache or as the third-from-last axis)",
            argument="cache_shape", value=list(shape))
    return layout


# ----------------------------------------------------------------- tracing


def trace_lm(causal_lm: Any, layout: CacheLayout, prefill_lengths: Sequence[int]) -> Any:
    """A `tf.Module` whose `lm_signatures` dict holds the prefill and decode functions.

    Args:
      causal_lm: the model (its `call_with_cache` is traced).
      layout: the cache layout.
      prefill_lengths: one prefill signature per length.

    Returns:
      The module; `module.lm_signatures` maps signature names to concrete functions.
    """
    from tflight._keras import keras, tf

    variables = list(causal_lm.variables)
    values = [np.asarray(v.numpy()) for v in variables]
    cache_specs = {n: tf.TensorSpec(layout.tensor_shape, tf.float32, name=n) for n in layout.names}

    def step(tokens: Any, input_pos: Any, caches: dict[str, Any]) -> dict[str, Any]:
        mapping = [(v, tf.constant(a)) for v, a in zip(variables, values, strict=False)]
        with keras.StatelessScope(state_mapping=mapping):
            logits, _, cache = causal_lm.call_with_cache(tokens, layout.join(caches),
                                                         input_pos[0])
        return {"logits": tf.cast(logits, tf.float32), **layout.split(cache)}

    module = tf.Module()
    module.lm_signatures = {}
    for n in [*prefill_lengths, 1]:
        name = DECODE if n == 1 and 1 not in prefill_lengths else prefill_name(n)
        specs = {"tokens": tf.TensorSpec([1, n], tf.int32, name="tokens"),
                 "input_pos": tf.TensorSpec([n], tf.int32, name="input_pos"), **cache_specs}

        def fn(tokens, input_pos, **caches):  # noqa: ANN001, ANN003 - traced
            return step(tokens, input_pos, caches)

        module.lm_signatures[name] = tf.function(fn).get_concrete_function(**specs)
    if 1 in prefill_lengths:
        module.lm_signatures[DECODE] = module.lm_signatures[prefill_name(1)]
    return module


def _save(module: Any, directory: str) -> None:
    from tflight._keras import tf

    try:
        tf.saved_model.save(module, directory, signatures=module.lm_signatures)
    except Exception as e:
        raise LanguageModelError(
            f"the traced prefill/decode functions could not be saved: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}", argument="causal_lm") from e


# ----------------------------------------------------------------- convert


def convert_lm(
    causal_lm: Any,
    *,
    max_length: int,
    prefill_lengths: Sequence[int] | None = None,
    mode: str = "fp32",
    block_size: int | None = None,
    cache_shape: Sequence[int] | None = None,
    output: str | os.PathLike | None = None,
    eval_tokens: np.ndarray | None = None,
    prompts: Sequence[Sequence[int]] | None = None,
    num_tokens: int = 16,
    min_top1_agreement: float | None = None,
    max_ppl_increase_pct: float | None = None,
) -> LMConversionResult:
    """Converts a Keras causal LM to a verified LiteRT file with prefill/decode signatures.

    The model is traced (static shapes, batch 1), converted with builtin ops only
    and, for "int8"/"int4", its weights quantized with litert-quantizer's
    dynamic-range recipes; conversion and quantization run in a child process.
    The file is then checked in LiteRT against the Keras model before it is
    returned or written: for "fp32", greedy decoding of `num_tokens` tokens from
    each prompt must give exactly the tokens Keras gives; for every mode,
    teacher-forced top-1 agreement and perplexity on `eval_tokens` are measured
    and gated.

    Args:
      causal_lm: a keras-hub `CausalLM` or a Keras model with `call_with_cache`.
      max_length: tokens the cache holds (prompt plus generated tokens).
      prefill_lengths: prompt block lengths, one `prefill_<L>` signature each
        (default: `min(64, max_length)`); longer prompts are prefilled in blocks.
      mode: "fp32", "fp16", "int8" or "int4".
      block_size: int4 only: 32, 64 or 128 for blockwise scales; None per channel.
      cache_shape: the model's cache shape (batch 1), for models that are not
        keras-hub CausalLMs.
      output: where to write the file (atomically; never over the model's file).
      eval_tokens: 1-D token ids of held-out text for agreement and perplexity
        (default: random tokens, which measure agreement only).
      prompts: token-id prompts for the greedy check (default: three random ones).
      num_tokens: tokens generated per prompt in the greedy check.
      min_top1_agreement: gate on teacher-forced top-1 agreement (default: 0.99
        for fp32/fp16, 0.9 for int8, 0.5 for int4).
      max_ppl_increase_pct: gate on the perplexity increase (default: none).

    Returns:
      An `LMConversionResult`.

    Raises:
      LanguageModelError: bad arguments, a model without `call_with_cache`, or a
        file that fails its verification gate.
      UnsupportedOpError: a layer traces to an op LiteRT has no builtin for.

    Example:
      >>> lm = keras_hub.models.GPT2CausalLM(backbone=..., preprocessor=None)
      >>> result = tflight.convert_lm(lm, max_length=128, mode="int4", block_size=32,
      ...                             output="lm.tflite")
    """
    from converters.lm import LM_MODES, LMConversionError, convert_saved_lm, tensor_groups
    from tflight.lm import verify

    _check_model(causal_lm)
    if mode not in LM_MODES:
        raise LanguageModelError(f"mode must be one of {', '.join(LM_MODES)}, got {mode!r}",
                                 argument="mode", value=mode)
    if block_size is not None and (mode != "int4" or block_size not in (32, 64, 128)):
        raise LanguageModelError(
            f"block_size must be 32, 64 or 128 with mode int4, got {block_size!r} with {mode}",
            argument="block_size", value=block_size)
    lengths = tuple(prefill_lengths) if prefill_lengths else (min(64, max_length),)
    _check_lengths(causal_lm, max_length, lengths)
    lengths = tuple(sorted(set(lengths)))
    layout = resolve_cache(causal_lm, max_length, cache_shape)
    module = trace_lm(causal_lm, layout, lengths)
    keys = sorted(module.lm_signatures)
    with tempfile.TemporaryDirectory(prefix="tflight-lm-") as tmp:
        _save(module, os.path.join(tmp, "saved"))
        try:
            model = convert_saved_lm(os.path.join(tmp, "saved"), signature_keys=keys, mode=mode,
                                     block_size=block_size)
        except LMConversionError as e:
            if e.op is not None:
                where = f" in layer {e.layer}" if e.layer else ""
                raise UnsupportedOpError(
                    f"the model uses {e.op}{where}, which LiteRT has no builtin kernel for; "
                    "the LM export allows builtin ops only", op=e.op, layer=e.layer,
                    fix="rewrite that layer with ops LiteRT supports") from None
            raise
    report = verify.verify_file(causal_lm, model, layout=layout, mode=mode,
                                eval_tokens=eval_tokens, prompts=prompts, num_tokens=num_tokens,
                                min_top1_agreement=min_top1_agreement,
                                max_ppl_increase_pct=max_ppl_increase_pct)
    path = None
    if output is not None:
        from converters.files import write_atomic

        path = str(write_atomic(output, model, error=LanguageModelError))
    runner_vocab = report.vocabulary_size
    return LMConversionResult(
        model=model, path=path, mode=mode, block_size=block_size, max_length=max_length,
        prefill_lengths=lengths, vocabulary_size=runner_vocab, cache=layout,
        sizes=tensor_groups(model).as_dict(), verification=report.as_dict())
