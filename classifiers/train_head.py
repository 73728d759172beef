"""Train the MiniLM classifier head on classifiers/dataset.jsonl and save it.

    HF_HUB_OFFLINE=1 .venv/bin/python classifiers/train_head.py

1. Embeds every text with all-MiniLM-L6-v2 (mean pooling, L2-normalised; CPU, ~1 minute).
2. Fits one L2-regularised logistic regression per category (a single ``Linear(384, 3)``
   trained full-batch with L-BFGS) on the ``train`` split.
3. Chooses each category's threshold *favouring recall*: on out-of-fold probabilities from a
   4-fold cross-validation over the train templates, the threshold maximising F-beta with
   ``--beta`` 2 (recall counts four times as much as precision), lowered if needed so that
   out-of-fold recall is at least ``--min-recall`` (default 0.9). The held-out split is never
   used for this.
4. Refits on the whole train split, prints held-out precision / recall per category (held-out
   templates are phrasings the head never saw) and, as a transfer check, precision / recall on
   completions of the demo training corpus (:mod:`runwatch.demo.corpus`), which the head never saw
   either.
5. Saves ``head.safetensors`` + ``head.json`` (categories, thresholds, metrics) under
   ``classifiers/minilm_head/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DATASET = HERE / "dataset.jsonl"
DEFAULT_OUT = HERE / "minilm_head"
CATEGORIES = ("injury", "insult", "false_completion")


def load_rows(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{path}:{lineno}: invalid JSON ({exc.msg})")
    return rows


def fit_logreg(x, y, *, l2: float, pos_weight, iters: int = 200):
    """Full-batch L-BFGS fit of ``sigmoid(x @ W.T + b)`` with an L2 penalty on W."""
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], y.shape[1])
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(lin(x), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin.weight.detach().clone(), lin.bias.detach().clone()


def predict(x, weight, bias):
    import torch

    return torch.sigmoid(x @ weight.T + bias)


def recall_threshold(probs, labels, *, beta: float, min_recall: float) -> float:
    """Threshold maximising F-beta on (probs, labels), capped so recall >= min_recall."""
    pairs = sorted(((float(p), bool(l)) for p, l in zip(probs, labels)), reverse=True)
    n_pos = sum(l for _, l in pairs)
    if n_pos == 0:
        return 0.5
    best_t, best_f = 0.5, -1.0
    floor_t = None  # highest threshold meeting the recall floor
    tp = fp = 0
    b2 = beta * beta
    for i, (p, l) in enumerate(pairs):
        tp += l
        fp += not l
        if i + 1 < len(pairs) and pairs[i + 1][0] == p:
            continue  # ties: evaluate once all equal scores are in
        recall, precision = tp / n_pos, tp / (tp + fp)
        f = (1 + b2) * precision * recall / (b2 * precision + recall) if tp else 0.0
        if f > best_f:
            best_t, best_f = p, f
        if floor_t is None and recall >= min_recall:
            floor_t = p
    t = best_t if floor_t is None else min(best_t, floor_t)
    return float(min(t, 0.99))


def prf(probs, labels, threshold: float) -> dict:
    tp = sum(1 for p, l in zip(probs, labels) if p >= threshold and l)
    fp = sum(1 for p, l in zip(probs, labels) if p >= threshold and not l)
    fn = sum(1 for p, l in zip(probs, labels) if p < threshold and l)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "tp": tp, "fp": fp, "fn": fn, "n_pos": tp + fn, "n": len(labels)}


def embed_cached(embedder, texts: list[str], cache_dir: Path | None):
    import torch

    if cache_dir is None:
        return embedder.embed(texts)
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"emb-{key}.pt"
    if path.is_file():
        return torch.load(path)
    emb = embedder.embed(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(emb, path)
    return emb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train the MiniLM classifier head.")
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--beta", type=float, default=2.0, help="F-beta used to pick thresholds")
    ap.add_argument("--min-recall", type=float, default=0.9,
                    help="out-of-fold recall each threshold must keep")
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "runwatch-classifiers",
                    help="where to cache embeddings ('' to disable)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args(argv)

    import torch

    from runwatch.collectors.embedding import MiniLMEmbedder, save_head

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = load_rows(args.dataset)
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == "heldout"]
    if not train or not held:
        raise SystemExit(f"{args.dataset}: needs both train and heldout rows")
    cats = list(CATEGORIES)

    embedder = MiniLMEmbedder()
    cache = args.cache if str(args.cache) else None
    x_train = embed_cached(embedder, [r["text"] for r in train], cache)
    x_held = embed_cached(embedder, [r["text"] for r in held], cache)
    y_train = torch.tensor([[float(c in r["labels"]) for c in cats] for r in train])
    y_held = torch.tensor([[float(c in r["labels"]) for c in cats] for r in held])
    n_pos = y_train.sum(0)
    pos_weight = (len(train) - n_pos) / n_pos.clamp(min=1)
    t_embed = time.perf_counter() - t0

    # Out-of-fold probabilities, folds by template so a template's fills stay together.
    templates = sorted({r["template"] for r in train})
    fold_of = {t: i % args.folds for i, t in enumerate(templates)}
    folds = torch.tensor([fold_of[r["template"]] for r in train])
    oof = torch.zeros_like(y_train)
    for k in range(args.folds):
        tr, va = folds != k, folds == k
        w, b = fit_logreg(x_train[tr], y_train[tr], l2=args.l2, pos_weight=pos_weight)
        oof[va] = predict(x_train[va], w, b)
    thresholds = {c: recall_threshold(oof[:, j].tolist(), y_train[:, j].tolist(),
                                      beta=args.beta, min_recall=args.min_recall)
                  for j, c in enumerate(cats)}

    weight, bias = fit_logreg(x_train, y_train, l2=args.l2, pos_weight=pos_weight)
    p_held = predict(x_held, weight, bias)
    heldout = {c: prf(p_held[:, j].tolist(), y_held[:, j].tolist(), thresholds[c])
               for j, c in enumerate(cats)}
    cv = {c: prf(oof[:, j].tolist(), y_train[:, j].tolist(), thresholds[c])
          for j, c in enumerate(cats)}

    # Transfer check on the demo corpus' own completions (never trained on).
    from runwatch.demo import corpus

    ex = corpus.labelled_examples(150, seed=99)
    corpus_texts = [e.completion for group in ex.values() for e in group]
    corpus_labels = [e.category for group in ex.values() for e in group]
    p_corpus = predict(embedder.embed(corpus_texts), weight, bias)
    transfer = {c: prf(p_corpus[:, j].tolist(), [l == c for l in corpus_labels], thresholds[c])
                for j, c in enumerate(cats)}

    meta = {
        "trained_with": "classifiers/train_head.py",
        "dataset": str(args.dataset.relative_to(ROOT)) if args.dataset.is_relative_to(ROOT)
        else str(args.dataset),
        "dataset_sha256": hashlib.sha256(args.dataset.read_bytes()).hexdigest(),
        "n_train": len(train), "n_heldout": len(held),
        "threshold_rule": f"max F{args.beta:g} on out-of-fold probabilities ({args.folds}-fold "
                          f"CV over train templates), recall floor {args.min_recall}",
        "l2": args.l2,
        "metrics": {"heldout": heldout, "cross_validation": cv, "demo_corpus_transfer": transfer},
    }
    save_head(args.out, weight, bias, cats, thresholds, meta)
    total = time.perf_counter() - t0

    print(f"embedded {len(rows)} texts in {t_embed:.1f}s; total {total:.1f}s")
    print(f"{'category':18s} {'threshold':>9s} | {'held-out P':>10s} {'R':>6s} {'F1':>6s} "
          f"| {'CV P':>6s} {'R':>6s} | {'corpus P':>8s} {'R':>6s}")
    for c in cats:
        h, v, t = heldout[c], cv[c], transfer[c]
        print(f"{c:18s} {thresholds[c]:9.3f} | {h['precision']:10.3f} {h['recall']:6.3f} "
              f"{h['f1']:6.3f} | {v['precision']:6.3f} {v['recall']:6.3f} "
              f"| {t['precision']:8.3f} {t['recall']:6.3f}")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"saved head to {args.out} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
