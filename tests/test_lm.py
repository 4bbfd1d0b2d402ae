"""Causal LMs to LiteRT with a KV cache: export, exact greedy match, quantization, errors, isolation.

Tiny real models (2 layers, hidden 32) from keras-hub constructors and a user
model with its own `call_with_cache`; real conversion, real litert-quantizer,
real LiteRT.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from keras import ops

import tflight
from converters.lm import CRASH_HOOK, tensor_groups
from tflight.errors import LanguageModelError, UnsupportedOpError
from tflight.lm import ByteTokenizer, LiteRTLM, Sampler, convert_lm, stdlib_text

keras_hub = pytest.importorskip("keras_hub")

MAX_LENGTH = 32
PREFILL = (8,)


def _gpt2():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=260, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=64, dropout=0.0)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


class Determinant(keras.layers.Layer):
    """Adds 0 * det of a 2x2 slice: MatrixDeterminant has no builtin LiteRT kernel."""

    def call(self, h):
        from tensorflow import linalg

        b, t = ops.shape(h)[0], ops.shape(h)[1]
        return h + 0.0 * linalg.det(ops.reshape(h[..., :4], (b, t, 2, 2)))[..., None]


class TinyCachedLM(keras.Model):
    """A user's own causal LM: embeddings, 2 cached attention blocks, a dense head.

    Its cache is `[1, layers, 2, max_length, heads, head_dim]`, like keras-hub's,
    but it is not a keras-hub model (no `_build_cache`, no `generate`).
    """

    def __init__(self, vocab=64, hidden=32, heads=2, layers=2, max_length=MAX_LENGTH,
                 odd_op=False, **kw):
        super().__init__(**kw)
        self.vocab, self.hidden, self.heads, self.n_layers = vocab, hidden, heads, layers
        self.max_length, self.odd_op = max_length, odd_op
        self.tok = keras.layers.Embedding(vocab, hidden)
        self.pos = keras.layers.Embedding(max_length, hidden)
        self.qkv = [keras.layers.Dense(3 * hidden, name=f"qkv_{i}") for i in range(layers)]
        self.proj = [keras.layers.Dense(hidden, name=f"proj_{i}") for i in range(layers)]
        self.ff = [keras.layers.Dense(hidden, activation="relu", name=f"ff_{i}")
                   for i in range(layers)]
        self.head = keras.layers.Dense(vocab, name="head")
        self.odd = Determinant(name="odd_block") if odd_op else None

    @property
    def cache_shape(self):
        return (1, self.n_layers, 2, self.max_length, self.heads, self.hidden // self.heads)

    def call_with_cache(self, token_ids, cache, cache_update_index):
        b, t = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        d = self.hidden // self.heads
        positions = ops.arange(t) + cache_update_index
        x = self.tok(token_ids) + self.pos(positions)[None]
        keys = ops.arange(self.max_length)
        mask = keys[None, :] <= positions[:, None]
        new = []
        for i in range(self.n_layers):
            q, k, v = ops.split(ops.reshape(self.qkv[i](x), (b, t, 3, self.heads, d)), 3, axis=2)
            q, k, v = (ops.squeeze(z, 2) for z in (q, k, v))
            k_cache = ops.slice_update(cache[:, i, 0], (0, cache_update_index, 0, 0), k)
            v_cache = ops.slice_update(cache[:, i, 1], (0, cache_update_index, 0, 0), v)
            s = ops.einsum("bthd,bshd->bhts", q, k_cache) / float(np.sqrt(d))
            s = ops.where(mask[None, None], s, -1e9)
            a = ops.einsum("bhts,bshd->bthd", ops.softmax(s, axis=-1), v_cache)
            x = x + self.proj[i](ops.reshape(a, (b, t, self.hidden)))
            h = self.ff[i](x)
            if self.odd is not None:
                h = self.odd(h)
            x = x + h
            new.append(ops.stack([k_cache, v_cache], axis=1))
        return self.head(x), x, ops.stack(new, axis=1)

    def call(self, token_ids):
        cache = ops.zeros(self.cache_shape)
        return self.call_with_cache(token_ids, cache, 0)[0]


def _user_model(**kw):
    keras.utils.set_random_seed(1)
    m = TinyCachedLM(**kw)
    m(np.zeros((1, 4), np.int32))
    return m


@pytest.fixture(scope="session")
def gpt2():
    return _gpt2()


@pytest.fixture(scope="session")
def gpt2_fp32(gpt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "gpt2.tflite"
    return convert_lm(gpt2, max_length=MAX_LENGTH, prefill_lengths=PREFILL, output=out)


@pytest.fixture(scope="session")
def gpt2_int4(gpt2):
    return convert_lm(gpt2, max_length=MAX_LENGTH, prefill_lengths=PREFILL, mode="int4",
                      block_size=32)


PROMPTS = [[5, 17, 33, 2, 99], [200, 1, 1, 7, 7, 7, 64, 3, 9, 10, 11], [42]]


def test_gpt2_fp32_reproduces_keras_generate(gpt2, gpt2_fp32):
    """prefill + decode in LiteRT give exactly keras-hub `generate`'s greedy tokens."""
    gpt2.compile(sampler="greedy")
    runner = LiteRTLM(gpt2_fp32.path)
    assert runner.prefill_lengths == PREFILL and runner.max_length == MAX_LENGTH
    for prompt in PROMPTS:  # the 11-token prompt is prefilled in two blocks of 8
        n, new = len(prompt), 12
        ids = np.zeros((1, MAX_LENGTH), np.int32)
        ids[0, :n] = prompt
        mask = np.zeros((1, MAX_LENGTH), bool)
        mask[0, :n] = True
        want = gpt2.generate({"token_ids": ids, "padding_mask": mask}, max_length=n + new,
                             stop_token_ids=None)["token_ids"][0, n:n + new].tolist()
        assert runner.generate(prompt, new).tokens == want
    v = gpt2_fp32.verification
    assert v["greedy_match"] == 1.0 and v["top1_agreement"] == 1.0


