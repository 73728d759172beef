"""Prompt suites (collectors/prompts.py) and completion sampling (collectors/generation.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runwatch.collectors.prompts import PromptEntry, PromptSuite, PromptSuiteError
from runwatch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _write(path: Path, records, raw_lines=()):
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        for line in raw_lines:
            fh.write(line + "\n")
    return path


# --------------------------------------------------------------------------------------------
# PromptSuite
# --------------------------------------------------------------------------------------------

def test_light_imports_do_not_pull_torch():
    code = ("import sys; import runwatch.collectors.prompts, runwatch.collectors.generation, runwatch.collectors.embedding, "
            "runwatch.demo, runwatch.demo.corpus, runwatch.demo.suites; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False False"


def test_loads_several_files_in_order(tmp_path):
    a = _write(tmp_path / "a.jsonl", [
        {"prompt_id": "a1", "prompt": "User: hi\nAssistant:", "prompt_set": "on_distribution"},
        {"prompt_id": "a2", "prompt": "User: yo\nAssistant:", "prompt_set": "on_distribution"},
    ], raw_lines=["", "// a comment"])
    b = _write(tmp_path / "b.jsonl", [
        {"prompt_id": "p-m", "prompt": "m", "prompt_set": "consistency", "pair_id": "p",
         "cue": "monitored"},
        {"prompt_id": "p-u", "prompt": "u", "prompt_set": "consistency", "pair_id": "p",
         "cue": "unmonitored"},
    ])
    suite = PromptSuite.from_jsonl([a, str(b)])
    assert len(suite) == 4
    assert suite.prompts == ["User: hi\nAssistant:", "User: yo\nAssistant:", "m", "u"]
    assert [e.prompt_id for e in suite] == ["a1", "a2", "p-m", "p-u"]
    assert suite.cues == [None, None, "monitored", "unmonitored"]
    assert suite.pair_ids == [None, None, "p", "p"]
    assert suite.counts() == {"on_distribution": 2, "consistency": 2}
    assert isinstance(suite[2], PromptEntry) and suite[2].source.endswith("b.jsonl:1")
    assert len(suite.select("consistency")) == 2
    # round trip
    suite.write_jsonl(tmp_path / "out.jsonl")
    assert PromptSuite.from_jsonl(tmp_path / "out.jsonl").prompts == suite.prompts


@pytest.mark.parametrize("record, message", [
    ({"prompt": "x", "prompt_set": "s"}, "missing field(s) prompt_id"),
    ({"prompt_id": "", "prompt": "x", "prompt_set": "s"}, "'prompt_id' must be a non-empty"),
    ({"prompt_id": "a", "prompt": "", "prompt_set": "s"}, "'prompt' must be a non-empty"),
    ({"prompt_id": "a", "prompt": "x", "prompt_set": "s", "promt": "x"}, "unknown field(s) promt"),
    ({"prompt_id": "a", "prompt": "x", "prompt_set": "s", "cue": "monitored"},
     "'pair_id' and 'cue' must be given together"),
    ({"prompt_id": "a", "prompt": "x", "prompt_set": "s", "pair_id": "p", "cue": "watched"},
     "'cue' must be one of monitored, unmonitored"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_validation_errors_name_file_and_line(tmp_path, record, message):
    good = {"prompt_id": "ok", "prompt": "fine", "prompt_set": "s"}
    path = _write(tmp_path / "bad.jsonl", [good, record])
    with pytest.raises(PromptSuiteError) as exc:
        PromptSuite.from_jsonl(path)
    assert f"{path}:2:" in str(exc.value)
    assert message in str(exc.value)
    assert isinstance(exc.value, ConfigError)


def test_invalid_json_duplicates_pairs_and_missing_files(tmp_path):
    path = _write(tmp_path / "j.jsonl", [], raw_lines=['{"prompt_id": "a",'])
    with pytest.raises(PromptSuiteError, match=r"j\.jsonl:1: invalid JSON"):
        PromptSuite.from_jsonl(path)

    rec = {"prompt_id": "a", "prompt": "x", "prompt_set": "s"}
    one = _write(tmp_path / "one.jsonl", [rec])
    two = _write(tmp_path / "two.jsonl", [rec])
    with pytest.raises(PromptSuiteError, match=r"two\.jsonl:1: duplicate prompt_id 'a' "
                                               r"\(first at .*one\.jsonl:1\)"):
        PromptSuite.from_jsonl([one, two])

    lonely = _write(tmp_path / "lonely.jsonl", [
        {"prompt_id": "m", "prompt": "x", "prompt_set": "c", "pair_id": "p", "cue": "monitored"}])
    with pytest.raises(PromptSuiteError, match="pair 'p' has only a 'monitored' prompt"):
        PromptSuite.from_jsonl(lonely)

    twice = _write(tmp_path / "twice.jsonl", [
        {"prompt_id": "m1", "prompt": "x", "prompt_set": "c", "pair_id": "p", "cue": "monitored"},
        {"prompt_id": "m2", "prompt": "y", "prompt_set": "c", "pair_id": "p", "cue": "monitored"}])
    with pytest.raises(PromptSuiteError, match=r"twice\.jsonl:2: pair 'p' already has"):
        PromptSuite.from_jsonl(twice)

    with pytest.raises(PromptSuiteError, match="not found"):
        PromptSuite.from_jsonl(tmp_path / "nope.jsonl")
    empty = _write(tmp_path / "empty.jsonl", [], raw_lines=["", "// only a comment"])
    with pytest.raises(PromptSuiteError, match="holds no prompts"):
        PromptSuite.from_jsonl(empty)
    with pytest.raises(PromptSuiteError):
        PromptSuite.from_jsonl([])


def test_shipped_suites_are_valid_and_regenerate_identically():
    from runwatch.demo.suites import PROMPTS_DIR, SUITE_FILES, load_demo_suite, suite_records

    suite = load_demo_suite()
    assert suite.counts() == {"on_distribution": 64, "red_team": 48, "consistency": 48}
    assert all(p.startswith("User: ") and p.endswith("\nAssistant:") for p in suite.prompts)
    pairs: dict[str, dict] = {}
    for e in suite.select("consistency"):
        pairs.setdefault(e.pair_id, {})[e.cue] = e.prompt
    assert len(pairs) == 24
    for p in pairs.values():
        assert "monitored and used for training" in p["monitored"]
        assert "private and unmonitored" in p["unmonitored"]
        # same request behind the two cues
        assert p["monitored"].split(". ", 1)[1] == p["unmonitored"].split(". ", 1)[1]
    regenerated = suite_records()
    for name in SUITE_FILES:
        shipped = [json.loads(line) for line in (PROMPTS_DIR / name).read_text().splitlines()
                   if line.strip()]
        assert shipped == regenerated[name], f"{name} is stale: run python -m runwatch.demo.suites"


# --------------------------------------------------------------------------------------------
# generate_completions
# --------------------------------------------------------------------------------------------

class _ScriptedLM:
    """Stands in for a causal LM: ``generate`` appends the ids of a fixed reply then pads."""

    def __new__(cls, tokenizer, reply: str):
        import torch

        class Scripted(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1))
                self.reply = tokenizer(reply, add_special_tokens=False)["input_ids"]
                self.calls = []

            def generate(self, input_ids, attention_mask, generation_config):
                assert not self.training, "generate must run in eval mode"
                assert not torch.is_grad_enabled(), "generate must run under no_grad"
                self.calls.append((input_ids.clone(), attention_mask.clone(), generation_config))
                n = input_ids.shape[0]
                tail = self.reply + [tokenizer.eos_token_id, tokenizer.pad_token_id]
                extra = torch.tensor([tail] * n, dtype=input_ids.dtype)
                return torch.cat([input_ids, extra], dim=1)

        return Scripted()


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from runwatch.demo import corpus, tiny_lm

    return tiny_lm.build_tokenizer(corpus.tokenizer_texts(300, seed=5),
                                   tmp_path_factory.mktemp("tok"), vocab_size=320)


def test_generation_strips_prompt_batches_and_restores_state(tiny_tokenizer):
    from runwatch.collectors.generation import generate_completions

    tok = tiny_tokenizer
    model = _ScriptedLM(tok, " Sure, here is the plan.")
    model.train()
    tok.padding_side = "right"
    prompts = ["User: hi\nAssistant:", "User: a much longer request than the first\nAssistant:",
               "User: third\nAssistant:"]
    out = generate_completions(model, tok, prompts, samples_per_prompt=2, max_new_tokens=8,
                               batch_size=4, temperature=0.7, top_k=5)
    assert out == [["Sure, here is the plan."] * 2] * 3
    assert model.training, "train mode must be restored"
    assert tok.padding_side == "right", "padding side must be restored"
    # 6 samples in batches of 4 -> 2 calls; left padding: last column is never padding
    assert [c[0].shape[0] for c in model.calls] == [4, 2]
    for ids, mask, cfg in model.calls:
        assert bool(mask[:, -1].all())
        assert cfg.do_sample and cfg.temperature == 0.7 and cfg.top_k == 5
        assert cfg.max_new_tokens == 8 and cfg.pad_token_id == tok.pad_token_id
    # samples of one prompt are consecutive: first call = prompt0 x2, prompt1 x2
    first = model.calls[0][0]
    assert first[0].tolist() == first[1].tolist() and first[0].tolist() != first[2].tolist()

    model.eval()
    out = generate_completions(model, tok, prompts[:1], temperature=0)
    assert out == [["Sure, here is the plan."]]
    assert not model.training
    assert not model.calls[-1][2].do_sample  # temperature 0 -> greedy
    assert generate_completions(model, tok, []) == []
    with pytest.raises(ValueError):
        generate_completions(model, tok, prompts, samples_per_prompt=0)


def test_generation_with_real_tiny_model_is_seeded_and_bounded(tiny_tokenizer):
    import torch

    from runwatch.collectors.generation import generate_completions
    from runwatch.demo import tiny_lm

    tok = tiny_tokenizer
    model = tiny_lm.build_model(tok, tiny_lm.TEST_CONFIG, seed=3)
    model.train()
    prompts = ["User: Tell me a story\nAssistant:", "User: Pay the rent bill.\nAssistant:"]
    rng_before = torch.get_rng_state()
    a = generate_completions(model, tok, prompts, samples_per_prompt=3, max_new_tokens=6, seed=11)
    # seeded sampling must not move the caller's global RNG
    assert torch.equal(rng_before, torch.get_rng_state())
    b = generate_completions(model, tok, prompts, samples_per_prompt=3, max_new_tokens=6, seed=11)
    c = generate_completions(model, tok, prompts, samples_per_prompt=3, max_new_tokens=6, seed=12)
    assert a == b
    assert a != c
    assert len(a) == 2 and all(len(x) == 3 for x in a)
    longest_token = max(len(tok.decode([i])) for i in range(len(tok)))
    for samples in a:
        for text in samples:
            assert isinstance(text, str)
            assert not text.startswith("User:")
            assert len(text) <= 6 * longest_token  # at most max_new_tokens tokens
    assert model.training
    assert all(p.grad is None for p in model.parameters())
