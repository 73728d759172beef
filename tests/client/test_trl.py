"""TRL integration: a real GRPOTrainer (tiny causal LM built locally, CPU) with the collector
attached, through the real broker into a real DuckDB file; and the reward wrapper on its own."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import string
from collections import Counter

import pytest

from runwatch.collectors import Collector
from runwatch.collectors.trl import RunwatchGRPO
from tests.helpers import ingest_until_idle, query

PROMPTS = ["the assistant", "please wait", "you are", "the task"]
STEPS, PROMPTS_PER_STEP, GENERATIONS = 3, 2, 4
WEIGHTS = [1.0, 0.5]


def _letters(text: str) -> float | None:
    """Share of ASCII letters in the text; None (TRL: "not applicable") when there are none."""
    n = sum(c in string.ascii_letters for c in text)
    return n / len(text) if n else None


class _FakeCollector:
    def __init__(self):
        self.calls, self.checkpoints = [], []

    def log(self, step, prompts, completions, **kw):
        self.calls.append((step, list(prompts), list(completions), kw))
        return len(completions)

    def checkpoint(self, step, **kw):
        self.checkpoints.append((step, kw))


def test_wrapped_reward_functions_keep_results_and_names_and_log_each_batch_once():
    def length(completions, **kw):
        return [len(c) for c in completions]

    async def judge(prompts, completions, **kw):
        await asyncio.sleep(0)
        return [None if c == "x" else 1.0 for c in completions]

    class Shaped:
        def __call__(self, completions, scale, **kw):
            return [float("nan") if c == "" else scale for c in completions]

    fake = _FakeCollector()
    rw = RunwatchGRPO(fake, [length, judge, functools.partial(Shaped(), scale=2.0), length],
                      reward_weights=[1.0, 2.0, 0.5, 0.0])
    f_length, f_judge, f_shaped, f_length2 = rw.reward_funcs
    # TRL names reward metrics after __name__ (partials unwrapped) and awaits coroutines.
    assert [f.__name__ for f in rw.reward_funcs] == ["length", "judge", "Shaped", "length_2"]
    assert rw.names == ["length", "judge", "Shaped", "length_2"]
    assert asyncio.iscoroutinefunction(f_judge) and not asyncio.iscoroutinefunction(f_length)

    class State:
        global_step = 7

    prompts, completions = ["p1", "p1", "p2"], ["abc", "x", ""]
    kw = dict(prompts=prompts, completions=completions, completion_ids=[[1], [2], [3]],
              trainer_state=State(), id=["a", "a", "b"])
    assert f_length(**kw) == [3, 1, 0]
    assert asyncio.run(f_judge(**kw)) == [1.0, None, 1.0]
    assert fake.calls == []  # not before every reward function has scored the batch
    out = f_shaped(**kw)
    assert out[:2] == [2.0, 2.0] and math.isnan(out[2])
    f_length2(**kw)
    assert rw.batches == 1 and rw.offered == 3
    rows = sorted((p, c, kw["rewards"][i], kw["prompt_ids"][i], kw["meta"]["rewards"], step)
                  for step, ps, cs, kw in fake.calls for i, (p, c) in enumerate(zip(ps, cs)))
    assert rows == [
        ("p1", "abc", 3 + 2 + 1, "a", {"length": 3.0, "judge": 1.0, "Shaped": 2.0, "length_2": 3.0}, 7),
        ("p1", "x", 1 + 1, "a", {"length": 1.0, "judge": None, "Shaped": 2.0, "length_2": 1.0}, 7),
        ("p2", "", 0 + 2, "b", {"length": 0.0, "judge": 1.0, "Shaped": None, "length_2": 0.0}, 7)]
    assert {kw["source"] for *_, kw in fake.calls} == {"rollout"}

    # Conversational prompts and completions are logged as text; no id column: a prompt hash.
    fake.calls.clear()
    only = RunwatchGRPO(fake, length)
    conv = dict(prompts=[[{"role": "user", "content": "hi"}]] * 2,
                completions=[[{"role": "assistant", "content": "hello"}],
                             [{"role": "assistant", "content": [{"type": "text", "text": "yo"}]}]])
    only.reward_funcs[0](**conv)
    _step, ps, cs, kw = fake.calls[-1]
    assert ps == ["hi", "hi"] and cs == ["hello", "yo"] and _step == 0
    assert kw["prompt_ids"][0] == kw["prompt_ids"][1]
    assert kw["prompt_ids"][0].startswith("p-")

    with pytest.raises(TypeError, match="reward model"):
        RunwatchGRPO(fake, ["some/reward-model"])
    with pytest.raises(ValueError, match="2 weights for 1"):
        RunwatchGRPO(fake, length, reward_weights=[1, 2])


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("sample_rate", [1.0, 0.5])
def test_grpo_rollouts_and_checkpoints_land_in_duckdb(tmp_path, bootstrap, topic_prefix,
                                                      sample_rate):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tests.tiny_models import build_causal_lm

    build_causal_lm(tmp_path / "lm")  # saved, then loaded by the trainer from its directory
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")

    computed = []  # what the reward functions returned, with the step TRL gave them

    def length_reward(completions, trainer_state, **kw):
        values = [len(c) / 10 for c in completions]
        computed.append(("length_reward", trainer_state.global_step, list(completions), values))
        return values

    def letters_reward(prompts, completions, trainer_state, **kw):
        values = [_letters(c) for c in completions]
        computed.append(("letters_reward", trainer_state.global_step, list(completions), values))
        return values

    run_id = f"grpo-{int(sample_rate * 100)}"
    collector = Collector(run_id=run_id, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                          sample_rate=sample_rate, seed=3, spool_dir=tmp_path / "spool")
    rw = RunwatchGRPO(collector, [length_reward, letters_reward], close_on_train_end=True)
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[],
                      num_generations=GENERATIONS, max_completion_length=8,
                      per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS, max_steps=STEPS,
                      save_strategy="steps", save_steps=2, reward_weights=WEIGHTS,
                      logging_steps=1, disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, args=args,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
                          reward_funcs=rw.reward_funcs, callbacks=[rw.callback])
    assert trainer.reward_func_names == ["length_reward", "letters_reward"]
    trainer.train()

    n_generated = STEPS * PROMPTS_PER_STEP * GENERATIONS
    stats = collector.stats()  # closed at the end of training
    assert rw.batches == STEPS and rw.offered == n_generated == stats["offered"]
    assert rw.weights == WEIGHTS  # read from GRPOConfig.reward_weights
    assert stats["dropped"] == 0 and stats["sent"] == stats["sampled"]
    if sample_rate == 1.0:
        assert stats["sampled"] == n_generated
    else:
        assert 0 < stats["sampled"] < n_generated

    # Expected rows, from what the reward functions computed: (step, completion) -> rewards.
    by_func = {}
    for name, step, completions, values in computed:
        by_func.setdefault(name, []).append((step, completions, values))
    assert [s for s, *_ in by_func["length_reward"]] == list(range(STEPS))
    expected = Counter()
    for (step, completions, lengths), (_, _, letters) in zip(by_func["length_reward"],
                                                             by_func["letters_reward"]):
        for c, a, b in zip(completions, lengths, letters):
            total = a + (0.0 if b is None else WEIGHTS[1] * b)
            expected[(step, c, a, b, round(total, 12))] += 1

    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    stored = query(db, """
        SELECT step, completion, (meta->'rewards'->>'length_reward')::DOUBLE,
               (meta->'rewards'->>'letters_reward')::DOUBLE, reward, source, prompt_set, prompt
        FROM samples WHERE run_id = ?""", [run_id])
    assert len(stored) == stats["sampled"]
    assert {(r[5], r[6]) for r in stored} == {("rollout", "rollouts")}
    assert {r[7] for r in stored} <= set(PROMPTS)
    got = Counter((s, c, a, b, round(t, 12)) for s, c, a, b, t, *_ in stored)
    assert got - expected == Counter()  # every stored sample carries the rewards computed for it
    if sample_rate == 1.0:
        assert got == expected
        assert query(db, "SELECT step, count(*) FROM samples GROUP BY 1 ORDER BY 1") == [
            (s, PROMPTS_PER_STEP * GENERATIONS) for s in range(STEPS)]
    # Long form: one row per sample and reward function.
    assert query(db, """
        SELECT r.key, count(*) FROM samples s, json_each(s.meta->'rewards') r
        WHERE s.source = 'rollout' GROUP BY 1 ORDER BY 1""") == [
        ("length_reward", len(stored)), ("letters_reward", len(stored))]
    # A checkpoint at each save (step 2, and the trainer's final save at step 3), with the
    # trainer's loss and reward; the view adds path-less rows for the steps the samples have.
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "out").glob("checkpoint-*"))
    assert 2 in saved
    ckpts = query(db, "SELECT step, path, metrics FROM checkpoints WHERE run_id = ? AND path IS"
                      " NOT NULL ORDER BY step", [run_id])
    assert [(s, p) for s, p, _ in ckpts] == [(s, f"{tmp_path / 'out'}/checkpoint-{s}") for s in saved]
    for *_, metrics in ckpts:
        metrics = metrics if isinstance(metrics, dict) else json.loads(metrics)
        assert set(metrics) == {"loss", "reward"}
    assert query(db, "SELECT status FROM runs WHERE run_id = ?", [run_id]) == [("completed",)]