def test_signatures_and_cache_layout(gpt2_fp32):
    """Signatures follow litert-torch's names: tokens, input_pos, kv_cache_k_<i>/kv_cache_v_<i>."""
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_path=gpt2_fp32.path).get_signature_list()
    assert set(sigs) == {"prefill_8", "decode"}
    cache = [f"kv_cache_{kv}_{i}" for i in range(2) for kv in "kv"]
    for name, _n in (("prefill_8", 8), ("decode", 1)):
        assert sorted(sigs[name]["inputs"]) == sorted(["tokens", "input_pos", *cache])
        assert sorted(sigs[name]["outputs"]) == sorted(["logits", *cache])
    ops_used = tflight_ops(gpt2_fp32.model)
    assert "DYNAMIC_UPDATE_SLICE" in ops_used and not any("FLEX" in o or o == "CUSTOM"
                                                          for o in ops_used)


def tflight_ops(model: bytes) -> set[str]:
    from converters.flatbuffer import enum_names, parse, schema

    names = enum_names(schema().BuiltinOperator)
    m = parse(model)
    codes = [names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in m.operatorCodes]
    return {codes[op.opcodeIndex] for sg in m.subgraphs for op in sg.operators}


def test_llama_shaped_model_converts_and_matches():
    """A keras-hub Llama (grouped-query attention, rotary positions) exports and matches Keras."""
    keras.utils.set_random_seed(2)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=128, num_layers=2, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=32, intermediate_dim=64)
    lm = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    result = convert_lm(lm, max_length=MAX_LENGTH, prefill_lengths=PREFILL)
    assert result.cache.shape == (1, 2, 2, MAX_LENGTH, 1, 16)
    lm.compile(sampler="greedy")
    prompt = [3, 1, 4, 1, 5, 9]
    ids = np.zeros((1, MAX_LENGTH), np.int32)
    ids[0, :6] = prompt
    mask = (np.arange(MAX_LENGTH) < 6)[None]
    want = lm.generate({"token_ids": ids, "padding_mask": mask},
                       max_length=16, stop_token_ids=None)["token_ids"][0, 6:16].tolist()
    assert LiteRTLM(result.model).generate(prompt, 10).tokens == want


def test_user_model_with_call_with_cache(tmp_path):
    """A user's own Keras model with call_with_cache (no keras-hub) exports and matches."""
    from tflight.lm.verify import keras_greedy

    model = _user_model()
    result = convert_lm(model, max_length=MAX_LENGTH, prefill_lengths=(4, 8),
                        cache_shape=model.cache_shape)
    assert result.verification["greedy_match"] == 1.0
    runner = LiteRTLM(result.model)
    assert runner.prefill_lengths == (4, 8)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]  # blocks of 8 and 4, then 1 padded
    assert runner.generate(prompt, 10).tokens == keras_greedy(model, result.cache, prompt, 10)


