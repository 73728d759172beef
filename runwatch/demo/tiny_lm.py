"""A tiny GPT-2 trained from scratch for the demo: local byte-level BPE tokenizer + small model.

Everything is built locally (no model hub): :func:`build_tokenizer` trains a byte-level BPE on
the given texts and saves it as a transformers tokenizer; :func:`build_model` makes a small
randomly initialised ``GPT2LMHeadModel`` sized for that tokenizer. :func:`save` and :func:`load`
go through ``save_pretrained`` / ``from_pretrained`` so a checkpoint directory is an ordinary
transformers model directory.

torch, tokenizers and transformers are imported inside the functions.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"


@dataclass(frozen=True)
class TinyLMConfig:
    vocab_size: int = 768
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


#: Used by the unit tests: trains in seconds.
TEST_CONFIG = TinyLMConfig(vocab_size=512, n_layer=1, n_embd=64, n_head=2, n_positions=96)


@contextmanager
def quiet_transformers():
    """Hide transformers' per-call progress bars (weight loading, shard writing)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_tokenizer(texts: Sequence[str], out_dir: str | Path, *, vocab_size: int = 768):
    """Train a byte-level BPE tokenizer on ``texts``, save it to ``out_dir`` and load it back.

    The tokenizer prepends ``<|bos|>`` to every encoded text, pads on the left (what batched
    generation needs) and has explicit pad/bos/eos tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("build_tokenizer needs at least one text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left",
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(out_dir)
    return load_tokenizer(out_dir)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    return tok


def build_model(tokenizer, config: TinyLMConfig | None = None, *, seed: int = 0):
    """A randomly initialised small GPT-2 whose vocabulary matches ``tokenizer``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = config or TinyLMConfig()
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=4 * config.n_embd,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg)
    model.loss_type = "ForCausalLM"  # silences transformers' "loss_type=None" warning
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.bos_token_id = tokenizer.bos_token_id
    return model


def save(model, tokenizer, path: str | Path) -> Path:
    """``save_pretrained`` model and tokenizer into one directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def load(path: str | Path, *, device=None):
    """Load a directory written by :func:`save`: ``(model, tokenizer)``, model in eval mode."""
    from transformers import GPT2LMHeadModel

    tokenizer = load_tokenizer(path)
    with quiet_transformers():
        model = GPT2LMHeadModel.from_pretrained(str(path))
    model.loss_type = "ForCausalLM"
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


def encode_for_training(tokenizer, texts: Sequence[str], *, max_length: int, device=None):
    """``(input_ids, attention_mask, labels)`` for causal-LM training.

    Each text becomes ``<|bos|> text <|eos|>`` (cut to ``max_length``), right-padded; labels are
    the input ids with padding set to -100.
    """
    import torch

    enc = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs = [(ids + [eos])[:max_length] for ids in enc]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    if device is not None:
        input_ids, mask, labels = input_ids.to(device), mask.to(device), labels.to(device)
    return input_ids, mask, labels


def pick_device(device=None):
    """``device`` if given, else CUDA when available, else CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def limit_cpu_threads(dev, num_threads: int | None = None) -> int:
    """On CPU, let torch use ``num_threads`` threads (default 1: the collector and the monitor
    share the machine); returns the previous setting, to restore with
    ``torch.set_num_threads``."""
    import torch

    old = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(num_threads or 1)
    return old


def fresh_model(workdir: Path, tokenizer_texts, model_config, *, seed: int, device):
    """A tokenizer trained on ``tokenizer_texts`` and a new model, saved under ``workdir`` and
    loaded back (a real save/load round trip), in training mode: ``(model, tokenizer)``."""
    tokenizer = build_tokenizer(tokenizer_texts, workdir / "tokenizer",
                                vocab_size=model_config.vocab_size)
    init_dir = save(build_model(tokenizer, model_config, seed=seed), tokenizer, workdir / "init")
    model, tokenizer = load(init_dir, device=device)
    model.train()
    return model, tokenizer


def train_step(model, optimizer, tokenizer, texts: Sequence[str], *, max_length: int,
               device=None, lr: float | None = None, clip: float = 1.0) -> float:
    """One causal-LM update on ``texts``; returns the loss."""
    import torch

    ids, mask, labels = encode_for_training(tokenizer, texts, max_length=max_length,
                                            device=device)
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(loss.item())
