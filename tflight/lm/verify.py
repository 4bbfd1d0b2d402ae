"""Checks that a converted LM generates what the Keras model generates.

Three measures, all in LiteRT against the Keras model's own `call_with_cache`:

* **greedy match**: greedy decoding of N tokens from several prompts, the
  fraction of positions where the file picks exactly Keras' token (the
  comparison stops at the first difference of each prompt, since later tokens
  follow different contexts);
* **top-1 agreement**: teacher-forced, on windows of held-out text, the fraction
  of positions where both argmaxes agree;
* **perplexity** of both on the same windows and its relative increase.

fp32 files must match greedily on every token; quantized files are gated on
top-1 agreement (and, if asked, the perplexity increase).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from tflight.errors import LanguageModelError

__all__ = ["LMVerification", "keras_greedy", "keras_window_logits", "perplexity",
           "verify_file", "window_metrics"]

DEFAULT_TOP1 = {"fp32": 0.99, "fp16": 0.99, "int8": 0.9, "int4": 0.5}


@dataclasses.dataclass(frozen=True)
class LMVerification:
    """What `verify_file` measured (measured, this host).

    Attributes:
      greedy_match: fraction of greedy tokens equal to Keras' (1.0 = all).
      greedy_tokens: tokens compared.
      first_mismatch: (prompt index, step) of the first difference, or None.
      top1_agreement: teacher-forced top-1 agreement on the evaluation windows.
      positions: positions compared for agreement and perplexity.
      ppl_keras: perplexity of the Keras model on the windows.
      ppl_file: perplexity of the file.
      ppl_increase_pct: `100 * (ppl_file / ppl_keras - 1)`.
      eval_text: "held-out text" or "random tokens".
      vocabulary_size: logits per position.
      gate: the gate applied, in words.
    """

    greedy_match: float
    greedy_tokens: int
    first_mismatch: tuple[int, int] | None
    top1_agreement: float
    positions: int
    ppl_keras: float
    ppl_file: float
    ppl_increase_pct: float
    eval_text: str
    vocabulary_size: int
    gate: str

    @property
    def text(self) -> str:
        return (f"greedy match {self.greedy_match:.1%} of {self.greedy_tokens} tokens; top-1 "
                f"agreement {self.top1_agreement:.1%} over {self.positions} positions of "
                f"{self.eval_text}; perplexity {self.ppl_keras:.3f} -> {self.ppl_file:.3f} "
                f"({self.ppl_increase_pct:+.2f} %); gate: {self.gate}")

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["text"] = self.text
        return d


_STEPS: dict[int, Any] = {}


def _step(causal_lm: Any) -> Any:
    """`call_with_cache` as a `tf.function` (one trace per token-block shape), as `generate` runs it."""
    from tflight._keras import tf

    key = id(causal_lm)
    if key not in _STEPS:
        _STEPS.clear()

        @tf.function
        def step(tokens: Any, cache: Any, index: Any) -> Any:
            logits, _, cache = causal_lm.call_with_cache(tokens, cache, index)
            return logits, cache

        _STEPS[key] = step
    return _STEPS[key]


def keras_greedy(causal_lm: Any, layout: Any, prompt: Sequence[int], num_tokens: int) -> list[int]:
    """Greedy tokens of the Keras model: the prompt through `call_with_cache`, then one at a time.

    The same steps as keras-hub's `generate` with the greedy sampler (one cache
    pass over the prompt, then one call per token, in a `tf.function`).
    """
    from tflight._keras import tf

    step = _step(causal_lm)
    cache = tf.zeros(layout.shape, tf.float32)
    logits, cache = step(tf.constant([list(prompt)], tf.int32), cache, tf.constant(0))
    out = [int(np.argmax(np.asarray(logits)[0, -1]))]
    for i in range(num_tokens - 1):
        logits, cache = step(tf.constant([[out[-1]]], tf.int32), cache,
                             tf.constant(len(prompt) + i))
        out.append(int(np.argmax(np.asarray(logits)[0, -1])))
    return out


def keras_window_logits(causal_lm: Any, layout: Any, window: Sequence[int]) -> np.ndarray:
    """The Keras model's logits `[n, vocab]` for one window, from an empty cache."""
    from tflight._keras import tf

    logits, _ = _step(causal_lm)(tf.constant([list(window)], tf.int32),
                                 tf.zeros(layout.shape, tf.float32), tf.constant(0))
    return np.asarray(logits, dtype=np.float64)[0]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, window: Sequence[int]) -> tuple[float, int]:
    """(total negative log-likelihood of `window[1:]`, positions) from `logits` `[n, vocab]`."""
    targets = np.asarray(window[1:])
    lp = _log_softmax(logits[:-1])
    return float(-lp[np.arange(targets.size), targets].sum()), int(targets.size)


