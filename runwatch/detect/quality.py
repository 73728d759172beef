"""How good are the scorers? Recall and precision per scorer and category, from reviewers' labels.

Pure functions over counts; the dashboard's scorer-quality page feeds them from
``queries/quality_confusion.sql`` (one row per scorer, category, flag and label with a count).

Only samples whose *current* label is ``bad`` or ``fine`` count (``unsure`` ones and unlabelled
ones are left out). For one scorer and category:

* recall = flagged among the labelled-bad samples = tp / (tp + fn)
* precision = bad among the labelled samples the scorer flagged = tp / (tp + fp)

each with its 95% Wilson interval (:func:`runwatch.detect.detector.wilson_interval`). Labels are
not a random sample of the scorer's output (reviewers label what alerts and disagreements show
them, which over-represents flagged samples), so read these as estimates over the labelled set.
With fewer than ``min_labels`` samples behind an estimate the row carries a note saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import pandas as pd

from runwatch.detect.detector import wilson_interval

MIN_LABELS = 10  # fewer samples than this behind a recall or precision: the row says so
COUNT_COLUMNS = ("tp", "fp", "fn", "tn")


@dataclass(frozen=True)
class Estimate:
    """One scorer x category: confusion counts over the labelled samples and the two rates.

    Rates are None where nothing backs them (no bad labels for recall, nothing flagged among
    the labelled samples for precision); their intervals are then (0, 1)."""

    scorer: str
    category: str
    tp: int
    fp: int
    fn: int
    tn: int
    n_bad: int
    n_fine: int
    n_labelled: int
    n_flagged: int
    recall: float | None
    recall_low: float
    recall_high: float
    precision: float | None
    precision_low: float
    precision_high: float
    note: str


def confusion(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Rows with ``scorer``, ``category``, ``flagged`` (bool), ``label`` ('bad' | 'fine' | other)
    and ``n`` (count; 1 when absent) -> one row per (scorer, category) with tp, fp, fn, tn.

    Labels other than bad and fine (``unsure``) are ignored."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        label = row["label"]
        if label not in ("bad", "fine"):
            continue
        key = (str(row["scorer"]), str(row["category"]))
        cell = counts.setdefault(key, dict.fromkeys(COUNT_COLUMNS, 0))
        flagged = bool(row["flagged"])
        name = ("tp" if flagged else "fn") if label == "bad" else ("fp" if flagged else "tn")
        cell[name] += int(row.get("n", 1))
    ordered = sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][0]))  # category, scorer
    records = [{"scorer": s, "category": c, **cell} for (s, c), cell in ordered]
    return pd.DataFrame(records, columns=["scorer", "category", *COUNT_COLUMNS])


def estimate(scorer: str, category: str, tp: int, fp: int, fn: int, tn: int, *,
             min_labels: int = MIN_LABELS) -> Estimate:
    """Recall and precision with Wilson 95% intervals for one scorer and category."""
    tp, fp, fn, tn = (int(v) for v in (tp, fp, fn, tn))
    if min(tp, fp, fn, tn) < 0:
        raise ValueError(f"counts must be non-negative, got tp={tp} fp={fp} fn={fn} tn={tn}")
    n_bad, n_fine, n_flagged = tp + fn, fp + tn, tp + fp
    (r_lo, p_lo), (r_hi, p_hi) = wilson_interval([tp, tp], [n_bad, n_flagged])
    notes = []
    if n_bad < min_labels:
        notes.append(f"recall rests on {n_bad} bad label{'s' * (n_bad != 1)}")
    if n_flagged < min_labels:
        notes.append(f"precision on {n_flagged} flagged label{'s' * (n_flagged != 1)}")
    note = ("too few labels: " + ", ".join(notes) + f" (want {min_labels}+ each)") if notes else ""
    return Estimate(
        scorer=scorer, category=category, tp=tp, fp=fp, fn=fn, tn=tn, n_bad=n_bad,
        n_fine=n_fine, n_labelled=n_bad + n_fine, n_flagged=n_flagged,
        recall=tp / n_bad if n_bad else None, recall_low=float(r_lo), recall_high=float(r_hi),
        precision=tp / n_flagged if n_flagged else None, precision_low=float(p_lo),
        precision_high=float(p_hi), note=note,
    )


def estimates(conf: pd.DataFrame, *, min_labels: int = MIN_LABELS) -> pd.DataFrame:
    """:func:`confusion`'s frame -> one row per scorer x category with every :class:`Estimate`
    field (rates NaN where nothing backs them), ordered by category then scorer."""
    columns = list(Estimate.__dataclass_fields__)
    rows = [asdict(estimate(r["scorer"], r["category"], r["tp"], r["fp"], r["fn"], r["tn"],
                            min_labels=min_labels))
            for r in conf.to_dict("records")]
    out = pd.DataFrame(rows, columns=columns)
    for col in ("recall", "precision"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    return out.sort_values(["category", "scorer"], kind="stable").reset_index(drop=True)

