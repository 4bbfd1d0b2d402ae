"""A generator of random, valid, tiny Keras 3 models from the layers users use.

`generate(seed)` builds one model (a few thousand parameters, small inputs)
and data that fits it; the same seed always builds the same model. The
vocabulary is what Keras users put in their models: Conv1D/2D/3D,
DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Dense, EinsumDense, the
normalizations, the usual activations (PReLU, ELU, LeakyReLU among them),
pooling, Add / Concatenate / Multiply / Subtract, Reshape / Flatten / Permute,
Embedding, LSTM / GRU / SimpleRNN / Bidirectional, MultiHeadAttention,
Rescaling / Normalization / Random* augmentation, Dropout / SpatialDropout,
nested Sequential and Functional sub-models (frozen or not), several inputs
and outputs, subclassed models, custom layers and the `mixed_float16`
policy; and a few keras-hub backbones built from their constructors.

The generator is a seeded `random.Random` walk rather than a hypothesis
strategy: one example costs seconds of TensorFlow, so a failure is found by
its seed and replayed with it (`generate(seed)`), not shrunk; the property
test draws its seeds with hypothesis.

`benchmarks/fuzz_models.py` and `tests/test_model_fuzz.py` both import this
module (a test may import a benchmark; the benchmark never imports tests).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np

N_SAMPLES = 96  # 32 calibration/training + 64 held out (validation, the precision search)
N_CALIBRATION = 32
CLASSES = 3
VOCAB = 20

ACTIVATIONS = (
    "relu", "relu6", "swish", "hard_swish", "gelu", "sigmoid", "softmax", "tanh", "leaky_relu",
    "elu",
)

KERAS_HUB = ("hub_vit", "hub_gpt2", "hub_resnet", "hub_llama")


@dataclasses.dataclass
class Generated:
    """One generated model and data that fits it.

    Attributes:
      seed: what `generate` was called with.
      name: the model's name (`gen<seed>` or the keras-hub backbone).
      model: the Keras 3 model.
      x: inputs, an array or a list of arrays (several inputs), `N_SAMPLES` of them.
      y: integer class labels, an array or a list (several outputs).
      loss: a loss, or a list of them (several outputs).
      features: the vocabulary the model uses (layer kinds and structure), sorted.
    """

    seed: int
    name: str
    model: Any
    x: Any
    y: Any
    loss: Any
    features: tuple[str, ...]

    def split(self) -> tuple[Any, Any]:
        """(calibration/training inputs, held-out inputs) that never overlap."""
        if isinstance(self.x, list):
            return [a[:N_CALIBRATION] for a in self.x], [a[N_CALIBRATION:] for a in self.x]
        return self.x[:N_CALIBRATION], self.x[N_CALIBRATION:]

    def train_y(self) -> Any:
        if isinstance(self.y, list):
            return [a[:N_CALIBRATION] for a in self.y]
        return self.y[:N_CALIBRATION]

    def describe(self) -> str:
        return f"{self.name} [{', '.join(self.features)}]"


def _custom_layers() -> tuple[type, type]:
    """Two registered custom layers: one without a kernel, one with one."""
    import keras

    @keras.saving.register_keras_serializable(package="tflight_modelgen")
    class ScaleShift(keras.layers.Layer):
        """A per-channel affine map (no kernel: nothing to prune or cluster)."""

        def build(self, input_shape: Any) -> None:
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")
            self.shift = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="shift")

        def call(self, x: Any) -> Any:
            return x * self.scale + self.shift

    @keras.saving.register_keras_serializable(package="tflight_modelgen")
    class GatedDense(keras.layers.Layer):
        """A dense layer with a sigmoid gate: a kernel TF-MOT does not know."""

        def __init__(self, units: int = 8, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(
                shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel"
            )
            self.gate = self.add_weight(shape=(self.units,), initializer="zeros", name="gate")

        def call(self, x: Any) -> Any:
            import keras

            return keras.ops.matmul(x, self.kernel) * keras.ops.sigmoid(self.gate)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "units": self.units}

    return ScaleShift, GatedDense


_CUSTOM: tuple[type, type] | None = None


def custom_layers() -> tuple[type, type]:
    global _CUSTOM
    if _CUSTOM is None:
        _CUSTOM = _custom_layers()
    return _CUSTOM


class _Builder:
    """Builds one random Functional graph, recording the vocabulary it used."""

    def __init__(self, rng: random.Random) -> None:
        import keras

        self.k = keras
        self.L = keras.layers
        self.rng = rng
        self.used: set[str] = set()
        self.n = 0

    def name(self, kind: str) -> str:
        self.n += 1
        self.used.add(kind)
        return f"{kind.lower()}_{self.n}"

    def pick(self, options: Any) -> Any:
        return self.rng.choice(list(options))

    # ---- activations -------------------------------------------------
    def activation(self, x: Any) -> Any:
        L = self.L
        choice = self.pick((*ACTIVATIONS, "prelu", "elu_layer", "leaky_layer", "relu_max"))
        if choice == "prelu":
            return L.PReLU(name=self.name("PReLU"))(x)
        if choice == "elu_layer":
            return L.ELU(name=self.name("ELU"))(x)
        if choice == "leaky_layer":
            return L.LeakyReLU(negative_slope=0.1, name=self.name("LeakyReLU"))(x)
        if choice == "relu_max":
            return L.ReLU(max_value=6.0, name=self.name("ReLU"))(x)
        return L.Activation(choice, name=self.name(f"act_{choice}"))(x)

    def channels(self) -> int:
        return self.pick((4, 6, 8))

    # ---- images (H, W, C) --------------------------------------------
    def image_block(self, x: Any) -> Any:
        L = self.L
        c = self.channels()
        h = x.shape[1]
        kinds = ["conv", "conv", "depthwise", "separable", "transpose", "bn", "ln", "gn", "unit",
                 "act", "dropout", "spatial", "branch", "permute"]
        if h >= 4:
            kinds += ["maxpool", "avgpool"]
        kind = self.pick(kinds)
        if kind == "conv":
            x = L.Conv2D(c, 3, padding="same", name=self.name("Conv2D"))(x)
        elif kind == "depthwise":
            x = L.DepthwiseConv2D(3, padding="same", name=self.name("DepthwiseConv2D"))(x)
        elif kind == "separable":
            x = L.SeparableConv2D(c, 3, padding="same", name=self.name("SeparableConv2D"))(x)
        elif kind == "transpose":
            x = L.Conv2DTranspose(c, 3, padding="same", name=self.name("Conv2DTranspose"))(x)
        elif kind == "bn":
            x = L.BatchNormalization(name=self.name("BatchNormalization"))(x)
        elif kind == "ln":
            x = L.LayerNormalization(name=self.name("LayerNormalization"))(x)
        elif kind == "gn":
            ch = x.shape[-1]
            groups = 2 if ch % 2 == 0 else 1
            x = L.GroupNormalization(groups=groups, name=self.name("GroupNormalization"))(x)
        elif kind == "unit":
            x = L.UnitNormalization(name=self.name("UnitNormalization"))(x)
        elif kind == "act":
            x = self.activation(x)
        elif kind == "dropout":
            x = L.Dropout(0.1, name=self.name("Dropout"))(x)
        elif kind == "spatial":
            x = L.SpatialDropout2D(0.1, name=self.name("SpatialDropout2D"))(x)
        elif kind == "maxpool":
            x = L.MaxPooling2D(2, name=self.name("MaxPooling2D"))(x)
        elif kind == "avgpool":
            x = L.AveragePooling2D(2, name=self.name("AveragePooling2D"))(x)
        elif kind == "permute":
            if x.shape[1] == x.shape[2]:
                x = L.Permute((2, 1, 3), name=self.name("Permute"))(x)
        elif kind == "branch":
            a = L.Conv2D(c, 3, padding="same", name=self.name("Conv2D"))(x)
            b = L.Conv2D(c, 1, padding="same", name=self.name("Conv2D"))(x)
            b = self.activation(b)
            merge = self.pick(("Add", "Concatenate", "Multiply", "Subtract"))
            x = getattr(L, merge)(name=self.name(merge))([a, b])
        return x

    def image_stem(self, x: Any) -> Any:
        L = self.L
        pre = self.pick(("none", "none", "rescaling", "normalization", "random"))
        if pre == "rescaling":
            x = L.Rescaling(1.0 / 2.0, offset=-0.25, name=self.name("Rescaling"))(x)
        elif pre == "normalization":
            x = L.Normalization(mean=0.5, variance=0.08, name=self.name("Normalization"))(x)
        elif pre == "random":
            kind = self.pick(("RandomFlip", "RandomContrast", "RandomTranslation", "RandomZoom"))
            layer = {
                "RandomFlip": lambda n: L.RandomFlip("horizontal", name=n),
                "RandomContrast": lambda n: L.RandomContrast(0.1, name=n),
                "RandomTranslation": lambda n: L.RandomTranslation(0.1, 0.1, name=n),
                "RandomZoom": lambda n: L.RandomZoom(0.1, name=n),
            }[kind](self.name(kind))
            x = layer(x)
        return L.Conv2D(self.channels(), 3, padding="same", name=self.name("Conv2D"))(x)

    def image_head(self, x: Any) -> Any:
        L = self.L
        kind = self.pick(("gap", "gmp", "flatten", "to_sequence"))
        if kind == "gap":
            return L.GlobalAveragePooling2D(name=self.name("GlobalAveragePooling2D"))(x)
        if kind == "gmp":
            return L.GlobalMaxPooling2D(name=self.name("GlobalMaxPooling2D"))(x)
        if kind == "flatten":
            if x.shape[1] * x.shape[2] * x.shape[3] > 256:
                x = L.MaxPooling2D(2, name=self.name("MaxPooling2D"))(x)
            return L.Flatten(name=self.name("Flatten"))(x)
        h, w, c = x.shape[1:]
        x = L.Reshape((h * w, c), name=self.name("Reshape"))(x)
        return self.sequence_head(self.sequence_block(x))

    # ---- sequences (T, F) --------------------------------------------
    def rnn(self, units: int, return_sequences: bool) -> Any:
        L = self.L
        cls = self.pick(("LSTM", "GRU", "SimpleRNN"))
        layer = getattr(L, cls)(units, return_sequences=return_sequences, name=self.name(cls))
        if self.rng.random() < 0.3:
            layer = L.Bidirectional(layer, name=self.name("Bidirectional"))
        return layer

    def sequence_block(self, x: Any) -> Any:
        L = self.L
        f = x.shape[-1]
        kind = self.pick(("conv1d", "rnn", "mha", "ln", "dense", "einsum", "act", "dropout",
                          "maxpool1d", "branch"))
        if kind == "conv1d":
            x = L.Conv1D(self.channels(), 3, padding="same", name=self.name("Conv1D"))(x)
        elif kind == "rnn":
            x = self.rnn(self.pick((4, 6)), True)(x)
        elif kind == "mha":
            a = L.MultiHeadAttention(num_heads=2, key_dim=4, name=self.name("MultiHeadAttention"))(
                x, x
            )
            x = L.Add(name=self.name("Add"))([x, a])
        elif kind == "ln":
            x = L.LayerNormalization(name=self.name("LayerNormalization"))(x)
        elif kind == "dense":
            x = L.Dense(self.channels(), name=self.name("Dense"))(x)
        elif kind == "einsum":
            x = L.EinsumDense("abc,cd->abd", output_shape=(None, self.channels()),
                              name=self.name("EinsumDense"))(x)
        elif kind == "act":
            x = self.activation(x)
        elif kind == "dropout":
            x = L.Dropout(0.1, name=self.name("Dropout"))(x)
        elif kind == "maxpool1d":
            if x.shape[1] >= 4:
                x = L.MaxPooling1D(2, name=self.name("MaxPooling1D"))(x)
        elif kind == "branch":
            a = L.Dense(f, name=self.name("Dense"))(x)
            merge = self.pick(("Add", "Multiply", "Subtract", "Concatenate"))
            x = getattr(L, merge)(name=self.name(merge))([x, a])
        return x

    def sequence_head(self, x: Any) -> Any:
        L = self.L
        kind = self.pick(("gap", "rnn", "flatten"))
        if kind == "gap":
            return L.GlobalAveragePooling1D(name=self.name("GlobalAveragePooling1D"))(x)
        if kind == "rnn":
            return self.rnn(6, False)(x)
        if None in x.shape[1:] or x.shape[1] * x.shape[2] > 256:
            x = L.GlobalMaxPooling1D(name=self.name("GlobalMaxPooling1D"))(x)
            return x
        return L.Flatten(name=self.name("Flatten"))(x)

    # ---- volumes (D, H, W, C) ----------------------------------------
    def volume_blocks(self, x: Any) -> Any:
        L = self.L
        x = L.Conv3D(4, 3, padding="same", name=self.name("Conv3D"))(x)
        if self.rng.random() < 0.5:
            x = L.BatchNormalization(name=self.name("BatchNormalization"))(x)
        x = self.activation(x)
        if self.rng.random() < 0.5:
            x = L.MaxPooling3D(2, name=self.name("MaxPooling3D"))(x)
        return L.GlobalAveragePooling3D(name=self.name("GlobalAveragePooling3D"))(x)

    # ---- vectors (F,) ------------------------------------------------
    def vector_block(self, x: Any) -> Any:
        L = self.L
        kind = self.pick(("dense", "dense", "einsum", "bn", "ln", "unit", "act", "dropout"))
        if kind == "dense":
            x = L.Dense(self.pick((8, 12, 16)), name=self.name("Dense"))(x)
        elif kind == "einsum":
            x = L.EinsumDense("ab,bc->ac", output_shape=self.pick((8, 12)),
                              name=self.name("EinsumDense"))(x)
        elif kind == "bn":
            x = L.BatchNormalization(name=self.name("BatchNormalization"))(x)
        elif kind == "ln":
            x = L.LayerNormalization(name=self.name("LayerNormalization"))(x)
        elif kind == "unit":
            x = L.UnitNormalization(name=self.name("UnitNormalization"))(x)
        elif kind == "act":
            x = self.activation(x)
        else:
            x = L.Dropout(0.1, name=self.name("Dropout"))(x)
        return x


def _input_kind(rng: random.Random) -> str:
    return rng.choices(
        ("image", "sequence", "tokens", "volume", "vector"), weights=(5, 3, 2, 1, 2)
    )[0]


def _make_input(b: _Builder, kind: str, index: int) -> tuple[Any, np.ndarray, Any]:
    """An Input of `kind`, its data and its stem output."""
    k, rng = b.k, np.random.default_rng(b.rng.randrange(2**31))
    name = f"in{index}_{kind}"
    if kind == "image":
        size = b.pick((8, 10, 12))
        ch = b.pick((1, 3))
        inp = k.Input((size, size, ch), name=name)
        data = rng.uniform(0, 1, (N_SAMPLES, size, size, ch)).astype(np.float32)
        out = b.image_stem(inp)
        for _ in range(b.rng.randint(1, 4)):
            out = b.image_block(out)
        return inp, data, b.image_head(out)
    if kind == "sequence":
        t, f = b.pick((6, 8)), b.pick((3, 4))
        inp = k.Input((t, f), name=name)
        data = rng.normal(0, 1, (N_SAMPLES, t, f)).astype(np.float32)
        out = inp
        for _ in range(b.rng.randint(1, 3)):
            out = b.sequence_block(out)
        return inp, data, b.sequence_head(out)
    if kind == "tokens":
        t = b.pick((6, 8))
        inp = k.Input((t,), dtype="int32", name=name)
        data = rng.integers(0, VOCAB, (N_SAMPLES, t)).astype(np.int32)
        out = b.L.Embedding(VOCAB, 8, name=b.name("Embedding"))(inp)
        for _ in range(b.rng.randint(1, 3)):
            out = b.sequence_block(out)
        return inp, data, b.sequence_head(out)
    if kind == "volume":
        inp = k.Input((4, 6, 6, 1), name=name)
        data = rng.uniform(0, 1, (N_SAMPLES, 4, 6, 6, 1)).astype(np.float32)
        return inp, data, b.volume_blocks(inp)
    f = b.pick((6, 10))
    inp = k.Input((f,), name=name)
    data = rng.normal(0, 1, (N_SAMPLES, f)).astype(np.float32)
    return inp, data, inp


def _nest(b: _Builder, out: Any) -> Any:
    """Passes `out` through a nested Sequential or Functional sub-model (maybe frozen)."""
    k, L = b.k, b.L
    width = out.shape[-1]
    frozen = b.rng.random() < 0.4
    if b.rng.random() < 0.5:
        sub = k.Sequential(
            [k.Input((width,)), L.Dense(12, activation="relu", name=b.name("Dense")),
             L.Dense(8, name=b.name("Dense"))],
            name=b.name("nested_sequential"),
        )
    else:
        i = k.Input((width,))
        h = L.Dense(8, name=b.name("Dense"))(i)
        h = L.Add(name=b.name("Add"))([h, L.Dense(8, name=b.name("Dense"))(i)])
        sub = k.Model(i, b.activation(h), name=b.name("nested_functional"))
    if frozen:
        sub.trainable = False
        b.used.add("frozen")
    return sub(out)


def _functional(seed: int, rng: random.Random) -> Generated:
    import keras

    b = _Builder(rng)
    n_inputs = 2 if rng.random() < 0.2 else 1
    inputs, data, stems = [], [], []
    for i in range(n_inputs):
        inp, arr, stem = _make_input(b, _input_kind(rng), i)
        inputs.append(inp)
        data.append(arr)
        stems.append(stem)
    if n_inputs > 1:
        b.used.add("multi_input")
        out = b.L.Concatenate(name=b.name("Concatenate"))(stems)
    else:
        out = stems[0]
    b.used.add(f"input_{'+'.join(sorted(i.name.split('_', 1)[1] for i in inputs))}")
    for _ in range(rng.randint(0, 2)):
        out = b.vector_block(out)
    if rng.random() < 0.25:
        out = _nest(b, out)
    ScaleShift, GatedDense = custom_layers()
    if rng.random() < 0.15:
        out = ScaleShift(name=b.name("ScaleShift"))(out)
    if rng.random() < 0.1:
        out = GatedDense(8, name=b.name("GatedDense"))(out)
    n_outputs = 2 if rng.random() < 0.2 else 1
    outputs = []
    for j in range(n_outputs):
        softmax = rng.random() < 0.5
        outputs.append(
            keras.layers.Dense(
                CLASSES, activation="softmax" if softmax else None, name=f"head{j}"
            )(out)
        )
    if n_outputs > 1:
        b.used.add("multi_output")
    model = keras.Model(
        inputs if n_inputs > 1 else inputs[0],
        outputs if n_outputs > 1 else outputs[0],
        name=f"gen{seed}",
    )
    y_rng = np.random.default_rng(seed)
    ys = [y_rng.integers(0, CLASSES, N_SAMPLES) for _ in range(n_outputs)]
    losses = [_loss_for(model, f"head{j}") for j in range(n_outputs)]
    return Generated(
        seed, model.name, model,
        data if n_inputs > 1 else data[0],
        ys if n_outputs > 1 else ys[0],
        losses if n_outputs > 1 else losses[0],
        tuple(sorted(b.used)),
    )


def _loss_for(model: Any, head: str) -> Any:
    import keras

    layer = model.get_layer(head)
    logits = getattr(layer.activation, "__name__", "") != "softmax"
    return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)


def _subclassed(seed: int, rng: random.Random) -> Generated:
    """A subclassed `keras.Model` over a chain of layers, built by calling it."""
    import keras

    L = keras.layers
    size = rng.choice((8, 10))
    convs = [L.Conv2D(rng.choice((4, 8)), 3, padding="same", activation=rng.choice(ACTIVATIONS))
             for _ in range(rng.randint(1, 2))]
    pool = rng.choice((L.GlobalAveragePooling2D(), L.Flatten()))
    dense = [L.Dense(rng.choice((8, 12)), activation="relu")] if rng.random() < 0.5 else []

    class GeneratedNet(keras.Model):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.chain = [*convs, pool, *dense]
            self.head = L.Dense(CLASSES)

        def call(self, x: Any, training: bool = False) -> Any:
            for layer in self.chain:
                x = layer(x)
            return self.head(x)

    model = GeneratedNet(name=f"gen{seed}")
    data = np.random.default_rng(seed).uniform(0, 1, (N_SAMPLES, size, size, 1)).astype(np.float32)
    model(data[:1])  # built, as `fit` would build it
    y = np.random.default_rng(seed).integers(0, CLASSES, N_SAMPLES)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return Generated(seed, model.name, model, data, y, loss, ("Conv2D", "subclassed"))


def hub_model(name: str, seed: int = 0) -> Generated:
    """A tiny keras-hub backbone built from its constructor, with a classification head."""
    import keras
    import keras_hub

    rng = np.random.default_rng(seed)
    L = keras.layers
    if name == "hub_vit":
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
            mlp_dim=32, dropout_rate=0.0, attention_dropout=0.0,
        )
        inp = keras.Input((16, 16, 3))
        x = backbone(inp)[:, 0, :]
        data = rng.uniform(0, 1, (N_SAMPLES, 16, 16, 3)).astype(np.float32)
    elif name == "hub_resnet":
        backbone = keras_hub.models.ResNetBackbone(
            # keras-hub requires 64 filters in the stem and first stage: the smallest it builds.
            input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
            stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
            image_shape=(16, 16, 3),
        )
        inp = keras.Input((16, 16, 3))
        x = L.GlobalAveragePooling2D()(backbone(inp))
        data = rng.uniform(0, 1, (N_SAMPLES, 16, 16, 3)).astype(np.float32)
    elif name in ("hub_gpt2", "hub_llama"):
        if name == "hub_gpt2":
            backbone = keras_hub.models.GPT2Backbone(
                vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16,
                intermediate_dim=32, max_sequence_length=8, dropout=0.0,
            )
        else:
            backbone = keras_hub.models.LlamaBackbone(
                vocabulary_size=VOCAB, num_layers=1, num_query_heads=2, num_key_value_heads=1,
                hidden_dim=16, intermediate_dim=32,
            )
        tokens = keras.Input((8,), dtype="int32", name="token_ids")
        mask = keras.Input((8,), dtype="int32", name="padding_mask")
        data = [
            rng.integers(1, VOCAB, (N_SAMPLES, 8)).astype(np.int32),
            np.ones((N_SAMPLES, 8), np.int32),
        ]
        inp = [tokens, mask]
        x = L.GlobalAveragePooling1D()(
            backbone({"token_ids": tokens, "padding_mask": mask})
        )
    else:
        raise ValueError(f"unknown keras-hub model {name!r}; choose from {KERAS_HUB}")
    out = L.Dense(CLASSES, name="head")(x)
    model = keras.Model(inp, out, name=name)
    y = rng.integers(0, CLASSES, N_SAMPLES)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return Generated(seed, name, model, data, y, loss, ("keras_hub", type(backbone).__name__))


def generate(seed: int) -> Generated:
    """Builds the random model of `seed` (always the same one for a seed).

    About 1 in 10 seeds gives a subclassed model and 1 in 10 one built under
    the `mixed_float16` policy; the rest are Functional graphs of one or two
    inputs and one or two outputs.
    """
    import keras

    rng = random.Random(seed)
    keras.utils.set_random_seed(seed)
    roll = rng.random()
    if roll < 0.1:
        return _subclassed(seed, rng)
    mixed = roll > 0.9
    if mixed:
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            gen = _functional(seed, rng)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        gen.features = tuple(sorted((*gen.features, "mixed_float16")))
        return gen
    return _functional(seed, rng)
