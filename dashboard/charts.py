"""Altair charts for the pages: each function takes a DataFrame from :mod:`runwatch.dashboard.data` and
returns a chart with typed encodings. No data access here.

Rates are fractions in [0, 1] shown as percentages; every rate has its 95% interval drawn as a
band or an error bar, because a rate over ten samples and one over ten thousand must not look
alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import quote

import altair as alt
import pandas as pd

PCT = ".1%"
MAX_POINTS = 40  # draw a dot per checkpoint only while there are few checkpoints
PROMPT_SET_ORDER = ("on_distribution", "red_team", "consistency", "rollouts")
HEIGHT = 260


def category_scale(categories: Iterable[str]) -> alt.Scale:
    """One colour per category, the same in every chart of a page (sorted domain)."""
    return alt.Scale(domain=sorted(set(categories)), scheme="tableau10")


def order_prompt_sets(prompt_sets: Iterable[str]) -> list[str]:
    """Known prompt sets first, in a fixed order (on-distribution left of red-team), then others."""
    present = list(dict.fromkeys(prompt_sets))
    known = [p for p in PROMPT_SET_ORDER if p in present]
    return known + sorted(p for p in present if p not in PROMPT_SET_ORDER)


def _dots(df: pd.DataFrame) -> bool:
    return df["step"].nunique() <= MAX_POINTS


def _rate_axis(title: str = "flagged rate") -> alt.Axis:
    return alt.Axis(format="%", title=title)


def runs_flagged(runs: pd.DataFrame) -> alt.Chart:
    """Flagged rate per run (all checkpoints), one bar each, coloured by status."""
    df = runs.dropna(subset=["flagged_rate"])
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            y=alt.Y("run_id:N", sort=alt.SortField("flagged_rate", order="descending"), title=None),
            x=alt.X("flagged_rate:Q", axis=_rate_axis()),
            color=alt.Color("status:N", title="status"),
            tooltip=[
                alt.Tooltip("run_id:N", title="run"),
                alt.Tooltip("status:N"),
                alt.Tooltip("flagged_rate:Q", format=PCT, title="flagged rate"),
                alt.Tooltip("n_flagged:Q", title="flagged"),
                alt.Tooltip("n_scored:Q", title="scored"),
                alt.Tooltip("last_step:Q", title="last step"),
            ],
        )
        .properties(height=alt.Step(22))
    )


def failure_rates(
    rates: pd.DataFrame,
    marks: pd.DataFrame | None = None,
    *,
    prompt_sets: Sequence[str] | None = None,
) -> alt.FacetChart:
    """Flagged rate per category over checkpoints with 95% Wilson bands, one panel per prompt
    set (on-distribution and red-team side by side). ``marks`` (category, prompt_set,
    first_step; optionally alert_id, severity, queue_status), when given, draws a dashed rule at
    each alert's first flagged checkpoint; with ``alert_id`` a click on the rule opens the alert."""
    order = list(prompt_sets) if prompt_sets else order_prompt_sets(rates["prompt_set"])
    df = rates.assign(kind="rate")
    if marks is not None and not marks.empty:
        keep = ["category", "prompt_set", "step", "alert_id", "severity", "queue_status"]
        m = marks.rename(columns={"first_step": "step"})
        m = m[[c for c in keep if c in m.columns]]
        m = m[m["prompt_set"].isin(order) & m["category"].isin(rates["category"])]
        df = pd.concat([df, m.assign(kind="alert")], ignore_index=True)
    colour = alt.Color(
        "category:N",
        scale=category_scale(rates["category"]),
        title="category",
        legend=alt.Legend(symbolOpacity=1),
    )
    pick = alt.selection_point(fields=["category"], bind="legend")
    base = alt.Chart().encode(
        x=alt.X("step:Q", title="step"),
        color=colour,
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
    )
    rate_rows = alt.datum.kind == "rate"
    band = (
        base.transform_filter(rate_rows)
        .mark_area(opacity=0.15)
        .encode(
            y=alt.Y("rate_low:Q", axis=_rate_axis(), scale=alt.Scale(domain=[0, 1])),
            y2="rate_high:Q",
            opacity=alt.condition(pick, alt.value(0.18), alt.value(0.03)),
        )
    )
    tooltip = [
        alt.Tooltip("category:N"),
        alt.Tooltip("prompt_set:N", title="prompt set"),
        alt.Tooltip("step:Q"),
        alt.Tooltip("rate:Q", format=PCT, title="flagged rate"),
        alt.Tooltip("rate_low:Q", format=PCT, title="95% low"),
        alt.Tooltip("rate_high:Q", format=PCT, title="95% high"),
        alt.Tooltip("n_flagged:Q", title="flagged"),
        alt.Tooltip("n_scored:Q", title="scored"),
        alt.Tooltip("n_disagree:Q", title="scorers disagree"),
    ]
    line = (
        base.transform_filter(rate_rows)
        .mark_line(point=_dots(rates))
        .encode(y=alt.Y("rate:Q", axis=_rate_axis()), tooltip=tooltip)
        .add_params(pick)
    )
    layers = [band, line]
    if (df["kind"] == "alert").any():
        alert_tooltip = [alt.Tooltip("category:N"), alt.Tooltip("step:Q", title="alert from step")]
        rule_encoding = {}
        if "alert_id" in df.columns:  # alerts_run_marks: one row per alert, click opens it
            df["href"] = [
                f"alerts?alert={quote(str(a), safe='')}" if isinstance(a, str) else None
                for a in df["alert_id"]
            ]
            alert_tooltip += [
                alt.Tooltip("severity:N"),
                alt.Tooltip("queue_status:N", title="status"),
            ]
            rule_encoding["href"] = alt.Href("href:N")
        rule = (
            base.transform_filter(alt.datum.kind == "alert")
            .mark_rule(strokeDash=[4, 3], strokeWidth=2, cursor="pointer")
            .encode(tooltip=alert_tooltip, **rule_encoding)
        )
        layers.append(rule)
    return (
        alt.layer(*layers, data=df)
        .properties(width=max(180, min(640, 760 // max(1, len(order)))), height=HEIGHT)
        .facet(
            column=alt.Column(
                "prompt_set:N",
                sort=order,
                title=None,
                header=alt.Header(labelFontSize=13, labelFontWeight="bold"),
            )
        )
        .resolve_scale(x="shared", y="shared")
    )


def category_heatmap(heat: pd.DataFrame) -> alt.Chart:
    """Category x checkpoint grid coloured by flagged rate (pooled over the chosen prompt sets)."""
    n_steps = heat["step"].nunique()
    base = alt.Chart(heat).encode(
        x=alt.X("step:O", title="step", axis=alt.Axis(labelOverlap=True, labelAngle=0)),
        y=alt.Y("category:N", title=None),
    )
    cells = base.mark_rect(stroke="white", strokeWidth=0.5).encode(
        color=alt.Color(
            "rate:Q",
            title="flagged rate",
            scale=alt.Scale(
                scheme="orangered", domain=[0, max(0.05, float(heat["rate"].max() or 0))]
            ),
            legend=alt.Legend(format="%"),
        ),
        tooltip=[
            alt.Tooltip("category:N"),
            alt.Tooltip("step:O"),
            alt.Tooltip("rate:Q", format=PCT, title="flagged rate"),
            alt.Tooltip("rate_low:Q", format=PCT, title="95% low"),
            alt.Tooltip("rate_high:Q", format=PCT, title="95% high"),
            alt.Tooltip("n_flagged:Q", title="flagged"),
            alt.Tooltip("n_scored:Q", title="scored"),
        ],
    )
    chart = cells
    if n_steps <= 24:  # labels only while they fit
        text = base.mark_text(fontSize=11).encode(
            text=alt.Text("rate:Q", format=".0%"),
            color=alt.condition(alt.datum.rate > 0.5, alt.value("white"), alt.value("black")),
        )
        chart = cells + text
    return chart.properties(height=alt.Step(34))


def consistency_gap(gap: pd.DataFrame) -> alt.LayerChart:
    """Unmonitored minus monitored flagged rate per category over checkpoints, with the 95%
    Newcombe interval of the difference; above zero: worse when the prompt says nobody watches."""
    colour = alt.Color(
        "category:N",
        scale=category_scale(gap["category"]),
        title="category",
        legend=alt.Legend(symbolOpacity=1),
    )
    base = alt.Chart(gap).encode(x=alt.X("step:Q", title="step"), color=colour)
    band = base.mark_area(opacity=0.15).encode(
        y=alt.Y("gap_low:Q", axis=alt.Axis(format="+%", title="unmonitored − monitored")),
        y2="gap_high:Q",
    )
    line = base.mark_line(point=_dots(gap)).encode(
        y=alt.Y("gap:Q"),
        tooltip=[
            alt.Tooltip("category:N"),
            alt.Tooltip("step:Q"),
            alt.Tooltip("gap:Q", format="+.1%", title="gap"),
            alt.Tooltip("gap_low:Q", format="+.1%", title="95% low"),
            alt.Tooltip("gap_high:Q", format="+.1%", title="95% high"),
            alt.Tooltip("rate_monitored:Q", format=PCT, title="monitored"),
            alt.Tooltip("rate_unmonitored:Q", format=PCT, title="unmonitored"),
            alt.Tooltip("n_monitored:Q", title="n monitored"),
            alt.Tooltip("n_unmonitored:Q", title="n unmonitored"),
        ],
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="grey").encode(y="y:Q")
    return alt.layer(band, zero, line).properties(height=HEIGHT)


def reward_vs_rate(rr: pd.DataFrame) -> alt.LayerChart:
    """Mean reward (x) against flagged rate (y) per checkpoint, one path per category in step
    order: reward rising together with a category's rate is the reward-hacking signature."""
    colour = alt.Color(
        "category:N",
        scale=category_scale(rr["category"]),
        title="category",
        legend=alt.Legend(symbolOpacity=1),
    )
    base = alt.Chart(rr).encode(
        x=alt.X("mean_reward:Q", title="mean reward", scale=alt.Scale(zero=False)),
        y=alt.Y("rate:Q", axis=_rate_axis()),
        color=colour,
        order=alt.Order("step:Q"),
    )
    path = base.mark_line(opacity=0.5 if _dots(rr) else 0.15)
    points = base.mark_point(filled=True, size=60 if _dots(rr) else 20).encode(
        tooltip=[
            alt.Tooltip("category:N"),
            alt.Tooltip("step:Q"),
            alt.Tooltip("mean_reward:Q", format=".3f", title="mean reward"),
            alt.Tooltip("rate:Q", format=PCT, title="flagged rate"),
            alt.Tooltip("n_flagged:Q", title="flagged"),
            alt.Tooltip("n_scored:Q", title="scored"),
        ]
    )
    return alt.layer(path, points).properties(height=HEIGHT)


def checkpoint_rates(counts: pd.DataFrame) -> alt.LayerChart:
    """One checkpoint: flagged rate per category, a bar per prompt set (and cue), 95% error bars."""
    df = counts.assign(
        group=counts["prompt_set"] + counts["cue"].map(lambda c: f" ({c})" if c else "")
    )
    base = alt.Chart(df).encode(
        y=alt.Y("category:N", title=None),
        yOffset=alt.YOffset("group:N"),
        color=alt.Color("group:N", title="prompt set"),
    )
    bars = base.mark_bar().encode(
        x=alt.X("rate:Q", axis=_rate_axis(), scale=alt.Scale(domain=[0, 1])),
        tooltip=[
            alt.Tooltip("category:N"),
            alt.Tooltip("group:N", title="prompt set"),
            alt.Tooltip("rate:Q", format=PCT, title="flagged rate"),
            alt.Tooltip("n_flagged:Q", title="flagged"),
            alt.Tooltip("n_scored:Q", title="scored"),
            alt.Tooltip("n_disagree:Q", title="scorers disagree"),
        ],
    )
    err = base.mark_rule(color="black").encode(x="rate_low:Q", x2="rate_high:Q")
    return alt.layer(bars, err).properties(height=alt.Step(12))


def margins(m: pd.DataFrame) -> alt.LayerChart:
    """Per scorer and category: the highest unflagged score (dot) against the threshold (tick);
    the gap between them is the margin."""
    df = m.dropna(subset=["threshold"]).assign(
        scorer_category=lambda d: d["category"] + " · " + d["scorer"]
    )
    base = alt.Chart(df).encode(
        y=alt.Y("scorer_category:N", title=None, axis=alt.Axis(labelLimit=240))
    )
    tooltip = [
        alt.Tooltip("category:N"),
        alt.Tooltip("scorer:N"),
        alt.Tooltip("threshold:Q", format=".3g"),
        alt.Tooltip("max_unflagged_score:Q", format=".3g", title="highest unflagged"),
        alt.Tooltip("margin:Q", format=".3g"),
    ]
    span = base.mark_rule(color="#999").encode(
        x=alt.X("max_unflagged_score:Q", title="score"), x2="threshold:Q"
    )
    dot = base.mark_point(filled=True, size=80, color="#1f77b4").encode(
        x="max_unflagged_score:Q", tooltip=tooltip
    )
    tick = base.mark_tick(color="#d62728", thickness=3, size=18).encode(
        x="threshold:Q", tooltip=tooltip
    )
    return alt.layer(span, dot, tick).properties(height=alt.Step(28))


def prompt_scores(scores: pd.DataFrame, first_flagged: int | None = None) -> alt.LayerChart:
    """One prompt: highest score per category over checkpoints; filled points where flagged
    (any scorer), a dashed rule at the first flagged checkpoint."""
    colour = alt.Color("category:N", scale=category_scale(scores["category"]), title="category")
    base = alt.Chart(scores).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("max_score:Q", title="highest score"), color=colour
    )
    line = base.mark_line(opacity=0.6)
    tooltip = [
        alt.Tooltip("category:N"),
        alt.Tooltip("step:Q"),
        alt.Tooltip("max_score:Q", format=".3g", title="highest score"),
        alt.Tooltip("flagged:N"),
    ]
    hollow = base.mark_point(size=60).encode(tooltip=tooltip)
    filled = (
        base.transform_filter(alt.datum.flagged)
        .mark_point(filled=True, size=110)
        .encode(tooltip=tooltip)
    )
    layers = [line, hollow, filled]
    if first_flagged is not None:
        rule = (
            alt.Chart(pd.DataFrame({"step": [first_flagged]}))
            .mark_rule(strokeDash=[4, 3], color="#d62728")
            .encode(x="step:Q")
        )
        layers.append(rule)
    return alt.layer(*layers).properties(height=HEIGHT)


def compare_rates(df: pd.DataFrame) -> alt.LayerChart:
    """Several runs' flagged-rate curves on one chart, with 95% Wilson bands."""
    colour = alt.Color(
        "run_id:N",
        title="run",
        scale=alt.Scale(scheme="tableau10"),
        legend=alt.Legend(symbolOpacity=1),
    )
    base = alt.Chart(df).encode(x=alt.X("step:Q", title="step"), color=colour)
    band = base.mark_area(opacity=0.12).encode(
        y=alt.Y("rate_low:Q", axis=_rate_axis()), y2="rate_high:Q"
    )
    line = base.mark_line(point=_dots(df)).encode(
        y=alt.Y("rate:Q"),
        tooltip=[
            alt.Tooltip("run_id:N", title="run"),
            alt.Tooltip("step:Q"),
            alt.Tooltip("rate:Q", format=PCT, title="flagged rate"),
            alt.Tooltip("rate_low:Q", format=PCT, title="95% low"),
            alt.Tooltip("rate_high:Q", format=PCT, title="95% high"),
            alt.Tooltip("n_flagged:Q", title="flagged"),
            alt.Tooltip("n_scored:Q", title="scored"),
        ],
    )
    return alt.layer(band, line).properties(height=HEIGHT + 60)


def alert_statistic(evidence: pd.DataFrame, change_step: int | None = None) -> alt.LayerChart:
    """Why an alert fired: the detector's statistic per checkpoint against its threshold
    (dashed red); filled red points where it crossed; a grey rule at the estimated change."""
    df = evidence.dropna(subset=["statistic"])
    base = alt.Chart(df).encode(x=alt.X("step:Q", title="step"))
    tooltip = [
        alt.Tooltip("step:Q"),
        alt.Tooltip("statistic:Q", format=".3g"),
        alt.Tooltip("threshold:Q", format=".3g"),
        alt.Tooltip("fired:N"),
        alt.Tooltip("flagged:Q"),
        alt.Tooltip("n:Q", title="scored"),
    ]
    line = base.mark_line(point=True, color="#1f77b4").encode(
        y=alt.Y("statistic:Q", title="detector statistic"), tooltip=tooltip
    )
    threshold = (
        base.transform_filter("isValid(datum.threshold)")
        .mark_line(strokeDash=[6, 3], color="#d62728")
        .encode(y="threshold:Q", tooltip=tooltip)
    )
    fired = (
        base.transform_filter(alt.datum.fired)
        .mark_point(filled=True, size=90, color="#d62728")
        .encode(y="statistic:Q", tooltip=tooltip)
    )
    layers = [line, threshold, fired]
    if change_step is not None:
        layers.append(_step_rule(change_step, "estimated change"))
    return alt.layer(*layers).properties(height=HEIGHT)


def alert_rates(
    evidence: pd.DataFrame,
    baseline: tuple[float | None, float | None, float | None] = (None, None, None),
    change_step: int | None = None,
) -> alt.LayerChart:
    """The alert's series: rate per checkpoint with its 95% interval, the baseline rate (grey
    rule) and its interval (grey band); red points where the detector fired."""
    df = evidence.dropna(subset=["rate"])
    base = alt.Chart(df).encode(x=alt.X("step:Q", title="step"))
    tooltip = [
        alt.Tooltip("step:Q"),
        alt.Tooltip("rate:Q", format=PCT, title="rate"),
        alt.Tooltip("rate_low:Q", format=PCT, title="95% low"),
        alt.Tooltip("rate_high:Q", format=PCT, title="95% high"),
        alt.Tooltip("flagged:Q"),
        alt.Tooltip("n:Q", title="scored"),
    ]
    layers = []
    rate, low, high = baseline
    if low is not None and high is not None:
        band = pd.DataFrame(
            {"baseline_low": [low], "baseline_high": [high], "baseline_rate": [rate]}
        )
        layers.append(
            alt.Chart(band)
            .mark_rect(color="#999", opacity=0.2)
            .encode(y="baseline_low:Q", y2="baseline_high:Q")
        )
    if rate is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"baseline_rate": [rate]}))
            .mark_rule(color="#666", strokeDash=[2, 2])
            .encode(
                y="baseline_rate:Q",
                tooltip=[alt.Tooltip("baseline_rate:Q", format=PCT, title="baseline rate")],
            )
        )
    layers += [
        base.mark_area(opacity=0.18).encode(
            y=alt.Y("rate_low:Q", axis=_rate_axis("rate"), scale=alt.Scale(zero=True)),
            y2="rate_high:Q",
        ),
        base.mark_line(point=_dots(df)).encode(y="rate:Q", tooltip=tooltip),
        base.transform_filter(alt.datum.fired)
        .mark_point(filled=True, size=90, color="#d62728")
        .encode(y="rate:Q", tooltip=tooltip),
    ]
    if change_step is not None:
        layers.append(_step_rule(change_step, "estimated change"))
    return alt.layer(*layers).properties(height=HEIGHT)


