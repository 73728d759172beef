"""Tiny transformers models built locally for tests (no downloads): a byte-level BPE tokenizer,
a 1-layer GPT-2 causal LM and a 1-layer sequence classifier, saved and loaded for real."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the assistant finished the report and sent it", "i cannot do that but here is a summary",
    "you are an idiot and your code is bad", "the task is done i ran all the tests",
    "he fell and hurt his arm badly", "thanks for asking here is the answer",
    "please wait while i check the results", "the model was trained on public data",
] * 8


def build_tokenizer(out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|pad|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|eos|>",
                                   bos_token="<|eos|>")
    fast.padding_side = "left"
    fast.save_pretrained(out_dir)
    return PreTrainedTokenizerFast.from_pretrained(out_dir)


def build_causal_lm(out_dir: Path):
    """Saved to ``out_dir`` and loaded back; returns (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer(out_dir)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(out_dir)
    return AutoModelForCausalLM.from_pretrained(out_dir), tokenizer


def build_classifier(out_dir: Path, labels=("safe", "toxic")):
    """A 1-layer BERT sequence classifier, briefly trained so 'idiot' reads as toxic."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    tokenizer = build_tokenizer(out_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={l: i for i, l in enumerate(labels)}, pad_token_id=tokenizer.pad_token_id)
    model = BertForSequenceClassification(config)
    texts = ["you are an idiot", "what an idiot you are", "idiot", "thanks for the help",
             "here is the answer", "the report is ready"]
    y = torch.tensor([1, 1, 1, 0, 0, 0])
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(60):
        loss = model(**batch, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out_dir)
    return AutoModelForSequenceClassification.from_pretrained(out_dir)