def test_int4_blockwise_runs_in_litert_and_is_smaller(gpt2_fp32, gpt2_int4):
    """int4 blockwise file: matrices 4 bits, runs in LiteRT, agreement reported and gated."""
    fp, q = tensor_groups(gpt2_fp32.model), tensor_groups(gpt2_int4.model)
    # 32-bit floats to 4-bit codes plus fp16 block scales (the tied head is one more matrix)
    assert "INT4" in q.by_type and q.matrices * 3 < fp.matrices
    assert q.file_bytes < fp.file_bytes
    tokens = LiteRTLM(gpt2_int4.model).generate([5, 17, 33], 8, sampler=Sampler("top_k", k=5,
                                                                                 seed=0)).tokens
    assert len(tokens) == 8 and all(0 <= t < 260 for t in tokens)
    v = gpt2_int4.verification
    assert 0.5 <= v["top1_agreement"] <= 1.0 and v["positions"] > 0



def _producers(model: bytes) -> dict[str, dict[str, str]]:
    """Per signature: output name -> the op that writes it."""
    from converters.flatbuffer import enum_names, op_name, parse, schema

    m = parse(model)
    names = enum_names(schema().BuiltinOperator)
    out = {}
    for sd in m.signatureDefs:
        sg = m.subgraphs[sd.subgraphIndex]
        made = {int(o): op_name(m.operatorCodes[op.opcodeIndex], names)
                for op in sg.operators for o in op.outputs}
        out[sd.signatureKey.decode()] = {tm.name.decode(): made.get(int(tm.tensorIndex), "input")
                                         for tm in sd.outputs}
    return out


def test_cache_is_updated_in_place_not_stacked_and_sliced(gpt2_fp32, gpt2_int4):
    """Each cache output is written by its DYNAMIC_UPDATE_SLICE: no stack-then-slice copies."""
    from converters.flatbuffer import enum_names, op_name, parse, schema

    for result in (gpt2_fp32, gpt2_int4):
        for sig, outputs in _producers(result.model).items():
            for name, op in outputs.items():
                if name.startswith("kv_cache"):
                    assert op == "DYNAMIC_UPDATE_SLICE", (sig, name, op)
        m = parse(result.model)
        names = enum_names(schema().BuiltinOperator)
        stacked = (1, 2, 2, MAX_LENGTH)  # [1, layers, 2, max_length, ...] or [1, 2, max_length, ...]
        for sg in m.subgraphs:
            for op in sg.operators:
                if op_name(m.operatorCodes[op.opcodeIndex], names) in ("PACK", "STRIDED_SLICE"):
                    for i in [*op.inputs, *op.outputs]:
                        shape = tuple(int(d) for d in sg.tensors[int(i)].shape)
                        assert shape[:4] != stacked and shape[:3] != (1, 2, MAX_LENGTH), shape


def test_int4_stores_the_embedding_quantized_and_names_compactly(gpt2_fp32, gpt2_int4):
    """The token table is an int4 EMBEDDING_LOOKUP; internal tensor names are short."""
    from converters.flatbuffer import parse

    fp, q = tensor_groups(gpt2_fp32.model), tensor_groups(gpt2_int4.model)
    assert "EMBEDDING_LOOKUP" in tflight_ops(gpt2_int4.model)
    assert "GATHER" not in tflight_ops(gpt2_int4.model)
    assert q.embedding * 6 <= fp.embedding  # 4-bit codes (the scales are separate)
    for model in (gpt2_fp32.model, gpt2_int4.model):
        m = parse(model)
        for sg in m.subgraphs:
            io = {int(i) for i in [*sg.inputs, *sg.outputs]}
            assert all(len(t.name) <= 5 for i, t in enumerate(sg.tensors) if i not in io)
            assert all(t.quantization is None or t.quantization.scale is not None
                       or t.quantization.details is not None for t in sg.tensors)
    print(f"tiny GPT-2 sizes: fp32 {fp.file_bytes:,} int4 {q.file_bytes:,}")