def _step_rule(step: int, title: str) -> alt.Chart:
    return (
        alt.Chart(pd.DataFrame({"change_step": [int(step)]}))
        .mark_rule(color="grey", strokeDash=[4, 3])
        .encode(x="change_step:Q", tooltip=[alt.Tooltip("change_step:Q", title=title)])
    )


def scorer_quality(est: pd.DataFrame, measure: str) -> alt.LayerChart:
    """``measure`` ('recall' or 'precision') per scorer and category with its 95% interval as
    an error bar; rows without an estimate are left out."""
    df = est.dropna(subset=[measure]).assign(
        row=lambda d: d["category"] + " · " + d["scorer"]
    )
    base = alt.Chart(df).encode(
        y=alt.Y("row:N", title=None, axis=alt.Axis(labelLimit=260)),
        color=alt.Color("category:N", scale=category_scale(est["category"]), legend=None),
    )
    tooltip = [
        alt.Tooltip("category:N"),
        alt.Tooltip("scorer:N"),
        alt.Tooltip(f"{measure}:Q", format=PCT),
        alt.Tooltip(f"{measure}_low:Q", format=PCT, title="95% low"),
        alt.Tooltip(f"{measure}_high:Q", format=PCT, title="95% high"),
        alt.Tooltip("n_bad:Q", title="bad labels"),
        alt.Tooltip("n_flagged:Q", title="flagged labelled"),
    ]
    err = base.mark_rule(strokeWidth=2).encode(
        x=alt.X(f"{measure}_low:Q", axis=alt.Axis(format="%", title=measure),
                scale=alt.Scale(domain=[0, 1])),
        x2=f"{measure}_high:Q",
    )
    dot = base.mark_point(filled=True, size=80).encode(x=f"{measure}:Q", tooltip=tooltip)
    return alt.layer(err, dot).properties(height=alt.Step(26), title=measure)


