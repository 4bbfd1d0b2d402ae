"""A tiny causal LM trained on the standard library's docstrings, to LiteRT with a KV cache.

Trains a small Llama-shaped keras-hub `LlamaCausalLM` (byte-level vocabulary of
256, grouped-query attention, rotary positions; about 0.9 M parameters by
default) on the docstrings and comments of Python's own standard library
(`tflight.lm.stdlib_text`, files split into training and held-out text), then,
side by side in one run:

* converts it with `tflight.convert_lm` to fp32, int8 (per channel) and int4
  (blocks of 32) `.tflite` files with `prefill_<L>` / `decode` signatures;
* greedy match of the fp32 file against Keras (prompts from held-out text),
  teacher-forced top-1 agreement and perplexity of every file on held-out text;
* decode tokens/s of the cached file vs the same model exported without a
  cache (one `[token_ids, padding_mask]` signature at max_length: every new
  token recomputes the whole sequence, which is what keras-hub's plain export
  does) and vs Keras `generate` on the host, 128 generated tokens, medians of
  interleaved rounds;
* time to first token and peak memory of each file (`tflight.lm.benchmark_lm`,
  a child process per file), and with `--arm64` the same under the emulated
  ARM64 device (qemu wall time, not phone time).

All figures are measured on this host (CPU, XNNPACK). The trained model is kept
in `~/.cache/tflight/llm-bench/` so that a second run skips training.

Usage:
  python benchmarks/llm.py --json llm.json
  python benchmarks/llm.py --steps 600 --hidden 192 --layers 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NEW_TOKENS = 128
PROMPT = 32


def build(args):
    import keras
    import keras_hub

    keras.utils.set_random_seed(args.seed)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=256, num_layers=args.layers, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=args.hidden, intermediate_dim=3 * args.hidden, dropout=0.0)
    return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def train(args, corpus):
    import keras
    import keras_hub  # noqa: F401 - registers the classes for loading

    cache = os.path.expanduser(
        f"~/.cache/tflight/llm-bench/llama-h{args.hidden}-l{args.layers}-s{args.steps}-"
        f"seed{args.seed}.keras")
    if os.path.exists(cache):
        return keras.saving.load_model(cache), cache, 0.0
    lm = build(args)
    rng = np.random.default_rng(args.seed)
    seq = args.seq
    data = corpus.train.astype(np.int32)
    starts = rng.integers(0, data.size - seq - 1, size=args.steps * args.batch)
    x = np.stack([data[s:s + seq + 1] for s in starts])
    lm.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=0.01),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               sampler="greedy")
    t0 = time.perf_counter()
    # Ten "epochs" over one pass of random windows: the log shows the loss falling.
    lm.fit({"token_ids": x[:, :-1], "padding_mask": np.ones_like(x[:, :-1], bool)}, x[:, 1:],
           batch_size=args.batch, epochs=10, steps_per_epoch=max(args.steps // 10, 1),
           verbose=2)
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    lm.save(cache)
    return lm, cache, seconds


def nocache_file(lm, max_length: int) -> bytes:
    """The model's plain call at max_length: one signature, no cache."""
    import keras
    import tensorflow as tf

    from converters.lm import convert_saved_lm

    variables = list(lm.variables)
    values = [v.numpy() for v in variables]

    @tf.function(input_signature=[tf.TensorSpec([1, max_length], tf.int32, name="token_ids"),
                                  tf.TensorSpec([1, max_length], tf.int32, name="padding_mask")])
    def serve(token_ids, padding_mask):
        mapping = [(v, tf.constant(a)) for v, a in zip(variables, values, strict=True)]
        with keras.StatelessScope(state_mapping=mapping):
            logits = lm({"token_ids": token_ids, "padding_mask": tf.cast(padding_mask, bool)})
        return {"logits": logits}

    module = tf.Module()
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
        return convert_saved_lm(tmp, signature_keys=["serving_default"], mode="fp32")


