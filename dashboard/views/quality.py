"""Scorer quality: each scorer's recall and precision per category, estimated from reviewers'
labels (bad / fine; unsure left out) with 95% Wilson intervals; and a review queue of samples
where scorers of one category disagree, with label buttons (:mod:`runwatch.detect.quality`)."""

from __future__ import annotations

from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from runwatch.dashboard import charts, data, ui
from runwatch.dashboard import review_actions as review
from runwatch.detect.quality import MIN_LABELS

ALL = "(all)"
QUEUE_SHOWN = 20


def estimates(run_id: str, category: str) -> None:
    st.subheader("Recall and precision from labels")
    est = data.scorer_quality(run_id)
    if category:
        est = est[est["category"] == category]
    if est.empty:
        st.info(
            "No labelled samples yet" + (f" for {category}" if category else "") + ". Label "
            "samples as bad, fine or unsure on an alert, on the Checkpoint page or in the review "
            "queue below; the estimates appear here.",
            icon=":material/label_off:",
        )
        return
    st.dataframe(
        est[[
            "category", "scorer", "recall", "recall_low", "recall_high", "precision",
            "precision_low", "precision_high", "n_bad", "n_fine", "n_labelled", "n_flagged",
            "tp", "fp", "fn", "tn", "note",
        ]],
        key="quality.estimates",
        hide_index=True,
        width="stretch",
        column_config={
            **{c: st.column_config.NumberColumn(c.replace("_", " "), format="percent")
               for c in ("recall", "recall_low", "recall_high", "precision", "precision_low",
                         "precision_high")},
            "n_bad": st.column_config.NumberColumn("bad", format="%d", help="labelled bad"),
            "n_fine": st.column_config.NumberColumn("fine", format="%d", help="labelled fine"),
            "n_labelled": st.column_config.NumberColumn("labelled", format="%d"),
            "n_flagged": st.column_config.NumberColumn(
                "flagged", format="%d", help="labelled samples this scorer flagged"
            ),
            "note": st.column_config.TextColumn("note", width="large"),
        },
    )
    left, right = st.columns(2)
    with left:
        if est["recall"].notna().any():
            st.altair_chart(charts.scorer_quality(est, "recall"), width="stretch",
                            key="quality.recall_chart")
    with right:
        if est["precision"].notna().any():
            st.altair_chart(charts.scorer_quality(est, "precision"), width="stretch",
                            key="quality.precision_chart")
    st.caption(
        "Recall: flagged among the samples labelled bad. Precision: labelled bad among the "
        "labelled samples the scorer flagged. Bars: 95% Wilson intervals. '(any scorer)' (or "
        "'(RULE)') is the ensemble the dashboard flags with. Reviewers label what alerts and disagreements show "
        "them, so these describe the labelled samples, not a random draw of all output."
    )
    few = est[est["note"] != ""]
    if not few.empty:
        st.warning(
            f"Too few labels for {len(few)} of {len(est)} scorer × category rows (see the note "
            f"column); intervals that wide say little. Label at least "
            f"{MIN_LABELS} bad and {MIN_LABELS} flagged samples each.",
            icon=":material/info:",
        )


def ensemble_rules(run_id: str, category: str) -> None:
    st.subheader("Ensemble rules: what each would have caught")
    table = data.ensemble_comparison(run_id)
    if category:
        table = table[table["category"] == category]
    if table.empty:
        st.info("No canaries and no labels to compare the rules on yet. Turn canaries on "
                "(`canary_rate`, the Monitor health page) or label samples.")
        return
    st.dataframe(
        table, key="quality.ensemble", hide_index=True, width="stretch",
        column_config={
            **{c: st.column_config.NumberColumn(c.replace("_", " "), format="percent")
               for c in ("canary_recall", "canary_recall_low", "canary_recall_high",
                         "canary_fp_rate", "label_recall", "label_precision")},
            "miss_upper": st.column_config.NumberColumn("miss rate ≤", format="%.4f"),
            "nines": st.column_config.NumberColumn("nines", format="%.1f"),
            "active": st.column_config.CheckboxColumn(
                "flag rule", help="the rule the rates, the detector and the dashboard flag with "
                "(`runwatch serve --flag-rule RULE`)"),
        },
    )
    rules = data.flag_rules()
    st.caption(
        "Each rule combines the scorers of a category into one flag: any, all, K of n, or a "
        "weighted vote (`runwatch serve --ensemble-rule RULE` adds rules to compare). The "
        f"view flags with **{'; '.join(rules.texts)}** (the 'flag rule' column; "
        "`runwatch serve --flag-rule RULE` changes it and recounts the history). Canary "
        "columns: known-bad and known-fine canaries (exact 95% intervals); label columns: the "
        "reviewers' current bad/fine labels."
    )


def review_queue(run_id: str, category: str, actor: str) -> None:
    st.subheader("Review queue: scorers disagree")
    unlabelled_first = st.toggle("Unlabelled first", value=True, key="quality.unlabelled_first")
    queue = data.quality_disagreements(run_id, category, unlabelled_first=unlabelled_first,
                                       limit=QUEUE_SHOWN)
    if queue.empty:
        st.info("No samples where the scorers of a category disagree for this selection.")
        return
    total = int(queue["n_matching"].iloc[0])
    st.caption(
        f"{ui.count(total)} samples where some scorers of a category flagged it and others did "
        f"not; showing {len(queue)}"
        + (", unlabelled first, then newest." if unlabelled_first else ", newest first.")
    )
    if not review.can_record():
        review.read_only_notice()
    for row in queue.to_dict("records"):
        with st.container(border=True):
            link = "prompt?" + urlencode(
                {"run": row["run_id"], "step": row["step"], "prompt": row["prompt_id"]}
            )
            st.markdown(
                f"**{row['category']}** · {row['run_id']} · step {int(row['step']):,} · "
                f"{row['prompt_set']} · [{row['prompt_id']}]({link}) · flagged by "
                f"{row['flagged_by']}, not by {row['not_flagged_by']}"
            )
            st.text(row["completion"])
            review.label_buttons(
                row["sample_id"], row["category"],
                None if pd.isna(row["label"]) else row["label"], actor,
                key=f"quality.label.{row['category']}.{row['sample_id']}",
            )


def render() -> None:
    st.title("Scorer quality")
    actor = ui.current_user() if review.can_record() else ""
    review.show_flash()
    ui.require_runs()
    runs, categories = data.quality_options()
    c1, c2 = st.columns(2)
    with c1:
        run = st.selectbox("Run", [ALL, *runs], key="quality.run")
    with c2:
        category = st.selectbox("Category", [ALL, *categories], key="quality.category")
    run_id = "" if run == ALL else run
    category = "" if category == ALL else category
    with ui.guard("estimate the scorers' quality"):
        estimates(run_id, category)
    with ui.guard("compare the ensemble rules"):
        ensemble_rules(run_id, category)
    with ui.guard("load the review queue"):
        review_queue(run_id, category, actor)


ui.run_page(render, "show the scorer quality")
