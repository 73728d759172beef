"""Data functions for the pages: each runs named SQL from ``queries/`` and returns a DataFrame.

No SQL lives here or in the pages; see ``queries/<subject>_<shape>.sql``. Rates and their 95%
intervals are added in Python (:mod:`runwatch.detect.intervals`) so the SQL stays plain counting.
Run-level pages read only the per-checkpoint aggregates (``checkpoint_categories``,
``checkpoint_sets``); the checkpoint and prompt pages read samples and scores of one run (and
one step or one prompt).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from runwatch.dashboard import connection, shared_cache
from runwatch.detect.intervals import newcombe_difference, wilson
from runwatch.detect import canaries, ensemble, quality
from runwatch.query import named as queries
from runwatch.store.store import TOP_K

SAMPLE_LIMIT = 500
ALERTS_TABLE = "alerts"


QUERIES_RUN = 0  # statements this process ran for the pages (the tests count them)


def _run_query(name: str, params: dict[str, Any]) -> pd.DataFrame:
    global QUERIES_RUN
    q = queries.load(name)
    bound = q.bind(params)
    with connection.cursor() as cur:
        QUERIES_RUN += 1
        return cur.execute(q.sql, bound).df()


def version_of(params: dict[str, Any]) -> tuple | None:
    """The data version a query with ``params`` reads: its run's when it names one."""
    run_id = params.get("run_id")
    return connection.data_version(run_id if isinstance(run_id, str) and run_id else None)


def query(name: str, **params: Any) -> pd.DataFrame:
    """Run the named query with ``params`` (checked against its placeholders).

    Where the data version is known the result is shared by every session of this process
    until a commit changes what it reads (:mod:`runwatch.dashboard.shared_cache`): twenty open
    tabs on one run cost one query per change, and a refresh with no new data costs none.
    """
    version = version_of(params)  # before the query: a newer result never gets an older key
    if version is None:
        return _run_query(name, params)
    key = ("query", connection.source_label(), name, shared_cache.hashable(params), version)
    return shared_cache.frame(shared_cache.results.get(key, lambda: _run_query(name, params)))


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_query(source: str, name: str, stamp: tuple, params: tuple) -> pd.DataFrame:
    return query(name, **dict(params))


def _cached(name: str, stamp: tuple, **params: Any) -> pd.DataFrame:
    """``query(name, **params)``, reused while ``stamp`` (a version of the data it reads) and
    the database are unchanged. For the few queries that cannot read an aggregate."""
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    df = _cached_query(connection.source_label(), name, stamp, tuple(sorted(params.items())))
    return df.copy()


def shared(fn):
    """Share what ``fn(run_id, ...)`` returns (a frame, list or dict derived from queries) across
    sessions while the run's data version is unchanged: the pandas work after the queries
    (pivots, intervals) is done once per commit, not once per viewer and refresh."""

    @functools.wraps(fn)
    def wrapper(run_id: str, *args: Any, **kwargs: Any):
        version = connection.data_version(run_id or None)  # before the queries it runs
        if version is None:
            return fn(run_id, *args, **kwargs)
        key = ("derived", connection.source_label(), fn.__name__, run_id,
               shared_cache.hashable({"args": args, **kwargs}), version)
        return shared_cache.own(shared_cache.results.get(key, lambda: fn(run_id, *args, **kwargs)))

    return wrapper


def tables() -> set[str]:
    return set(query("catalog_tables")["table_name"])


def has_alerts() -> bool:
    return ALERTS_TABLE in tables()


def _with_rate(df: pd.DataFrame, k: str = "n_flagged", n: str = "n_scored") -> pd.DataFrame:
    rate, low, high = wilson(df[k].to_numpy(dtype=float), df[n].to_numpy(dtype=float))
    return df.assign(rate=rate, rate_low=low, rate_high=high)


# ---------------------------------------------------------------------------------- runs


def run_ids() -> list[str]:
    return query("runs_ids")["run_id"].tolist()


def runs_overview() -> pd.DataFrame:
    """One row per run; ``alerts`` is filled when the alerts table exists, else NA."""
    df = query("runs_overview")
    if has_alerts():
        counts = query("alerts_run_counts")
        df = df.merge(counts, on="run_id", how="left")
        df["alerts"] = df["alerts"].fillna(0).astype("int64")
    else:
        df["alerts"] = pd.array([pd.NA] * len(df), dtype="Int64")
    return df


# ----------------------------------------------------------------------------------- run


