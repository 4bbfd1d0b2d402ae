"""`tflight convert-lm`: a Keras causal LM file to a verified prefill/decode `.tflite`."""

from __future__ import annotations

import json

import click

from tflight.cli._common import custom_objects_option

__all__ = ["convert_lm"]

# The library's argument names, as this command's options.
_OPTION = {"max_length": "--max-length", "prefill_lengths": "--prefill", "mode": "--mode",
           "block_size": "--block-size", "cache_shape": "the model", "causal_lm": "MODEL"}


def _load_tokens(path: str | None):
    """Held-out text as byte ids (a text file), or token ids (`.npy`)."""
    import numpy as np

    from tflight.errors import LanguageModelError

    if path is None:
        return None
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False).reshape(-1).astype(np.int64)
        with open(path, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8).astype(np.int64)
    except (OSError, ValueError) as e:
        raise LanguageModelError(f"--eval-text {path!r} cannot be read: {e}",
                                 argument="eval_text", value=path) from e


@click.command("convert-lm")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .tflite file to write (written only after it passed verification).")
@click.option("--max-length", type=int, required=True,
              help="Tokens the KV cache holds: prompt plus generated tokens.")
@click.option("--prefill", "prefill", type=int, multiple=True,
              help="Prompt block length; one prefill_<L> signature each (repeatable) "
                   "[default: min(64, max-length)].")
@click.option("--mode", type=click.Choice(["fp32", "fp16", "int8", "int4"]), default="fp32",
              show_default=True, help="Weights: float, or int8/int4 (litert-quantizer).")
@click.option("--block-size", type=click.Choice(["32", "64", "128"]), default=None,
              help="int4 only: blockwise scales in blocks of this many weights "
                   "[default: one scale per output channel].")
@click.option("--eval-text", type=click.Path(dir_okay=False), default=None,
              help="Held-out text (bytes) or token ids (.npy) for top-1 agreement and perplexity.")
@click.option("--min-top1", type=float, default=None,
              help="Gate on teacher-forced top-1 agreement with Keras [default: 0.99 fp32/fp16, "
                   "0.9 int8, 0.5 int4].")
@click.option("--max-ppl-increase", type=float, default=None,
              help="Gate on the perplexity increase in percent [default: none].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the result (sizes, verification) as JSON.")
@custom_objects_option
def convert_lm(model_path, output, max_length, prefill, mode, block_size, eval_text, min_top1,
               max_ppl_increase, json_path, custom_objects_path):
    """Convert a Keras causal LM (MODEL.keras) to a .tflite with a KV cache.

    The file has prefill_<L> and decode signatures, builtin ops only; it is run
    in LiteRT and compared with the Keras model token by token before it is
    written.
    """
    from converters.files import check_output
    from tflight import _io
    from tflight.errors import LanguageModelError
    from tflight.lm import convert_lm as convert

    check_output(output, [model_path], error=LanguageModelError)
    try:
        import keras_hub  # noqa: F401 - registers keras-hub's classes for loading
    except ImportError:
        pass
    objects = _io.load_custom_objects(custom_objects_path) if custom_objects_path else None
    model = _io.load_model(model_path, custom_objects=objects, error=LanguageModelError)
    tokens = _load_tokens(eval_text)
    try:
        result = convert(model, max_length=max_length, prefill_lengths=prefill or None,
                         mode=mode, block_size=int(block_size) if block_size else None,
                         output=output, eval_tokens=tokens, min_top1_agreement=min_top1,
                         max_ppl_increase_pct=max_ppl_increase)
    except LanguageModelError as e:
        flag = _OPTION.get(e.argument or "")
        if flag and flag.startswith("--"):
            raise LanguageModelError(f"{flag}: {e}", argument=e.argument, value=e.value,
                                     fix=e.fix) from None
        raise
    click.echo(f"wrote {output}")
    click.echo(result.summary())
    if json_path:
        from converters.files import write_atomic

        data = {"output": output, "mode": mode, "block_size": result.block_size,
                "max_length": result.max_length, "prefill_lengths": list(result.prefill_lengths),
                "sizes": result.sizes, "verification": result.verification}
        write_atomic(json_path, json.dumps(data, indent=2).encode(), error=LanguageModelError)
