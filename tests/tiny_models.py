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


JUDGE_PIECES = ("<|assistant|>", ' {"verdict":', ' "bad", "score":', ' 0.875}')


def build_judge_lm(out_dir: Path) -> Path:
    """A GPT-2 built by hand (no training) that answers every chat with exactly
    ``{"verdict": "bad", "score": 0.875}``, in three tokens: its embeddings are one-hot, its
    attention and MLP write nothing, and its head maps each token to the next piece of the answer
    (anything else to end-of-text). Deterministic under greedy decoding, so a test of a judge can
    check the wire and the parsing; ``max_tokens=1`` cuts the answer to ``{"verdict":`` (no
    verdict: a parse failure). With a chat template, for ``transformers serve``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = build_tokenizer(out_dir)
    tok.add_tokens(list(JUDGE_PIECES))
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    ids = [tok.convert_tokens_to_ids(p) for p in JUDGE_PIECES]
    vocab = len(tok)
    config = GPT2Config(vocab_size=vocab, n_positions=4096, n_embd=vocab, n_layer=1, n_head=1,
                        tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(config)
    following = dict(zip(ids, ids[1:]))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(torch.eye(vocab))
        for norm in (model.transformer.ln_f, *(n for b in model.transformer.h for n in (b.ln_1, b.ln_2))):
            norm.weight.fill_(1.0)
        for i in range(vocab):
            model.lm_head.weight[following.get(i, tok.eos_token_id), i] = 10.0
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