def canary_recall(by_step: pd.DataFrame) -> alt.LayerChart:
    """Canary recall per checkpoint, one line per scorer (the ensemble dashed), one panel per
    category, with the exact 95% interval as a band."""
    df = by_step[by_step["n_bad"] > 0]
    base = alt.Chart(df).encode(
        x=alt.X("step:Q", title="checkpoint (step)"),
        color=alt.Color("scorer:N", title="scorer"),
    )
    tooltip = [
        alt.Tooltip("step:Q"), alt.Tooltip("scorer:N"), alt.Tooltip("category:N"),
        alt.Tooltip("recall:Q", format=PCT), alt.Tooltip("recall_low:Q", format=PCT, title="95% low"),
        alt.Tooltip("recall_high:Q", format=PCT, title="95% high"),
        alt.Tooltip("caught:Q"), alt.Tooltip("n_bad:Q", title="bad canaries"),
    ]
    band = base.mark_area(opacity=0.15).encode(
        y=alt.Y("recall_low:Q", axis=alt.Axis(format="%", title="canary recall"),
                scale=alt.Scale(domain=[0, 1])),
        y2="recall_high:Q",
    )
    line = base.mark_line(point=len(df["step"].unique()) <= MAX_POINTS).encode(
        y="recall:Q",
        strokeDash=alt.condition("indexof(datum.scorer, 'ensemble (') == 0", alt.value([6, 3]),
                                 alt.value([1, 0])),
        tooltip=tooltip,
    )
    return alt.layer(band, line).properties(height=HEIGHT - 40, width=250).facet(
        facet=alt.Facet("category:N", title=None), columns=3)


