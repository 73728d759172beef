"""Prompt history: one prompt's completions across checkpoints, side by side, with the first
checkpoint where it was flagged."""

import pandas as pd
import streamlit as st

from runwatch.dashboard import charts, data, ui


def completion_card(row: pd.Series, title: str) -> None:
    st.markdown(f"**{title}: step {int(row['step']):,}**")
    flags = row["flagged_categories"]
    if flags:
        st.badge(f"flagged: {flags}", icon=":material/flag:", color="red")
    else:
        st.badge("not flagged", icon=":material/check:", color="green")
    st.text(row["completion"])
    st.caption(row["scores"] or "no scores")


@st.fragment
def side_by_side(prompt_id: str, history: pd.DataFrame, first: int | None) -> None:
    """Two checkpoints' completions next to each other; a fragment, so picking another
    checkpoint reruns only this part, not the history query."""
    st.subheader("Side by side")
    sampled = sorted(history["step"].unique().tolist())
    if first is not None and sampled.index(first) > 0:
        default_left, default_right = sampled[sampled.index(first) - 1], first
    else:
        default_left, default_right = sampled[0], sampled[-1]
    s1, s2 = st.columns(2)
    with s1:
        left = st.selectbox(
            "Left",
            sampled,
            index=sampled.index(default_left),
            key=f"prompt.left.{prompt_id}",
            format_func=lambda s: f"step {s:,}",
        )
        for _, row in history[history["step"] == left].iterrows():
            completion_card(row, "Before" if first is not None and left < first else "Step")
    with s2:
        right = st.selectbox(
            "Right",
            sampled,
            index=sampled.index(default_right),
            key=f"prompt.right.{prompt_id}",
            format_func=lambda s: f"step {s:,}",
        )
        for _, row in history[history["step"] == right].iterrows():
            completion_card(row, "First flagged" if right == first else "Step")


def render() -> None:
    st.title("Prompt history")
    run_ids = ui.require_runs()
    c1, c2, c3 = st.columns([2, 1, 3])
    with c1:
        run_id = ui.synced_selectbox("Run", run_ids, key="prompt.run", param="run")
    checkpoints = data.run_checkpoints(run_id)
    steps = [int(s) for s in checkpoints.loc[checkpoints["samples"] > 0, "step"]]
    if not steps:
        ui.set_url(run=run_id)
        st.info(f"Run {run_id!r} has no samples yet.")
        return
    with c2:
        step = ui.synced_selectbox(
            "Prompts of checkpoint",
            steps,
            key="prompt.step",
            param="step",
            format_func=lambda s: f"step {s:,}",
            help="Where to pick the prompt from (probe prompts recur at every checkpoint)",
        )
    with c3:
        search = st.text_input(
            "Find a prompt", key="prompt.search", placeholder="prompt id or text"
        )
    found = data.prompt_search(run_id, step, search)
    options = found["prompt_id"].tolist()
    incoming = ui.incoming_param("prompt")
    if incoming and incoming not in options:  # a link to a prompt not listed here: keep it
        options.insert(0, incoming)
    if not options:
        ui.set_url(run=run_id, step=step)
        st.info(
            f"No prompt of step {step:,} matches {search!r}. Clear the search box or pick "
            "another checkpoint."
        )
        return
    texts = dict(zip(found["prompt_id"], found["prompt"], strict=True))
    prompt_id = ui.synced_selectbox(
        "Prompt",
        options,
        key="prompt.prompt",
        param="prompt",
        format_func=lambda p: f"{p} — {_short(texts.get(p, ''))}" if p in texts else p,
    )
    ui.set_url(run=run_id, step=step, prompt=prompt_id)

    history, scores = data.prompt_history(run_id, prompt_id)
    if history.empty:
        st.info(
            f"Prompt {prompt_id!r} has no samples in run {run_id!r}. Pick a prompt from the "
            "list, or open this page from a sample on the Checkpoint page."
        )
        return
    first = data.first_flagged_step(history)
    by_category = data.first_flagged_by_category(scores)

    first_row = history.iloc[0]
    st.markdown(
        f"**{prompt_id}** · {first_row['prompt_set']}"
        + (f" · cue {first_row['cue']} · pair {first_row['pair_id']}" if first_row["cue"] else "")
    )
    st.text(first_row["prompt"])
    m = st.columns(3)
    m[0].metric("checkpoints", ui.count(history["step"].nunique()))
    m[1].metric("first flagged at step", "never" if first is None else f"{first:,}")
    m[2].metric(
        "flagged checkpoints",
        ui.count(history.loc[history["flagged"].astype(bool), "step"].nunique()),
    )
    if by_category:
        st.caption(
            "First flagged, by category: "
            + ", ".join(
                f"{c} at step {s:,}" for c, s in sorted(by_category.items(), key=lambda kv: kv[1])
            )
        )

    st.altair_chart(charts.prompt_scores(scores, first), width="stretch", key="prompt.chart")
    st.caption(
        "Highest score per category at each checkpoint; filled: flagged by a scorer; "
        "dashed: the first flagged checkpoint."
    )

    side_by_side(prompt_id, history, first)

    st.subheader("Every checkpoint")
    st.dataframe(
        history[
            [
                "step",
                "completion",
                "flagged_categories",
                "disagree_categories",
                "max_score",
                "scores",
                "reward",
            ]
        ],
        key="prompt.table",
        hide_index=True,
        width="stretch",
        column_config={
            "step": st.column_config.NumberColumn("step", format="%d"),
            "completion": st.column_config.TextColumn("completion", width="large"),
            "flagged_categories": "flagged",
            "disagree_categories": "scorers disagree",
            "max_score": st.column_config.NumberColumn("highest score", format="%.3f"),
            "reward": st.column_config.NumberColumn("reward", format="%.3f"),
        },
    )


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


ui.run_page(render, "show the prompt history")