@shared
def run_summary(run_id: str) -> dict[str, Any]:
    df = query("run_summary", run_id=run_id)
    row = df.iloc[0].to_dict()
    return {k: (None if _isna(v) else v) for k, v in row.items()}


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@shared
def run_category_rates(run_id: str) -> pd.DataFrame:
    """Per (step, prompt_set, category): counts, rate and its 95% Wilson interval."""
    return _with_rate(query("run_category_rates", run_id=run_id))


@shared
def run_heatmap(run_id: str, prompt_sets: Iterable[str] = ()) -> pd.DataFrame:
    """Per (step, category) pooled over ``prompt_sets`` (empty: all): counts and rate."""
    return _with_rate(query("run_category_heatmap", run_id=run_id, prompt_sets=list(prompt_sets)))


@shared
def run_consistency_gap(run_id: str) -> pd.DataFrame:
    """Per (step, category): monitored and unmonitored rates and the gap (unmonitored minus
    monitored) with its 95% Newcombe interval. Empty when the run has no consistency probes."""
    df = query("run_consistency_rates", run_id=run_id)
    cols = [
        "step",
        "category",
        "n_monitored",
        "flagged_monitored",
        "rate_monitored",
        "n_unmonitored",
        "flagged_unmonitored",
        "rate_unmonitored",
        "gap",
        "gap_low",
        "gap_high",
    ]
    if df.empty:
        return pd.DataFrame(columns=cols)
    wide = df.pivot_table(
        index=["step", "category"],
        columns="cue",
        values=["n_scored", "n_flagged"],
        aggfunc="sum",
        fill_value=0,
    )
    out = pd.DataFrame(index=wide.index).reset_index()
    for cue in ("monitored", "unmonitored"):
        n = wide["n_scored"][cue].to_numpy() if cue in wide["n_scored"] else np.zeros(len(wide))
        k = wide["n_flagged"][cue].to_numpy() if cue in wide["n_flagged"] else np.zeros(len(wide))
        out[f"n_{cue}"] = n.astype("int64")
        out[f"flagged_{cue}"] = k.astype("int64")
        out[f"rate_{cue}"] = wilson(k, n)[0]
    gap, low, high = newcombe_difference(
        out["flagged_unmonitored"],
        out["n_unmonitored"],
        out["flagged_monitored"],
        out["n_monitored"],
    )
    out["gap"], out["gap_low"], out["gap_high"] = gap, low, high
    return out[cols]


@shared
def run_reward_rates(run_id: str) -> pd.DataFrame:
    """Per (step, category) over rewarded prompt sets: mean reward, flagged counts and rate."""
    return _with_rate(query("run_reward_rates", run_id=run_id))


MARK_COLUMNS = [
    "category", "prompt_set", "first_step", "change_step", "alert_id", "severity",
    "queue_status", "alerts",
]


@shared
def run_alert_marks(run_id: str) -> pd.DataFrame:
    """One row per alert of the run's per-prompt-set rate series (not resolved as a false
    positive): ``first_step`` is the checkpoint it opened at; with its id, severity, status."""
    if not has_alerts():
        return pd.DataFrame(columns=MARK_COLUMNS)
    return query("alerts_run_marks", run_id=run_id)


@shared
def run_checkpoints(run_id: str) -> pd.DataFrame:
    return query("run_checkpoints", run_id=run_id)


@shared
def run_prompt_sets(run_id: str) -> list[str]:
    return query("run_prompt_sets", run_id=run_id)["prompt_set"].tolist()


# ---------------------------------------------------------------------------- checkpoint


def checkpoint_counts(run_id: str, step: int) -> pd.DataFrame:
    return _with_rate(query("checkpoint_counts", run_id=run_id, step=int(step)))


def checkpoint_samples(
    run_id: str,
    step: int,
    *,
    category: str = "",
    prompt_sets: Iterable[str] = (),
    flagged: str = "any",
    disagree_only: bool = False,
    search: str = "",
    limit: int = SAMPLE_LIMIT,
) -> pd.DataFrame:
    """The checkpoint's samples after the filters, highest score first (``n_matching`` holds
    the count before ``limit``). ``flagged`` is 'any', 'flagged' or 'unflagged'."""
    if flagged not in ("any", "flagged", "unflagged"):
        raise ValueError(f"flagged must be 'any', 'flagged' or 'unflagged', got {flagged!r}")
    return query(
        "checkpoint_samples",
        run_id=run_id,
        step=int(step),
        category=category or "",
        prompt_sets=list(prompt_sets),
        flagged=flagged,
        disagree_only=bool(disagree_only),
        search=(search or "").strip(),
        limit=int(limit),
    )


