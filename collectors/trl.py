"""TRL integration: log a ``GRPOTrainer``'s rollouts (with their rewards) and its checkpoints.

Attach it in two lines::

    rw = RunwatchGRPO(collector, [accuracy_reward, format_reward])
    trainer = GRPOTrainer(model=..., args=config, train_dataset=ds,
                          reward_funcs=rw.reward_funcs, callbacks=[rw.callback])

``rw.reward_funcs`` are the same reward functions, wrapped: each returns what the original
returns (TRL sees the same names, so its ``rewards/<name>/mean`` metrics keep their names), and
once every function has scored a generation batch, the batch's completions are offered to
:meth:`Collector.log` as rollouts (``source="rollout"``, ``prompt_set="rollouts"``), sampled
at the collector's ``sample_rate``. The step of a sample is the trainer's ``global_step`` when
it was generated (the number of optimizer steps the generating weights had taken).

Rewards, for each stored sample:

- ``reward``: the total reward, as TRL sums it: ``sum(weight_i * reward_i)`` over the reward
  functions that returned a number (``GRPOConfig.reward_weights``, read by the callback at
  ``on_train_begin``; all 1 without it); null when none did.
- ``meta.rewards``: ``{"<function name>": reward or null, ...}``, each function's own
  (unweighted) reward. In the view it is the ``samples.meta`` JSON column::

      SELECT step, avg((meta->'rewards'->>'format_reward')::DOUBLE) FROM samples
      WHERE source = 'rollout' GROUP BY step ORDER BY step;
      -- long form: one row per sample and reward function
      SELECT s.sample_id, r.key AS reward_func, r.value::DOUBLE AS reward
      FROM samples s, json_each(s.meta->'rewards') r WHERE s.source = 'rollout';

  They are not sent as ``scores``: a score means "higher is worse" and drives the flag rates,
  the alerts and the worst-sample lists, which a reward must not enter.

``rw.callback`` (a ``transformers.TrainerCallback``) records a checkpoint at every save
(:meth:`Collector.checkpoint`, with the last logged ``loss`` and ``reward`` as metrics).

Reward models (``nn.Module`` / a model id string) cannot be wrapped: score with a function that
calls the model. Rewards that an ``environment_factory`` adds are not part of the total.
In a distributed job, every rank logs the completions it generated (TRL calls the reward
functions on each rank's share); the checkpoints come from rank 0 only.

transformers is imported when ``callback`` is first used; trl itself is never imported here.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import math
import sys
import threading
from typing import Any, Callable, Sequence

from runwatch.collectors.collector import Collector

log = logging.getLogger("runwatch.trl")

MAX_TEXT = 65536  # wire schema: prompt / completion maxLength
MAX_ID = 200  # wire schema: id maxLength
_MAX_PENDING = 16  # generation batches waiting for their last reward function (a bound, never hit)


class RunwatchGRPO:
    """Wrap GRPO reward functions so that every generation batch is logged as rollouts.

    - ``collector``: the run's :class:`Collector` (its ``sample_rate`` decides what is kept).
    - ``reward_funcs``: the reward function(s) to give ``GRPOTrainer`` (plain or async
      callables, ``functools.partial`` or callable objects).
    - ``prompt_set``: prompt set of the samples [``"rollouts"``].
    - ``reward_weights``: weights of the total reward [None: ``GRPOConfig.reward_weights`` when
      the callback is attached, else 1 each].
    - ``prompt_id_key``: dataset column holding the prompt id [None: the ``prompt_id`` or
      ``id`` column when the dataset has one, else a hash of the prompt text, so that one
      prompt keeps one id across steps].
    - ``record_checkpoints``: the callback records a checkpoint at each save [True]; turn it off
      when a :class:`~runwatch.collectors.hooks.RunwatchCallback` records them already.
    - ``close_on_train_end``: the callback closes the collector when training ends [False].

    ``batches`` counts the generation batches logged and ``offered`` their completions.
    """

    def __init__(self, collector: Collector, reward_funcs: Callable | Sequence[Callable], *,
                 prompt_set: str = "rollouts", reward_weights: Sequence[float] | None = None,
                 prompt_id_key: str | None = None, record_checkpoints: bool = True,
                 close_on_train_end: bool = False):
        funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if not funcs:
            raise ValueError("RunwatchGRPO needs at least one reward function")
        for f in funcs:
            if isinstance(f, str) or not callable(f) or _is_module(f):
                raise TypeError(
                    f"RunwatchGRPO wraps reward functions, not {type(f).__name__} ({f!r:.80}); "
                    f"for a reward model, pass a function that scores with it")
        self.collector = collector
        self.prompt_set = prompt_set
        self.prompt_id_key = prompt_id_key
        self.record_checkpoints = record_checkpoints
        self.close_on_train_end = close_on_train_end
        self.names = _unique([_callable_name(f) for f in funcs])
        self._weights: list[float] | None = None
        if reward_weights is not None:
            self._set_weights(reward_weights, "reward_weights")
        self._explicit_weights = reward_weights is not None
        self._lock = threading.Lock()
        self._pending: list[dict] = []
        self._step = 0  # fallback when TRL passes no trainer_state
        self._callback = None
        self.batches = 0
        self.offered = 0
        self.reward_funcs = [self._wrap(i, f) for i, f in enumerate(funcs)]

    # ------------------------------------------------------------------ public
    @property
    def weights(self) -> list[float]:
        return list(self._weights) if self._weights is not None else [1.0] * len(self.names)

    @property
    def callback(self):
        """The ``TrainerCallback`` to pass in ``GRPOTrainer(callbacks=[...])`` (one per object)."""
        if self._callback is None:
            self._callback = _callback_class()(self)
        return self._callback

    # ------------------------------------------------------------------ wrapping
    def _wrap(self, index: int, func: Callable) -> Callable:
        if _is_async(func):
            async def wrapped(*args, **kwargs):
                out = await func(*args, **kwargs)
                self._record(index, out, kwargs)
                return out
        else:
            def wrapped(*args, **kwargs):
                out = func(*args, **kwargs)
                self._record(index, out, kwargs)
                return out
        try:
            functools.update_wrapper(wrapped, func)
        except (AttributeError, TypeError):  # a callable object: no __name__ to copy
            pass
        wrapped.__name__ = self.names[index]  # TRL names its reward metrics after it
        wrapped.__qualname__ = self.names[index]
        wrapped.__wrapped__ = func
        return wrapped

    def _record(self, index: int, out, kwargs: dict) -> None:
        """One reward function scored a batch; log the batch once all of them have."""
        try:
            completions = kwargs.get("completions")
            if completions is None:
                return
            values = [_number(v) for v in out]
            with self._lock:
                entry = next((e for e in self._pending if e["completions"] is completions), None)
                if entry is None:
                    entry = {"completions": completions, "kwargs": kwargs, "rewards": {}}
                    self._pending.append(entry)
                    del self._pending[:-_MAX_PENDING]
                entry["rewards"][index] = values
                if len(entry["rewards"]) < len(self.names):
                    return
                self._pending.remove(entry)
            self._log(entry["kwargs"], entry["rewards"])
        except Exception as exc:  # logging must never stop training
            log.warning("runwatch: could not log a GRPO batch: %r", exc)

    def _log(self, kwargs: dict, rewards: dict[int, list]) -> None:
        completions = [_text(c) for c in kwargs["completions"]]
        n = len(completions)
        prompts = [_text(p) for p in kwargs.get("prompts") or [""] * n]
        if len(prompts) != n or any(len(v) != n for v in rewards.values()):
            raise ValueError(f"{len(prompts)} prompts, {n} completions and reward lists of "
                             f"{sorted({len(v) for v in rewards.values()})} items")
        state = kwargs.get("trainer_state")
        step = int(getattr(state, "global_step", self._step) or 0)
        ids = self._prompt_ids(kwargs, prompts)
        weights = self.weights
        per_func = [[rewards[k][i] for k in range(len(self.names))] for i in range(n)]
        totals = [_total(row, weights) for row in per_func]
        # One log() call per distinct set of per-function rewards (the meta is one per call);
        # rewards are often few distinct values, so this is a handful of calls per batch.
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(per_func):
            groups.setdefault(tuple(row), []).append(i)
        for row, idx in groups.items():
            self.collector.log(
                step, [prompts[i] for i in idx], [completions[i] for i in idx],
                prompt_set=self.prompt_set, prompt_ids=[ids[i] for i in idx],
                rewards=[totals[i] for i in idx], source="rollout",
                meta={"rewards": dict(zip(self.names, row))})
        self.batches += 1
        self.offered += n

    def _prompt_ids(self, kwargs: dict, prompts: list[str]) -> list[str]:
        keys = [self.prompt_id_key] if self.prompt_id_key else ["prompt_id", "id"]
        for key in keys:
            column = kwargs.get(key)
            if isinstance(column, (list, tuple)) and len(column) == len(prompts):
                return [str(v)[:MAX_ID] or "-" for v in column]
        return ["p-" + hashlib.sha1(p.encode("utf-8", "replace")).hexdigest()[:16] for p in prompts]

    def _set_weights(self, weights: Sequence[float], where: str) -> None:
        weights = [float(w) for w in weights]
        if len(weights) != len(self.names):
            raise ValueError(f"{where} has {len(weights)} weights for {len(self.names)} reward "
                             f"functions")
        self._weights = weights

    # ------------------------------------------------------------------ callback events
    def _train_begin(self, args, state) -> None:
        if not self._explicit_weights and getattr(args, "reward_weights", None) is not None:
            self._set_weights(args.reward_weights, "GRPOConfig.reward_weights")
        self._step = state.global_step

    def _save(self, args, state) -> None:
        if not self.record_checkpoints:
            return
        if not getattr(state, "is_world_process_zero", True):
            return
        step = state.global_step
        metrics = {}
        for key in ("loss", "reward"):
            value = next((h[key] for h in reversed(state.log_history) if key in h), None)
            value = _number(value)
            if value is not None:
                metrics[key] = value
        self.collector.checkpoint(step, path=f"{args.output_dir}/checkpoint-{step}", metrics=metrics)


def _callback_class():
    global _CALLBACK
    if _CALLBACK is None:
        try:
            from transformers import TrainerCallback
        except ImportError as exc:
            raise ImportError("RunwatchGRPO.callback needs transformers: pip install trl") from exc

        class RunwatchGRPOCallback(TrainerCallback):
            """Checkpoints at saves and the reward weights; see :class:`RunwatchGRPO`."""

            def __init__(self, owner: RunwatchGRPO):
                self.owner = owner

            def on_train_begin(self, args, state, control, **kwargs):
                self.owner._train_begin(args, state)

            def on_step_begin(self, args, state, control, **kwargs):
                self.owner._step = state.global_step

            def on_save(self, args, state, control, **kwargs):
                self.owner._save(args, state)

            def on_train_end(self, args, state, control, **kwargs):
                if self.owner.close_on_train_end:
                    self.owner.collector.close("completed")

        _CALLBACK = RunwatchGRPOCallback
    return _CALLBACK


_CALLBACK = None


# ---------------------------------------------------------------------- helpers
def _callable_name(func) -> str:
    """The name TRL gives a reward function (``trl.trainer.utils.get_callable_name``)."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, k = name, 1
        while candidate in out:
            k += 1
            candidate = f"{name}_{k}"
        out.append(candidate)
    return out


def _is_async(func) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None))


def _is_module(func) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(func, torch.nn.Module)


def _number(value) -> float | None:
    """A finite float, or None (None, NaN, infinities and anything not a number)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _total(row: list, weights: list[float]) -> float | None:
    terms = [w * v for w, v in zip(weights, row) if v is not None]
    return math.fsum(terms) if terms else None


def _text(value: Any) -> str:
    """A prompt or completion as text: a string, or a conversation (list of messages)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        text = _content(value.get("content"))
    elif isinstance(value, (list, tuple)):
        if all(isinstance(m, dict) and "role" in m for m in value):
            if len(value) == 1:
                text = _content(value[0].get("content"))
            else:
                text = "\n".join(f"{m['role']}: {_content(m.get('content'))}" for m in value)
        else:
            text = "".join(_text(v) for v in value)
    else:
        text = "" if value is None else str(value)
    return text[:MAX_TEXT]


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # content blocks: [{"type": "text", "text": ...}]
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content)