def decode_speeds(cached: bytes, nocache: bytes, lm, prompt, rounds: int, max_length: int):
    """Decode tokens/s of the cached file, the no-cache file and Keras generate, interleaved."""
    from ai_edge_litert.interpreter import Interpreter

    from tflight.lm import LiteRTLM

    runner = LiteRTLM(cached)
    it = Interpreter(model_content=nocache, num_threads=2)
    full = it.get_signature_runner("serving_default")
    ids = np.zeros((1, max_length), np.int32)
    mask = np.zeros((1, max_length), np.int32)
    n = len(prompt)
    ids[0, :n] = prompt
    mask[0, :n] = 1
    keras_ids = ids.copy()
    keras_mask = mask.astype(bool)

    def nocache_round():
        a, m = ids.copy(), mask.copy()
        t0 = time.perf_counter()
        out = []
        for i in range(NEW_TOKENS):
            logits = full(token_ids=a, padding_mask=m)["logits"]
            tok = int(logits[0, n + i - 1].argmax())
            out.append(tok)
            a[0, n + i], m[0, n + i] = tok, 1
        return NEW_TOKENS / (time.perf_counter() - t0), out

    def keras_round():
        t0 = time.perf_counter()
        lm.generate({"token_ids": keras_ids, "padding_mask": keras_mask},
                    max_length=n + NEW_TOKENS, stop_token_ids=None)
        return NEW_TOKENS / (time.perf_counter() - t0)

    keras_round()  # traces generate
    nocache_round()
    runner.generate(prompt, 4)
    cached_s, nocache_s, keras_s = [], [], []
    same = None
    for _ in range(rounds):
        r = runner.generate(prompt, NEW_TOKENS)
        cached_s.append(r.decode_tokens_per_second)
        speed, tokens = nocache_round()
        nocache_s.append(speed)
        same = tokens == r.tokens
        keras_s.append(keras_round())
    return {"cached_decode_tokens_per_s": statistics.median(cached_s),
            "nocache_decode_tokens_per_s": statistics.median(nocache_s),
            "keras_generate_tokens_per_s": statistics.median(keras_s),
            "nocache_tokens_equal_cached": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", dest="json_path", default=None)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm64", action="store_true",
                   help="Also run each file on the emulated ARM64 device (qemu wall time).")
    args = p.parse_args()


    from tflight.lm import benchmark_lm, convert_lm, stdlib_text
    from tflight.lm.export import resolve_cache
    from tflight.lm.verify import keras_window_logits, perplexity, windows_of

    corpus = stdlib_text(max_bytes=3_000_000)
    lm, model_path, train_s = train(args, corpus)
    lm.compile(sampler="greedy")
    params = int(sum(np.prod(v.shape) for v in lm.weights))
    heldout = corpus.heldout.astype(np.int64)
    layout = resolve_cache(lm, args.max_length, None)
    wins = windows_of(heldout, args.seq, 16)
    nll = sum(perplexity(keras_window_logits(lm, layout, w), w)[0] for w in wins)
    keras_ppl = float(np.exp(nll / sum(len(w) - 1 for w in wins)))
    print(f"model: Llama-shaped, {params:,} parameters, trained {args.steps} steps "
          f"({train_s:.0f} s); held-out perplexity (Keras) {keras_ppl:.2f} per byte", flush=True)

    prompts = [heldout[s:s + PROMPT].tolist() for s in
               np.linspace(0, heldout.size - PROMPT - 1, 4).astype(int)]
    tmp = tempfile.mkdtemp(prefix="tflight-llm-bench-")
    files, results = {}, {}
    for name, mode, block in (("fp32", "fp32", None), ("int8", "int8", None),
                              ("int4_b32", "int4", 32)):
        t0 = time.perf_counter()
        r = convert_lm(lm, max_length=args.max_length, prefill_lengths=(PROMPT, args.seq),
                       mode=mode, block_size=block, output=os.path.join(tmp, f"{name}.tflite"),
                       eval_tokens=heldout, prompts=prompts, num_tokens=32,
                       min_top1_agreement=0.0)
        files[name] = r
        results[name] = {"file_bytes": r.sizes["file_bytes"], "sizes": r.sizes,
                         "verification": r.verification,
                         "convert_seconds": time.perf_counter() - t0}
        print(name, r.summary(), flush=True)
    nocache = nocache_file(lm, args.max_length)
    speeds = decode_speeds(files["fp32"].model, nocache, lm, prompts[0], args.rounds,
                           args.max_length)
    print(json.dumps(speeds), flush=True)
    for name, r in files.items():
        b = benchmark_lm(r.path, prompt_tokens=PROMPT, new_tokens=NEW_TOKENS, rounds=args.rounds)
        results[name]["host"] = b.as_dict()
        print(b.summary(), flush=True)
        if args.arm64:
            a = benchmark_lm(r.path, prompt_tokens=PROMPT, new_tokens=NEW_TOKENS, rounds=1,
                             device="arm64")
            results[name]["arm64_emulated"] = a.as_dict()
            print(a.summary(), flush=True)

    fp32, int4, int8 = results["fp32"], results["int4_b32"], results["int8"]
    headline = {
        "decode_speedup_vs_nocache": speeds["cached_decode_tokens_per_s"]
        / speeds["nocache_decode_tokens_per_s"],
        "int4_size_ratio": fp32["file_bytes"] / int4["file_bytes"],
        "int4_ppl_increase_pct": int4["verification"]["ppl_increase_pct"],
        "fp32_greedy_match": fp32["verification"]["greedy_match"],
        "int8_top1_agreement": int8["verification"]["top1_agreement"],
    }
    out = {
        "headline": headline,
        "targets": {"decode_speedup_vs_nocache": ">= 5", "int4_size_ratio": ">= 6",
                    "int4_ppl_increase_pct": "<= 5", "fp32_greedy_match": "1.0",
                    "int8_top1_agreement": ">= 0.99"},
        "model": {"kind": "keras_hub.models.LlamaCausalLM", "parameters": params,
                  "hidden": args.hidden, "layers": args.layers, "vocabulary": 256,
                  "train_steps": args.steps, "batch": args.batch, "seq": args.seq,
                  "train_seconds": train_s, "saved": model_path,
                  "keras_heldout_ppl_per_byte": keras_ppl,
                  "corpus": {"train_bytes": int(corpus.train.size),
                             "heldout_bytes": int(corpus.heldout.size), "files": corpus.files}},
        "max_length": args.max_length, "prompt_tokens": PROMPT, "new_tokens": NEW_TOKENS,
        "decode": speeds, "files": results,
        "labels": "all figures measured on this host (CPU, XNNPACK, 2 threads)",
    }
    print(json.dumps({"headline": headline}, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