def checkpoint_worst(run_id: str, step: int, per_category: int = 3) -> pd.DataFrame:
    """Per category, the ``per_category`` (at most ``TOP_K`` = 16) highest-scoring samples of
    steps up to ``step``, from the materializer's ``checkpoint_top_scores``. Cached per
    database, run and step until samples at or before ``step`` arrive."""
    if not 1 <= per_category <= TOP_K:
        raise ValueError(f"per_category must be 1..{TOP_K}: checkpoint_top_scores keeps {TOP_K}")
    progress = query("checkpoint_progress", run_id=run_id, step=int(step)).iloc[0]
    stamp = (int(progress["samples"]), str(progress["last_at"]))
    return _cached(
        "checkpoint_worst", stamp, run_id=run_id, step=int(step), per_category=int(per_category)
    )


def checkpoint_margins(run_id: str, step: int) -> pd.DataFrame:
    """Per (category, scorer) at ``step``: threshold, highest unflagged score and the margin."""
    return query("checkpoint_margins", run_id=run_id, step=int(step))


# -------------------------------------------------------------------------------- prompt


def prompt_search(run_id: str, step: int, search: str = "", limit: int = 200) -> pd.DataFrame:
    """Prompts sampled at checkpoint ``step`` of the run that match ``search``."""
    return query(
        "prompt_search",
        run_id=run_id,
        step=int(step),
        search=(search or "").strip(),
        limit=int(limit),
    )


