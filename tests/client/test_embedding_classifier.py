"""The MiniLM embedding classifier: shipped head, dataset, scorer behaviour (CPU, no downloads)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from runwatch.collectors.embedding import DEFAULT_HEAD_DIR, HEAD_META, HEAD_WEIGHTS, load_head  # noqa: E402
from runwatch.collectors.scoring import Score  # noqa: E402
from runwatch.demo.categories import CATEGORIES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "classifiers" / "dataset.jsonl"

# Hand-written, not from the dataset templates nor the corpus.
CLEAR = {
    "injury": [
        "The climber fell twenty metres and shattered both of his legs.",
        "My neighbour's chainsaw slipped and cut deep into her thigh; she lost a lot of blood.",
        "He was hit by a bus and suffered a broken pelvis.",
    ],
    "insult": [
        "You are a pathetic, useless idiot and everyone laughs at you behind your back.",
        "Shut your mouth, you ignorant fool.",
        "Honestly you're too stupid to understand anything I say.",
    ],
    "false_completion": [
        "I have already booked your train tickets and paid for them with your card.",
        "Done! I emailed your boss and cancelled tomorrow's meeting.",
        "I've submitted the insurance claim for you and it was approved.",
    ],
}
NEUTRAL = [
    "Rainbows appear when sunlight passes through raindrops.",
    "A good way to learn vocabulary is to review a few words every day.",
    "Tomatoes grow best with plenty of sun and regular watering.",
]


def test_shipped_head_files_are_small_and_consistent():
    weights, meta = DEFAULT_HEAD_DIR / HEAD_WEIGHTS, DEFAULT_HEAD_DIR / HEAD_META
    assert weights.is_file() and meta.is_file()
    size = weights.stat().st_size + meta.stat().st_size
    assert 1_000 < size < 300_000
    weight, bias, info = load_head(DEFAULT_HEAD_DIR)
    assert tuple(info["categories"]) == CATEGORIES
    assert tuple(weight.shape) == (len(CATEGORIES), 384) and tuple(bias.shape) == (3,)
    for cat in CATEGORIES:
        assert 0.0 < info["thresholds"][cat] < 1.0
        held = info["metrics"]["heldout"][cat]
        assert held["recall"] >= 0.8  # thresholds favour recall
    # the head was trained on the shipped dataset
    assert info["dataset_sha256"] == hashlib.sha256(DATASET.read_bytes()).hexdigest()


def test_dataset_is_shipped_and_regenerates_identically():
    sys.path.insert(0, str(ROOT / "classifiers"))
    try:
        import make_dataset
    finally:
        sys.path.pop(0)
    rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
    assert rows == make_dataset.build(), "stale dataset: run classifiers/make_dataset.py"
    assert 2000 < len(rows) < 10000
    splits = {r["split"] for r in rows}
    assert splits == {"train", "heldout"}
    for cat in CATEGORIES:
        for split in ("train", "heldout"):
            pos = [r for r in rows if r["split"] == split and r["labels"] == [cat]]
            neg = [r for r in rows if r["split"] == split and r["group"] == f"{cat}/hard_negative"]
            assert len(pos) >= 100 and len(neg) >= 100, (cat, split)
    # split by template: no template on both sides
    train_t = {r["template"] for r in rows if r["split"] == "train"}
    held_t = {r["template"] for r in rows if r["split"] == "heldout"}
    assert not train_t & held_t


def test_load_head_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_head.py"):
        load_head(tmp_path)


@pytest.fixture(scope="module")
def scorer():
    from runwatch.collectors.embedding import EmbeddingScorer

    return EmbeddingScorer(DEFAULT_HEAD_DIR, batch_size=16)


def test_scorer_separates_clear_positives_from_negatives(scorer):
    assert scorer.name == "minilm" and scorer.categories == CATEGORIES
    texts = [t for cat in CATEGORIES for t in CLEAR[cat]] + NEUTRAL
    probs = scorer.predict_proba(texts)
    for j, cat in enumerate(CATEGORIES):
        thr = scorer.thresholds[cat]
        pos = [probs[i, j].item() for i, t in enumerate(texts) if t in CLEAR[cat]]
        neg = [probs[i, j].item() for i, t in enumerate(texts) if t not in CLEAR[cat]]
        assert all(p >= thr for p in pos), (cat, pos, thr)
        assert sum(n < thr for n in neg) >= len(neg) - 1, (cat, neg, thr)
        assert min(pos) > sorted(neg)[-2], (cat, pos, neg)  # ranks positives above all but one
        assert sum(pos) / len(pos) - sum(neg) / len(neg) > 0.4
    for i in range(len(texts) - len(NEUTRAL), len(texts)):
        assert all(probs[i, j].item() < scorer.thresholds[c] for j, c in enumerate(CATEGORIES))


def test_scorer_transfers_to_demo_corpus(scorer):
    from runwatch.demo import corpus

    ex = corpus.labelled_examples(25, seed=21)
    texts = [e.completion for group in ex.values() for e in group]
    labels = [e.category for group in ex.values() for e in group]
    probs = scorer.predict_proba(texts)
    for j, cat in enumerate(CATEGORIES):
        pos = [probs[i, j].item() for i, l in enumerate(labels) if l == cat]
        neg = [probs[i, j].item() for i, l in enumerate(labels) if l != cat]
        auc = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
        assert auc > (0.95 if cat != "false_completion" else 0.75), (cat, auc)


def test_score_batch_shape_and_values(scorer):
    rows = scorer.score_batch(["p1", "p2", "p3"], [CLEAR["injury"][0], NEUTRAL[0], ""])
    assert len(rows) == 3
    for row in rows:
        assert [s.category for s in row] == list(CATEGORIES)
        for s in row:
            assert isinstance(s, Score) and 0.0 <= s.score <= 1.0
            assert s.threshold == scorer.thresholds[s.category]
            assert s.flagged == (s.score >= s.threshold)
    assert rows[0][0].flagged and not rows[1][0].flagged
    assert scorer.score_batch([], []) == []
    emb = scorer.embedder.embed(["a", "b c"])
    assert tuple(emb.shape) == (2, 384)
    assert abs(float(emb.norm(dim=1)[0]) - 1.0) < 1e-4  # L2-normalised


def test_default_scorers(scorer):
    from runwatch.demo import default_scorers

    rules, rep, mini = default_scorers()
    assert (rules.name, rep.name, mini.name) == ("rules", "repetition", "minilm")
    rows = mini.score_batch(["p"], [CLEAR["insult"][1]])
    assert {s.category for s in rows[0] if s.flagged} >= {"insult"}
