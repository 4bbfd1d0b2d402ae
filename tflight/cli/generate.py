"""`tflight generate`: run a prefill/decode `.tflite` LM in LiteRT, tokens printed as they come."""

from __future__ import annotations

import sys

import click

__all__ = ["generate"]


@click.command()
@click.argument("model_path", metavar="LM.tflite", type=click.Path(dir_okay=False))
@click.option("--prompt", required=True, help="The prompt (text, byte tokenizer) or, with "
              "--token-ids, comma-separated token ids.")
@click.option("--token-ids", is_flag=True, help="--prompt is token ids; print ids, not text.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--sampler", type=click.Choice(["greedy", "top_k"]), default="greedy",
              show_default=True)
@click.option("--top-k", type=int, default=40, show_default=True, help="Candidates for top_k.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed of top_k sampling.")
@click.option("--threads", type=int, default=2, show_default=True)
def generate(model_path, prompt, token_ids, max_new_tokens, sampler, top_k, temperature, seed,
             threads):
    """Generate text with LM.tflite (written by convert-lm) in LiteRT.

    Prints each token as it comes, then the prefill and decode speeds
    (measured on this host).
    """
    from converters.verify import verify_tflite
    from tflight.errors import LanguageModelError
    from tflight.lm import ByteTokenizer, LiteRTLM, Sampler

    verify_tflite(model_path)  # a broken file fails here, in a child, not in this process
    lm = LiteRTLM(model_path, num_threads=threads)
    tokenizer = None if token_ids else ByteTokenizer()
    if tokenizer is None:
        try:
            ids = [int(t) for t in prompt.replace(" ", "").split(",") if t]
        except ValueError:
            raise LanguageModelError(f"--prompt {prompt!r} is not comma-separated token ids",
                                     argument="prompt", value=prompt) from None
    else:
        if lm.vocabulary_size < 256:
            raise LanguageModelError(
                f"the model's vocabulary has {lm.vocabulary_size} tokens, fewer than the byte "
                "tokenizer's 256; pass --token-ids with ids of the model's own tokenizer",
                argument="prompt", value=lm.vocabulary_size)
        ids = tokenizer.encode(prompt)
    pending: list[int] = []

    def show(token: int) -> None:
        if tokenizer is None:
            click.echo(f"{token} ", nl=False)
            return
        pending.append(token)
        text = bytes(t for t in pending if t < 256).decode("utf-8", errors="ignore")
        if text or len(pending) >= 4:  # a multi-byte character waits for its last byte
            click.echo(text, nl=False)
            pending.clear()
        sys.stdout.flush()

    try:
        result = lm.generate(ids, max_new_tokens,
                             sampler=Sampler(sampler, k=top_k, temperature=temperature, seed=seed),
                             on_token=show)
    except LanguageModelError as e:
        flag = {"prompt": "--prompt", "max_new_tokens": "--max-new-tokens",
                "top_k": "--top-k", "temperature": "--temperature"}.get(e.argument or "")
        raise LanguageModelError(f"{flag}: {e}" if flag else str(e), argument=e.argument,
                                 value=e.value, fix=e.fix) from None
    click.echo("")
    click.echo(f"prefill: {len(ids)} tokens in {1000 * result.prefill_seconds:.1f} ms "
               f"({result.prefill_tokens_per_second:,.0f} tokens/s); decode: "
               f"{len(result.tokens) - 1} tokens at {result.decode_tokens_per_second:,.1f} "
               "tokens/s (measured, this host)", err=True)
