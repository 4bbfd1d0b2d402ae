"""`tflight compress`: prune / QAT / cluster (or a combination), fine-tune, convert."""

from __future__ import annotations

import enum

import click

__all__ = ["compress", "Recipe"]


class Recipe(enum.StrEnum):
    """Techniques and combinations; the values are the CLI words."""

    PRUNE = "prune"
    QAT = "qat"
    CLUSTER = "cluster"
    PQAT = "pqat"
    CQAT = "cqat"
    PCQAT = "pcqat"


def _ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax"


@click.command("compress")
@click.argument("model_path", metavar="MODEL")
@click.option(
    "--data",
    "data_path",
    required=True,
    help="Training data: an .npz with `x` (inputs) and `y` (integer labels).",
)
@click.option(
    "--technique",
    type=click.Choice([r.value for r in Recipe]),
    default=Recipe.PQAT.value,
    show_default=True,
    help="prune, qat, cluster, or a combination (pqat, cqat, pcqat).",
)
@click.option("--sparsity", type=float, default=0.5, show_default=True, help="Pruning target.")
@click.option("--clusters", type=int, default=16, show_default=True, help="Clusters per kernel.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Epochs per stage.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option(
    "--mode",
    type=click.Choice(["fp32", "fp16", "dynamic", "int8"]),
    default=None,
    help="Conversion mode [default: int8 with QAT, else fp32].",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0.0, 1.0),
    default=0.99,
    show_default=True,
    help="Fail if a QAT .tflite agrees with the Keras model on fewer top-1 predictions.",
)
@click.option(
    "-o",
    "--output",
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the .tflite file.",
)
def compress(
    model_path: str,
    data_path: str,
    technique: str,
    sparsity: float,
    clusters: int,
    epochs: int,
    batch_size: int,
    lr: float,
    mode: str | None,
    min_agreement: float,
    out_path: str,
) -> None:
    """Compress MODEL with a technique, fine-tune on --data, and write a .tflite."""
    import converters
    import tflight
    from tflight._keras import tf_keras

    recipe = Recipe(technique)
    stages = {
        Recipe.PRUNE: ["prune"],
        Recipe.QAT: ["qat"],
        Recipe.CLUSTER: ["cluster"],
        Recipe.PQAT: ["prune", "qat"],
        Recipe.CQAT: ["cluster", "qat"],
        Recipe.PCQAT: ["prune", "cluster", "qat"],
    }[recipe]
    import numpy as np

    from tflight import _io
    from tflight.errors import CompressionError

    x, y = _io.load_xy(data_path, labels=True, error=CompressionError)
    if y.ndim == 2:  # one-hot
        y = np.argmax(y, axis=-1)
    model = _io.load_model(model_path, error=CompressionError)
    _io.check_input_shape(model, x, data_path, error=CompressionError)
    techniques = []
    for stage in stages:
        if stage == "prune":
            techniques.append(tflight.Prune(sparsity=sparsity))
        elif stage == "cluster":
            techniques.append(tflight.Cluster(n_clusters=clusters))
        else:
            techniques.append(tflight.QAT())
    k = tf_keras()
    loss = k.losses.SparseCategoricalCrossentropy(from_logits=not _ends_in_softmax(model))
    out = tflight.Pipeline(techniques).fit(
        model,
        x,
        y,
        compile={"optimizer": k.optimizers.Adam(lr), "loss": loss, "metrics": ["accuracy"]},
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
    )
    out.summary(print_fn=click.echo)
    qat = "qat" in stages
    mode = mode or ("int8" if qat else "fp32")
    result = converters.convert(out.model, mode, representative_data=x[:200])
    if "prune" in stages:
        click.echo(f"sparsity: {tflight.sparsity_report(out.model).overall:.1%}")
    if qat:
        tflight.check_agreement(
            out.model, result, x[:1000], y=y[:1000], min_agreement=min_agreement
        ).summary(print_fn=click.echo)
    result.save(out_path)
    click.echo(f"wrote {out_path}: {mode}, {result.size:,} bytes, gzip {result.gzip_size:,} bytes")