def window_metrics(reference: list[np.ndarray], candidate: list[np.ndarray],
                   windows: list[Sequence[int]]) -> dict[str, float]:
    """Top-1 agreement and both perplexities over windows (logits per window)."""
    agree = total = 0
    nll_ref = nll_cand = 0.0
    count = 0
    for r, c, w in zip(reference, candidate, windows, strict=False):
        agree += int((r.argmax(-1) == c.argmax(-1)).sum())
        total += r.shape[0]
        a, n = perplexity(r, w)
        b, _ = perplexity(c, w)
        nll_ref += a
        nll_cand += b
        count += n
    ppl_ref = float(np.exp(nll_ref / max(count, 1)))
    ppl_cand = float(np.exp(nll_cand / max(count, 1)))
    return {"top1_agreement": agree / max(total, 1), "positions": total, "ppl_reference": ppl_ref,
            "ppl_candidate": ppl_cand, "ppl_increase_pct": 100.0 * (ppl_cand / ppl_ref - 1.0)}


def windows_of(tokens: np.ndarray, length: int, count: int) -> list[list[int]]:
    """Up to `count` consecutive windows of `length` tokens, evenly spread over `tokens`."""
    tokens = np.asarray(tokens).reshape(-1)
    if tokens.size < length:
        return [tokens.tolist()] if tokens.size >= 2 else []
    starts = np.linspace(0, tokens.size - length, num=min(count, tokens.size // length))
    return [tokens[int(s):int(s) + length].tolist() for s in starts.astype(int)]


def verify_file(
    causal_lm: Any,
    model: bytes,
    *,
    layout: Any,
    mode: str,
    eval_tokens: np.ndarray | None = None,
    prompts: Sequence[Sequence[int]] | None = None,
    num_tokens: int = 16,
    windows: int = 4,
    min_top1_agreement: float | None = None,
    max_ppl_increase_pct: float | None = None,
) -> LMVerification:
    """Runs the file in LiteRT against the Keras model and applies the gates.

    The file is first probed in a child process (`converters.verify`), so that a
    file LiteRT would crash on fails as an error here rather than killing the
    caller.

    Raises:
      LanguageModelError: a gate failed (`value` holds the measurements).
    """
    from converters.verify import verify_tflite
    from tflight.lm.generate import LiteRTLM

    verify_tflite(model)
    runner = LiteRTLM(model)
    vocab = runner.vocabulary_size
    rng = np.random.default_rng(0)
    length = max(runner.prefill_lengths)
    if prompts is None:
        n = max(1, min(8, runner.max_length - num_tokens))
        prompts = [rng.integers(0, vocab, size=n).tolist() for _ in range(3)]
    matched = compared = 0
    first = None
    for p_index, prompt in enumerate(prompts):
        want = keras_greedy(causal_lm, layout, prompt, num_tokens)
        got = runner.generate(prompt, num_tokens).tokens
        for step, (a, b) in enumerate(zip(want, got, strict=False)):
            compared += 1
            if a != b:
                first = first or (p_index, step)
                compared += len(want) - step - 1
                break
            matched += 1
    eval_text = "held-out text" if eval_tokens is not None else "random tokens"
    source = eval_tokens if eval_tokens is not None else rng.integers(0, vocab, size=2 * length)
    wins = windows_of(source, min(length, runner.max_length), windows)
    ref = [keras_window_logits(causal_lm, layout, w) for w in wins]
    cand = []
    for w in wins:
        runner.reset()
        cand.append(runner.prefill(w).astype(np.float64))
    m = window_metrics(ref, cand, wins)
    top1 = DEFAULT_TOP1[mode] if min_top1_agreement is None else min_top1_agreement
    gate = (f"greedy match 100 % and top-1 >= {top1:.0%}" if mode == "fp32"
            else f"top-1 >= {top1:.0%}")
    if max_ppl_increase_pct is not None:
        gate += f", perplexity increase <= {max_ppl_increase_pct} %"
    report = LMVerification(
        greedy_match=matched / max(compared, 1), greedy_tokens=compared, first_mismatch=first,
        top1_agreement=m["top1_agreement"], positions=int(m["positions"]),
        ppl_keras=m["ppl_reference"], ppl_file=m["ppl_candidate"],
        ppl_increase_pct=m["ppl_increase_pct"], eval_text=eval_text, vocabulary_size=vocab,
        gate=gate)
    failed = []
    if mode == "fp32" and first is not None:
        failed.append(f"greedy decoding differs from Keras at prompt {first[0]}, step {first[1]}")
    if report.top1_agreement < top1:
        failed.append(f"top-1 agreement {report.top1_agreement:.1%} < {top1:.0%}")
    if max_ppl_increase_pct is not None and report.ppl_increase_pct > max_ppl_increase_pct:
        failed.append(f"perplexity increase {report.ppl_increase_pct:.2f} % > "
                      f"{max_ppl_increase_pct} %")
    if failed:
        raise LanguageModelError(
            f"the {mode} file fails its verification: {'; '.join(failed)} ({report.text})",
            argument="mode", value=report.as_dict(),
            fix="use a less aggressive mode (int8, or int4 with block_size=32) or lower the gate")
    return report
