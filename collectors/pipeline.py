"""A scorer backed by a transformers ``text-classification`` pipeline on a local model directory.

transformers is imported when the scorer is built, not when ``collectors`` is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from runwatch.collectors.scoring import Score, Scorer


class PipelineScorer(Scorer):
    """Score completions with any sequence-classification model saved with ``save_pretrained``.

    - ``model_dir``: local directory (no hub access).
    - ``labels``: model label -> runwatch category; labels left out are ignored (e.g. a
      ``neutral`` class). Default: every label, lower-cased, is its own category.
    - ``threshold``: probability at or above which a category is flagged [0.5]; a dict gives
      one threshold per category.
    - ``batch_size``: pipeline batch size [32] (batch 1 is 10-80x slower on CPU).
    - ``include_prompt``: classify ``prompt + completion`` instead of the completion alone.
    """

    def __init__(self, model_dir: str | Path, *, name: str = "classifier",
                 labels: Mapping[str, str] | None = None, threshold: float | Mapping[str, float] = 0.5,
                 batch_size: int = 32, device=None, include_prompt: bool = False,
                 max_length: int = 256):
        from transformers import pipeline

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a saved transformers model (no config.json)")
        self.name = name
        self.pipe = pipeline("text-classification", model=str(model_dir), tokenizer=str(model_dir),
                             device=device)
        id2label = self.pipe.model.config.id2label
        self.labels = dict(labels) if labels is not None else {l: l.lower() for l in id2label.values()}
        unknown = set(self.labels) - set(id2label.values())
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not in the model's labels "
                             f"{sorted(id2label.values())}")
        self.categories = tuple(dict.fromkeys(self.labels.values()))
        self.thresholds = ({c: float(threshold[c]) for c in self.categories}
                           if isinstance(threshold, Mapping) else dict.fromkeys(self.categories, float(threshold)))
        self.batch_size = batch_size
        self.include_prompt = include_prompt
        self.max_length = max_length

    def score_batch(self, prompts, completions):
        texts = ([f"{p}\n{c}" for p, c in zip(prompts, completions)] if self.include_prompt
                 else list(completions))
        if not texts:
            return []
        results = self.pipe(texts, batch_size=self.batch_size, top_k=None, truncation=True,
                            max_length=self.max_length)
        out = []
        for per_label in results:
            probs = {r["label"]: float(r["score"]) for r in per_label}
            row = []
            for label, category in self.labels.items():
                p = probs.get(label, 0.0)
                t = self.thresholds[category]
                row.append(Score(category, p, p >= t, t))
            out.append(row)
        return out