@pytest.mark.parametrize("mode, block, step", [("int8", None, 1 / 127), ("int4", 32, 1 / 7)])
def test_embedding_lookup_rows_within_one_quantization_step(tmp_path, mode, block, step):
    """A float GATHER table becomes an int8/int4 EMBEDDING_LOOKUP that LiteRT reads back right."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from converters.lm import convert_saved_lm

    table = np.random.default_rng(0).normal(0, 0.02, (64, 32)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 6], tf.int32, name="tokens")])
    def lookup(tokens):
        return {"rows": tf.gather(tf.constant(table), tokens) * 2.0}

    tf.saved_model.save(tf.Module(), str(tmp_path), signatures={"decode": lookup})
    model = convert_saved_lm(str(tmp_path), signature_keys=["decode"], mode=mode,
                             block_size=block)
    assert "EMBEDDING_LOOKUP" in tflight_ops(model) and tensor_groups(model).embedding <= (
        table.nbytes // 4)
    ids = np.array([[0, 5, 63, 5, 17, 40]], np.int32)
    rows = Interpreter(model_content=model).get_signature_runner("decode")(tokens=ids)["rows"]
    want = 2 * table[ids]
    # one step of the row's (or block's) scale, max |row| / 127 or / 7
    assert rows.shape == want.shape
    assert np.abs(rows - want).max() <= 2 * np.abs(table).max() * step * 0.51 + 1e-7

def test_prompt_longer_than_max_length(gpt2_fp32):
    runner = LiteRTLM(gpt2_fp32.model)
    with pytest.raises(LanguageModelError, match="exceeds the cache of max_length=32") as e:
        runner.generate(list(range(30)), 8)
    assert e.value.argument == "prompt"


def test_token_outside_vocabulary(gpt2_fp32):
    with pytest.raises(LanguageModelError, match=r"token id 260 is outside the vocabulary") as e:
        LiteRTLM(gpt2_fp32.model).generate([1, 260], 4)
    assert e.value.argument == "prompt" and e.value.value == 260


def test_model_without_call_with_cache():
    model = keras.Sequential([keras.Input((8,), dtype="int32"), keras.layers.Embedding(16, 8),
                              keras.layers.Dense(16)])
    with pytest.raises(LanguageModelError, match="has no call_with_cache") as e:
        convert_lm(model, max_length=16)
    assert e.value.argument == "causal_lm"


@pytest.mark.parametrize("kwargs, argument", [
    ({"max_length": 128}, "max_length"),  # beyond GPT-2's 64 positions
    ({"max_length": 32, "prefill_lengths": (64,)}, "prefill_lengths"),
    ({"max_length": 32, "mode": "int3"}, "mode"),
    ({"max_length": 32, "mode": "int8", "block_size": 32}, "block_size"),
])
def test_bad_arguments(gpt2, kwargs, argument):
    with pytest.raises(LanguageModelError) as e:
        convert_lm(gpt2, **kwargs)
    assert e.value.argument == argument


def test_unsupported_layer_names_op_and_layer():
    model = _user_model(odd_op=True)
    with pytest.raises(UnsupportedOpError, match="no builtin kernel") as e:
        convert_lm(model, max_length=MAX_LENGTH, prefill_lengths=PREFILL,
                   cache_shape=model.cache_shape)
    assert e.value.op == "tf.MatrixDeterminant" and "odd_block" in e.value.layer


@pytest.mark.parametrize("step, mode", [("convert", "fp32"), ("quantize", "int8")])
def test_crash_in_child_does_not_kill_caller(gpt2, monkeypatch, step, mode):
    monkeypatch.setenv(CRASH_HOOK, step)
    from converters.lm import LMConversionCrashed

    with pytest.raises(LMConversionCrashed, match="SIGABRT"):
        convert_lm(gpt2, max_length=MAX_LENGTH, prefill_lengths=PREFILL, mode=mode)


def test_never_writes_half_a_file_or_over_the_model(gpt2, tmp_path, monkeypatch):
    out = tmp_path / "lm.tflite"
    monkeypatch.setenv(CRASH_HOOK, "convert")
    from converters.lm import LMConversionCrashed

    with pytest.raises(LMConversionCrashed):
        convert_lm(gpt2, max_length=MAX_LENGTH, prefill_lengths=PREFILL, output=out)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_byte_tokenizer_and_stdlib_text():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("héllo")) == "héllo"
    corpus = stdlib_text(max_bytes=200_000)
    assert corpus.train.size > 100_000 and corpus.heldout.size > 1_000
    assert b"return" in corpus.train.tobytes()


def test_public_names():
    assert tflight.convert_lm is convert_lm
    assert set(tflight.lm.__all__) >= {"convert_lm", "LiteRTLM", "benchmark_lm"}
