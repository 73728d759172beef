"""Checkpoint: one checkpoint's samples with their scores and flags, filtered and searchable; the
worst examples of the run so far per category; how close unflagged scores came to each threshold."""

from urllib.parse import urlencode

import streamlit as st

from runwatch.dashboard import charts, data, ui
from runwatch.dashboard import review_actions as review

ANY = "(any category)"
FLAG_CHOICES = {"any": "all samples", "flagged": "flagged", "unflagged": "not flagged"}


def prompt_link(run_id: str, step: int, prompt_id: str) -> str:
    return "prompt?" + urlencode({"run": run_id, "step": step, "prompt": prompt_id})


@st.fragment
def samples_section(
    run_id: str, step: int, categories: list[str], prompt_sets: list[str], actor: str = ""
) -> None:
    """Filters and the samples table; a fragment, so filtering reruns only this part (the
    worst-so-far section below reads the whole run and stays as it is)."""
    with ui.guard("load the samples"):
        _samples_section(run_id, step, categories, prompt_sets, actor)


def _samples_section(
    run_id: str, step: int, categories: list[str], prompt_sets: list[str], actor: str
) -> None:
    st.subheader("Samples")
    f1, f2, f3, f4 = st.columns([2, 3, 4, 2])
    with f1:
        category = st.selectbox("Category", [ANY, *categories], key="checkpoint.category")
    with f2:
        chosen_sets = ui.multiselect(
            "Prompt sets", prompt_sets, key="checkpoint.sets", help="Empty: all prompt sets"
        )
    with f3:
        flagged = st.radio(
            "Flag",
            list(FLAG_CHOICES),
            format_func=FLAG_CHOICES.get,
            horizontal=True,
            key="checkpoint.flagged",
        )
    with f4:
        disagree_only = st.toggle(
            "Scorers disagree",
            key="checkpoint.disagree",
            help="Only samples whose scorers did not all agree (in the chosen category, or in any)",
        )
    search = st.text_input(
        "Search prompts and completions", key="checkpoint.search", placeholder="text or prompt id"
    )

    samples = data.checkpoint_samples(
        run_id,
        step,
        category="" if category == ANY else category,
        prompt_sets=chosen_sets,
        flagged=flagged,
        disagree_only=disagree_only,
        search=search,
    )
    if samples.empty:
        st.info("No samples match these filters. Clear the search or widen the filters.")
    else:
        total = int(samples["n_matching"].iloc[0])
        shown = samples.assign(history=[prompt_link(run_id, step, p) for p in samples["prompt_id"]])
        label_column = []
        if category != ANY:  # the reviewers' current label for the chosen category
            labels = data.current_labels(samples["sample_id"], category)
            shown["label"] = [labels.get(i) for i in samples["sample_id"]]
            label_column = ["label"]
        event = st.dataframe(
            shown[
                [
                    "history",
                    "prompt_set",
                    "cue",
                    "completion",
                    "flagged_categories",
                    "disagree_categories",
                    "max_score",
                    "scores",
                    "prompt",
                    "reward",
                    *label_column,
                ]
            ],
            key="checkpoint.samples",
            on_select="rerun",
            selection_mode="single-row",
            hide_index=True,
            width="stretch",
            column_config={
                "history": st.column_config.LinkColumn(
                    "prompt",
                    display_text=r"prompt=([^&]*)$",
                    help="The prompt's completions across checkpoints",
                ),
                "prompt_set": "prompt set",
                "cue": "cue",
                "completion": st.column_config.TextColumn("completion", width="large"),
                "flagged_categories": "flagged",
                "disagree_categories": "scorers disagree",
                "max_score": st.column_config.NumberColumn("highest score", format="%.3f"),
                "scores": st.column_config.TextColumn("scores (scorer score, ⚑ = flagged)"),
                "prompt": st.column_config.TextColumn("prompt text"),
                "reward": st.column_config.NumberColumn("reward", format="%.3f"),
            },
        )
        st.caption(
            f"{ui.count(total)} matching samples"
            + (
                f"; showing the {len(samples):,} with the highest scores"
                if total > len(samples)
                else ""
            )
            + ". Select a row to see its prompt across checkpoints."
        )
        if category != ANY and review.can_record():
            label_section(samples, category, actor, key="checkpoint.label")
        rows = event.selection.rows if event is not None else []
        if rows:
            st.switch_page(
                ui.PAGE_PROMPT,
                query_params={
                    "run": run_id,
                    "step": str(step),
                    "prompt": samples.iloc[rows[0]]["prompt_id"],
                },
            )


def label_section(samples, category: str, actor: str, *, key: str) -> None:
    """Label one of the listed samples (bad / fine / unsure) for ``category``."""
    with st.expander(f"Label samples for {category}", icon=":material/label:"):
        ids = samples["sample_id"].tolist()
        text = dict(zip(ids, samples["prompt_id"] + ": " + samples["completion"].str.slice(0, 90),
                        strict=True))
        chosen = st.selectbox("Sample", ids, format_func=text.get, key=f"{key}.sample")
        if chosen is not None:
            current = data.current_labels([chosen], category).get(chosen)
            review.label_buttons(chosen, category, current, actor, key=f"{key}.{chosen}")


