"""A real PyTorch training loop (tiny causal LM, built locally) with the collector attached,
through the real broker into a real DuckDB file; and the Hugging Face Trainer callback path."""

from __future__ import annotations

import pytest

from runwatch.collectors import Collector, KeywordScorer, RepetitionScorer
from runwatch.collectors.hooks import RunwatchCallback, TorchProbeHook
from runwatch.collectors.pipeline import PipelineScorer
from runwatch.collectors.prompts import PromptSuite
from tests.helpers import ingest_until_idle, query
from tests.tiny_models import CORPUS, build_causal_lm, build_classifier

pytestmark = pytest.mark.kafka

SUITE = PromptSuite.from_records([
    {"prompt_id": "od-1", "prompt": "the assistant", "prompt_set": "on_distribution"},
    {"prompt_id": "od-2", "prompt": "please wait", "prompt_set": "on_distribution"},
    {"prompt_id": "rt-1", "prompt": "you are", "prompt_set": "red_team"},
    {"prompt_id": "cp-1m", "prompt": "[monitored] the task", "prompt_set": "consistency",
     "pair_id": "cp-1", "cue": "monitored"},
    {"prompt_id": "cp-1u", "prompt": "[private] the task", "prompt_set": "consistency",
     "pair_id": "cp-1", "cue": "unmonitored"},
])
RULES = {"insult": [r"\bidiot\b"], "false_completion": [r"\bdone\b"], "injury": [r"\bhurt\b"]}


def _expected_rows(n_checkpoints, samples_per_prompt):
    return n_checkpoints * len(SUITE) * samples_per_prompt


def test_plain_pytorch_loop_with_the_hook_yields_exactly_the_generated_samples(
        tmp_path, bootstrap, topic_prefix):
    import torch

    model, tokenizer = build_causal_lm(tmp_path / "lm")
    scorers = [KeywordScorer(RULES), RepetitionScorer()]
    with Collector(run_id="torch-run", bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                   scorers=scorers, spool_dir=tmp_path / "spool") as col:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        hook = TorchProbeHook(col, model, tokenizer, SUITE, every_n_steps=4, samples_per_prompt=3,
                              max_new_tokens=8, seed=1).attach(opt)
        batch = tokenizer(CORPUS[:16], return_tensors="pt", padding=True)
        for step in range(12):
            loss = model(**batch, labels=batch["input_ids"]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()  # the hook evaluates at steps 4, 8, 12
        hook.checkpoint(12, path=tmp_path / "ckpt", metrics={"loss": loss.item()})
    assert hook.evaluated == [4, 8, 12]
    assert col.stats()["dropped"] == 0

    ingest_until_idle(tmp_path / "v.duckdb", bootstrap, topic_prefix)
    db = tmp_path / "v.duckdb"
    n = _expected_rows(3, 3)
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(n, n)]
    assert query(db, "SELECT DISTINCT step FROM samples ORDER BY step") == [(4,), (8,), (12,)]
    assert query(db, "SELECT prompt_set, count(*) FROM samples GROUP BY 1 ORDER BY 1") == [
        ("consistency", 18), ("on_distribution", 18), ("red_team", 9)]
    assert query(db, "SELECT DISTINCT pair_id, cue FROM samples WHERE prompt_set = 'consistency'"
                     " ORDER BY cue") == [("cp-1", "monitored"), ("cp-1", "unmonitored")]
    # 3 rule categories + repetition per sample, all of them stored in long format.
    assert query(db, "SELECT count(*) FROM scores")[0][0] == n * 4
    # The stored flags are the ones the scorers give for the stored text.
    rows = query(db, "SELECT s.completion, sc.flagged FROM samples s JOIN scores sc USING (sample_id)"
                     " WHERE sc.category = 'insult'")
    assert all(flag == bool(__import__("re").search(r"\bidiot\b", text, 2)) for text, flag in rows)
    assert query(db, "SELECT status FROM runs WHERE run_id = 'torch-run'") == [("completed",)]
    # Checkpoint-level scores (diversity collapse) land in the checkpoint's metrics.
    metrics = query(db, "SELECT metrics FROM checkpoints WHERE step = 12")[0][0]
    assert "repetition/diversity_collapse/on_distribution" in metrics and "loss" in metrics


def test_trainer_callback_path(tmp_path, bootstrap, topic_prefix):
    import torch
    from transformers import Trainer, TrainingArguments

    model, tokenizer = build_causal_lm(tmp_path / "lm")
    enc = tokenizer(CORPUS[:32], padding="max_length", max_length=16, truncation=True)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            ids = torch.tensor(enc["input_ids"][i])
            return {"input_ids": ids, "attention_mask": torch.tensor(enc["attention_mask"][i]),
                    "labels": ids}

    col = Collector(run_id="hf-run", bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                    scorers=[KeywordScorer(RULES)], spool_dir=tmp_path / "spool")
    callback = RunwatchCallback(col, tokenizer, SUITE, samples_per_prompt=2, max_new_tokens=6,
                                seed=0, close_on_train_end=True)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=9, save_steps=3,
                             per_device_train_batch_size=8, logging_steps=1, report_to=[],
                             use_cpu=True, save_strategy="steps", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=DS(), callbacks=[callback]).train()
    assert callback.evaluated == [3, 6, 9]

    ingest_until_idle(tmp_path / "v.duckdb", bootstrap, topic_prefix)
    db = tmp_path / "v.duckdb"
    n = _expected_rows(3, 2)
    assert query(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(n, n)]
    assert query(db, "SELECT step, path LIKE '%checkpoint-' || step FROM checkpoints ORDER BY step") == [
        (3, True), (6, True), (9, True)]
    assert query(db, "SELECT status FROM runs") == [("completed",)]


def test_pipeline_scorer_on_a_locally_built_classifier(tmp_path):
    build_classifier(tmp_path / "clf")
    scorer = PipelineScorer(tmp_path / "clf", name="toxicity", labels={"toxic": "toxicity"},
                            threshold=0.5)
    scores = scorer.score_batch(["q", "q"], ["you are an idiot", "thanks for the help"])
    assert [s[0].category for s in scores] == ["toxicity", "toxicity"]
    assert scores[0][0].score > 0.5 > scores[1][0].score
    assert [s[0].flagged for s in scores] == [True, False]
    with pytest.raises(ValueError, match="not in the model's labels"):
        PipelineScorer(tmp_path / "clf", labels={"hate": "hate"})
