"""Sampling completions from a transformers causal LM for probe evaluation.

torch and transformers are imported inside :func:`generate_completions`, so importing this
module is cheap.
"""

from __future__ import annotations

from typing import Sequence


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    samples_per_prompt: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    batch_size: int = 64,
) -> list[list[str]]:
    """Sample ``samples_per_prompt`` completions for each prompt.

    Returns one list per prompt (in order) of decoded completions: the prompt tokens are cut off,
    special tokens dropped, surrounding whitespace stripped. ``temperature <= 0`` means greedy
    decoding; ``top_k=None`` means no top-k filtering (plain sampling from the softmax).

    Runs under ``torch.no_grad()`` in eval mode on the model's own device, and puts the model back
    in train mode afterwards if it was in train mode. With ``seed`` set, sampling is reproducible
    and the global RNG state of the caller (e.g. a training loop) is left untouched.
    The tokenizer is used with left padding for the call and its padding side is restored.
    """
    import torch
    from transformers import GenerationConfig

    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompts = list(prompts)
    if not prompts:
        return []

    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id
    if pad_id is None:
        pad_id = eos_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token; set one")

    do_sample = temperature is not None and temperature > 0
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                      pad_token_id=pad_id, eos_token_id=eos_id)
    if do_sample:
        # top_k=0 disables the top-k warper (transformers would otherwise default to 50).
        gen_kwargs.update(temperature=float(temperature), top_k=int(top_k or 0), top_p=1.0)
    gen_config = GenerationConfig(**gen_kwargs)

    try:
        device = next(model.parameters()).device
    except StopIteration:  # a model without parameters: leave inputs on the CPU
        device = torch.device("cpu")
    expanded = [p for p in prompts for _ in range(samples_per_prompt)]
    texts: list[str] = []

    was_training = model.training
    old_side = getattr(tokenizer, "padding_side", "right")
    rng_devices = [device] if device.type == "cuda" else []
    model.eval()
    tokenizer.padding_side = "left"
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(expanded), batch_size):
                chunk = expanded[start : start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True)
                enc = {k: v.to(device) for k, v in enc.items()
                       if k in ("input_ids", "attention_mask")}
                out = model.generate(**enc, generation_config=gen_config)
                new_tokens = out[:, enc["input_ids"].shape[1] :]
                decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                texts.extend(t.strip() for t in decoded)
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)

    k = samples_per_prompt
    return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]