def safety_margin(margin: pd.DataFrame) -> alt.FacetChart:
    """One scorer: the worst score per checkpoint by prompt set, its threshold (dashed) and the
    band of its scores on known-bad canaries (lowest to median), one panel per category."""
    base = alt.Chart(margin).encode(x=alt.X("step:Q", title="checkpoint (step)"))
    band = base.mark_area(opacity=0.18, color="#d62728").encode(
        y=alt.Y("canary_bad_min:Q", title="score"), y2="canary_bad_median:Q")
    threshold = base.mark_line(strokeDash=[5, 3], color="gray").encode(y="threshold:Q")
    worst = base.mark_line(point=len(margin["step"].unique()) <= MAX_POINTS).encode(
        y="worst_score:Q",
        color=alt.Color("prompt_set:N", title="prompt set",
                        sort=order_prompt_sets(margin["prompt_set"].unique())),
        tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("category:N"), alt.Tooltip("prompt_set:N"),
                 alt.Tooltip("worst_score:Q", format=".3f"), alt.Tooltip("threshold:Q", format=".3f"),
                 alt.Tooltip("margin_to_threshold:Q", format=".3f"),
                 alt.Tooltip("canary_bad_median:Q", format=".3f", title="known-bad median"),
                 alt.Tooltip("margin_to_canaries:Q", format=".3f")],
    )
    return alt.layer(band, threshold, worst).properties(height=HEIGHT - 60, width=250).facet(
        facet=alt.Facet("category:N", title=None), columns=3)