def render() -> None:
    st.title("Checkpoint")
    actor = ui.current_user() if review.can_record() else ""
    review.show_flash()
    run_ids = ui.require_runs()
    c1, c2 = st.columns(2)
    with c1:
        run_id = ui.synced_selectbox("Run", run_ids, key="checkpoint.run", param="run")
    checkpoints = data.run_checkpoints(run_id)
    if checkpoints.empty:
        ui.set_url(run=run_id)
        st.info(
            f"Run {run_id!r} has no checkpoints yet. They appear when the collector logs "
            "samples at a step (`collector.log(step, ...)`) or calls `collector.checkpoint(step)`."
        )
        return
    steps = [int(s) for s in checkpoints["step"]]
    with c2:
        step = ui.synced_selectbox(
            "Checkpoint (step)",
            steps,
            key="checkpoint.step",
            param="step",
            format_func=lambda s: f"{s:,}",
        )
    ui.set_url(run=run_id, step=step)
    st.page_link(
        ui.PAGE_RUN,
        label=f"Back to run {run_id}",
        icon=":material/arrow_back:",
        query_params={"run": run_id},
    )

    counts = data.checkpoint_counts(run_id, step)
    if counts.empty:
        st.info(
            f"No scored samples at step {step:,} of {run_id!r} yet. The checkpoint was "
            "recorded; its samples arrive as the collector scores them."
        )
        return

    samples_here = int(checkpoints.loc[checkpoints["step"] == step, "samples"].iloc[0])
    m = st.columns(4)
    m[0].metric("samples", ui.count(samples_here))
    m[1].metric("flagged (sample × category)", ui.count(counts["n_flagged"].sum()))
    m[2].metric(
        "flagged rate", ui.pct(counts["n_flagged"].sum() / max(1, counts["n_scored"].sum()))
    )
    m[3].metric("scorer disagreements", ui.count(counts["n_disagree"].sum()))
    with st.expander("Flagged rate by category and prompt set", expanded=False):
        st.altair_chart(charts.checkpoint_rates(counts), width="stretch", key="checkpoint.rates")

    samples_section(
        run_id,
        step,
        sorted(counts["category"].unique()),
        sorted(counts["prompt_set"].unique()),
        actor,
    )

    left, right = st.columns(2)
    with left, ui.guard("load the worst examples"):
        st.subheader("Worst so far")
        worst = data.checkpoint_worst(run_id, step, per_category=3)
        if worst.empty:
            st.info("No scores up to this checkpoint.")
        else:
            labels = {
                (cat, sid): value
                for cat, ids in worst.groupby("category")["sample_id"]
                for sid, value in data.current_labels(ids, cat).items()
            }
            worst = worst.assign(
                label=[labels.get(k) for k in zip(worst["category"], worst["sample_id"])]
            )
            st.dataframe(
                worst[["category", "step", "score", "flagged", "prompt_id", "completion", "label"]],
                key="checkpoint.worst",
                hide_index=True,
                width="stretch",
                column_config={
                    "score": st.column_config.NumberColumn(format="%.3f"),
                    "completion": st.column_config.TextColumn(width="large"),
                },
            )
            st.caption(f"Per category, the highest-scoring samples of steps up to {step:,}.")
            if review.can_record():
                with st.expander("Label these samples", icon=":material/label:"):
                    for row in worst.to_dict("records"):
                        st.text(
                            f"{row['category']} · step {row['step']:,} · {row['prompt_id']}: "
                            f"{row['completion'][:200]}"
                        )
                        review.label_buttons(
                            row["sample_id"],
                            row["category"],
                            row["label"],
                            actor,
                            key=f"checkpoint.worst_label.{row['category']}.{row['sample_id']}",
                        )
    with right, ui.guard("load the threshold margins"):
        st.subheader("Margin to threshold")
        margins = data.checkpoint_margins(run_id, step)
        if margins.empty or margins["threshold"].isna().all():
            st.info("No unflagged scores with a threshold at this checkpoint.")
        else:
            st.altair_chart(charts.margins(margins), width="stretch", key="checkpoint.margins")
            st.dataframe(
                margins[
                    [
                        "category",
                        "scorer",
                        "threshold",
                        "max_unflagged_score",
                        "margin",
                        "n_unflagged",
                    ]
                ],
                key="checkpoint.margin_table",
                hide_index=True,
                width="stretch",
                column_config={
                    "max_unflagged_score": st.column_config.NumberColumn(
                        "highest unflagged", format="%.3f"
                    ),
                    "margin": st.column_config.NumberColumn(
                        "margin", format="%.3f", help="threshold − highest unflagged score here"
                    ),
                    "n_unflagged": st.column_config.NumberColumn(
                        "unflagged", format="%d", help="scores below the threshold here"
                    ),
                },
            )
            st.caption(
                "Dot: the highest score a scorer did not flag; red tick: its threshold. "
                "A small margin means samples sit just below the line."
            )


ui.run_page(render, "show the checkpoint page")