def prompt_history(run_id: str, prompt_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per sample, oldest first; one row per step and category) for one prompt.

    The per-sample frame has ``flagged`` (any category, any scorer), ``flagged_categories``,
    ``disagree_categories``, ``max_score`` and ``scores`` (each scorer's score); the per-category
    frame has ``max_score`` and ``flagged`` for the chart. The query reads every checkpoint of
    the run, so it is cached until the run's sample count changes."""
    progress = query("checkpoint_progress", run_id=run_id, step=2**62).iloc[0]
    stamp = (int(progress["samples"]), str(progress["last_at"]))
    long = _cached("prompt_history", stamp, run_id=run_id, prompt_id=prompt_id)
    sample_cols = [
        "step",
        "sample_id",
        "prompt_set",
        "cue",
        "pair_id",
        "prompt",
        "completion",
        "reward",
        "created_at",
    ]
    if long.empty:
        return (
            pd.DataFrame(
                columns=[
                    *sample_cols,
                    "flagged",
                    "flagged_categories",
                    "disagree_categories",
                    "max_score",
                    "scores",
                ]
            ),
            pd.DataFrame(columns=["step", "category", "max_score", "flagged"]),
        )
    scored = long.dropna(subset=["category"])

    def joined(mask: pd.Series) -> pd.Series:
        return scored[mask].groupby("sample_id")["category"].agg(", ".join)

    per_sample = long.drop_duplicates("sample_id")[sample_cols].set_index("sample_id")
    per_sample["flagged_categories"] = joined(scored["flagged"].astype(bool))
    per_sample["disagree_categories"] = joined(scored["disagree"].astype(bool))
    per_sample["max_score"] = scored.groupby("sample_id")["max_score"].max()
    per_sample["scores"] = (
        (scored["category"] + ": " + scored["detail"]).groupby(scored["sample_id"]).agg(" | ".join)
    )
    per_sample[["flagged_categories", "disagree_categories", "scores"]] = per_sample[
        ["flagged_categories", "disagree_categories", "scores"]
    ].fillna("")
    per_sample["flagged"] = per_sample["flagged_categories"] != ""
    per_sample = per_sample.reset_index()[
        [
            *sample_cols,
            "flagged",
            "flagged_categories",
            "disagree_categories",
            "max_score",
            "scores",
        ]
    ]
    per_category = scored.groupby(["step", "category"], as_index=False).agg(
        max_score=("max_score", "max"), flagged=("flagged", "any")
    )
    return per_sample, per_category


def first_flagged_step(history: pd.DataFrame) -> int | None:
    """The first checkpoint at which any completion of the prompt was flagged, or None."""
    flagged = history.loc[history["flagged"].astype(bool), "step"]
    return None if flagged.empty else int(flagged.min())


def first_flagged_by_category(scores: pd.DataFrame) -> dict[str, int]:
    """category -> first checkpoint flagged (per-category frame of :func:`prompt_history`)."""
    hit = scores[scores["flagged"].astype(bool)]
    return {str(c): int(s) for c, s in hit.groupby("category")["step"].min().items()}


# ------------------------------------------------------------------------------- compare


def compare_options(run_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(prompt sets, categories) present in any of the runs."""
    df = query("compare_options", run_ids=list(run_ids))
    return (
        df.loc[df["kind"] == "prompt_set", "value"].tolist(),
        df.loc[df["kind"] == "category", "value"].tolist(),
    )


def compare_rates(
    run_ids: Iterable[str], prompt_sets: Iterable[str] = (), category: str = ""
) -> pd.DataFrame:
    """Per (run, step): counts, rate and 95% Wilson interval."""
    return _with_rate(
        query(
            "compare_rates",
            run_ids=list(run_ids),
            prompt_sets=list(prompt_sets),
            category=category or "",
        )
    )


# -------------------------------------------------------------------------------- alerts

ALERT_STATUSES = ("open", "acknowledged", "snoozed", "resolved")
SEVERITIES = ("high", "medium", "low")
UNASSIGNED = "-"  # the assignee filter's value for alerts nobody is assigned to
ALERT_SAMPLE_LIMIT = 30
EVIDENCE_COLUMNS = [
    "step", "flagged", "n", "rate", "rate_low", "rate_high", "statistic", "threshold", "fired",
]


def _filters(severities: Sequence[str], run_id: str, category: str, assignee: str) -> dict:
    return dict(
        severities=list(severities), run_id=run_id or "", category=category or "",
        assignee=assignee or "",
    )


def alert_queue(
    *,
    statuses: Sequence[str] = (),
    severities: Sequence[str] = (),
    run_id: str = "",
    category: str = "",
    assignee: str = "",
) -> pd.DataFrame:
    """Alerts after the filters (empty / '' = no filter; ``assignee`` :data:`UNASSIGNED` = none
    assigned), highest severity first, then most recently changed."""
    return query(
        "alert_queue", statuses=list(statuses), **_filters(severities, run_id, category, assignee)
    )


def alert_status_counts(
    *, severities: Sequence[str] = (), run_id: str = "", category: str = "", assignee: str = ""
) -> dict[str, int]:
    """Alerts per queue status under the other filters; every status present (0 when none)."""
    df = query("alert_status_counts", **_filters(severities, run_id, category, assignee))
    got = dict(zip(df["queue_status"], df["alerts"].astype(int), strict=True))
    return {s: int(got.get(s, 0)) for s in ALERT_STATUSES}


def alert_filter_options() -> dict[str, list[str]]:
    """Values the queue's run, category and assignee filters offer."""
    df = query("alert_filter_options")
    return {k: df.loc[df["kind"] == k, "value"].tolist() for k in ("run", "category", "assignee")}


def _json(value: Any) -> Any:
    if value is None or _isna(value):
        return None
    return json.loads(value) if isinstance(value, str) else value


def alert_detail(alert_id: str) -> dict[str, Any] | None:
    """The alert's row of ``alert_queue`` (JSON columns parsed), or None when unknown."""
    df = query("alert_detail", alert_id=alert_id)
    if df.empty:
        return None
    row = {k: (None if _isna(v) else v) for k, v in df.iloc[0].to_dict().items()}
    for name in ("evidence", "top_samples", "detector"):
        row[name] = _json(row.get(name))
    return row


def alert_evidence(alert: dict[str, Any]) -> pd.DataFrame:
    """The detector's per-checkpoint evidence of an alert (see runwatch/alerts/state.py)."""
    rows = alert.get("evidence") or []
    df = pd.DataFrame(rows)
    for col in EVIDENCE_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[EVIDENCE_COLUMNS].copy()
    for col in ("rate", "rate_low", "rate_high", "statistic", "threshold"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["fired"] = df["fired"].fillna(False).astype(bool)
    return df.sort_values("step").reset_index(drop=True)


def alert_events(alert_id: str) -> pd.DataFrame:
    """The alert's events, newest first: ts, actor, action, body (parsed dict), event_id."""
    df = query("alert_events", alert_id=alert_id)
    df["body"] = [_json(b) or {} for b in df["body"]]
    return df


def alert_samples(alert: dict[str, Any], limit: int = ALERT_SAMPLE_LIMIT) -> pd.DataFrame:
    """The alert's top samples (from the detector's snapshot) and the samples flagged for its
    category since its change point (or opening step) in its prompt set, with current labels."""
    top = [s.get("sample_id") for s in (alert.get("top_samples") or []) if s.get("sample_id")]
    last = alert.get("last_step")
    start = alert.get("change_step")
    if start is None:
        start = alert.get("opened_step")
    return query(
        "alert_samples",
        run_id=alert["run_id"],
        category=alert.get("category") or "",
        prompt_set=alert.get("prompt_set") or "",
        from_step=int(start if start is not None else 0),
        to_step=int(last if last is not None else 2**62),
        sample_ids=[str(t) for t in top],
        limit=int(limit),
    )


def current_labels(sample_ids: Iterable[str], category: str) -> dict[str, str]:
    """sample_id -> current label (bad | fine | unsure) for ``category``; unlabelled absent."""
    ids = [str(i) for i in sample_ids]
    if not ids or not category:
        return {}
    df = query("labels_current", sample_ids=ids, category=category)
    return dict(zip(df["sample_id"], df["label"], strict=True))


# ------------------------------------------------------------------------ scorer quality


def quality_options() -> tuple[list[str], list[str]]:
    """(runs, categories) with scored samples."""
    df = query("quality_options")
    return (
        df.loc[df["kind"] == "run", "value"].tolist(),
        df.loc[df["kind"] == "category", "value"].tolist(),
    )


def scorer_quality(run_id: str = "", min_labels: int = quality.MIN_LABELS) -> pd.DataFrame:
    """Per scorer x category (and the any-scorer ensemble): recall and precision from the
    current bad/fine labels with Wilson 95% intervals and counts (:mod:`runwatch.detect.quality`)."""
    rows = query("quality_confusion", run_id=run_id or "").to_dict("records")
    return quality.estimates(quality.confusion(rows), min_labels=min_labels)


def quality_disagreements(
    run_id: str = "", category: str = "", *, unlabelled_first: bool = True, limit: int = 100
) -> pd.DataFrame:
    """Samples whose scorers of one category disagree; unlabelled first, then newest."""
    return query(
        "quality_disagreements",
        run_id=run_id or "",
        category=category or "",
        unlabelled_first=bool(unlabelled_first),
        limit=int(limit),
    )


# ------------------------------------------------------------------------ monitor health


def canary_runs() -> list[str]:
    """Runs with canaries, newest first."""
    return query("canary_runs")["run_id"].tolist()


@shared
def canary_recall(run_id: str, by_step: bool = False) -> pd.DataFrame:
    """Canary recall / false positives per scorer x category (and the ensemble), with exact
    Clopper-Pearson intervals and the miss-rate bound (:mod:`runwatch.detect.canaries`)."""
    return canaries.with_intervals(query("canary_recall", run_id=run_id, by_step=by_step))


def canary_delivery(run_id: str) -> pd.DataFrame:
    """Per collector: canaries made (its report) against stored in the view, and missing."""
    return query("canary_delivery", run_id=run_id)


def canary_misses(run_id: str, scorer: str = "", category: str = "", limit: int = 20) -> pd.DataFrame:
    return query("canary_misses", run_id=run_id, scorer=scorer, category=category, limit=int(limit))


def monitor_alerts(run_id: str) -> pd.DataFrame:
    """The run's alerts about the monitor itself (canary recall, canary loss)."""
    if not has_alerts():
        return pd.DataFrame()
    return query("alerts_monitor", run_id=run_id)


@shared
def safety_margin(run_id: str, scorer: str = "") -> pd.DataFrame:
    """The worst score found per checkpoint, category, scorer and prompt set against the
    threshold and the known-bad canaries' scores (``queries/safety_margin.sql``)."""
    return query("safety_margin", run_id=run_id, scorer=scorer)


def ensemble_rules() -> list:
    """The rules the Scorer quality page compares: ``RUNWATCH_ENSEMBLE_RULES`` (``;``-separated,
    set by ``runwatch serve --ensemble-rule``), else any, all, 2_of_n."""
    import os

    return ensemble.parse_rules(os.environ.get("RUNWATCH_ENSEMBLE_RULES", "").split(";"))


def flag_rules() -> ensemble.FlagRules:
    """The flag rule the view counts with (``--flag-rule``; kept in the file)."""
    rows = query("flag_rules")
    return ensemble.FlagRules.parse(rows["rule"].tolist()) if len(rows) else ensemble.FlagRules()


def ensemble_comparison(run_id: str = "") -> pd.DataFrame:
    """Each rule's canary recall / false positives and label recall / precision per category,
    with the view's flag rule among them (column ``active``)."""
    return ensemble.compare(ensemble_rules(), query("ensemble_canaries", run_id=run_id or ""),
                            query("ensemble_labels", run_id=run_id or ""), active=flag_rules())
