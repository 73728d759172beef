"""Attaching a collector to a training loop: a plain-PyTorch optimizer hook and a Hugging Face
``TrainerCallback``. Both evaluate a prompt suite every N steps and at each checkpoint save.

transformers is imported only when :class:`RunwatchCallback` is first used.

Distributed jobs: attach the hook / callback on every rank as usual. Checkpoints are recorded by
rank 0 and the prompt suite is evaluated on rank 0 only, once per checkpoint (or every N
steps); on the other ranks both are no-ops, and ``evaluated`` stays empty there.
"""

from __future__ import annotations

from typing import Any

from runwatch.collectors.collector import Collector


class TorchProbeHook:
    """Evaluate ``suite`` every ``every_n_steps`` optimizer steps (plain PyTorch).

    ``hook.attach(optimizer)`` registers a step post-hook, so the training loop needs no other
    change; call ``hook.checkpoint(step, path)`` where the job saves a checkpoint.
    ``generate`` holds extra arguments for :meth:`Collector.evaluate`.

    In a distributed job, attach it on every rank: only rank 0 generates (once per
    checkpoint, never once per rank) and records the checkpoint; ``model`` may be the
    ``DistributedDataParallel`` wrapper. The other ranks wait for rank 0 at their next
    collective, as they would for any rank-0-only work.
    """

    def __init__(self, collector: Collector, model: Any, tokenizer: Any, suite: Any, *,
                 every_n_steps: int = 100, start_step: int = 0, **generate: Any):
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        self.collector = collector
        self.model = model
        self.tokenizer = tokenizer
        self.suite = suite
        self.every_n_steps = every_n_steps
        self.step = start_step
        self.generate = generate
        self.evaluated: list[int] = []
        self._handle = None

    def attach(self, optimizer) -> "TorchProbeHook":
        self._handle = optimizer.register_step_post_hook(lambda *_args, **_kw: self.on_step())
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_step(self) -> None:
        self.step += 1
        if self.step % self.every_n_steps == 0:
            self._evaluate(self.step)

    def checkpoint(self, step: int | None = None, path=None, metrics: dict | None = None) -> None:
        step = self.step if step is None else step
        self.collector.checkpoint(step, path=path, metrics=metrics)
        self._evaluate(step)

    def _evaluate(self, step: int) -> None:
        if step in self.evaluated or not self.collector._evaluates_here():
            return
        self.collector.evaluate(step, self.model, self.tokenizer, self.suite, **self.generate)
        self.evaluated.append(step)


def _callback_class():
    from transformers import TrainerCallback

    class _RunwatchCallback(TrainerCallback):
        """Hugging Face Trainer integration; see :class:`RunwatchCallback`."""

        def __init__(self, collector: Collector, tokenizer: Any, suite: Any, *,
                     every_n_steps: int | None = None, evaluate_on_save: bool = True,
                     close_on_train_end: bool = False, **generate: Any):
            self.collector = collector
            self.tokenizer = tokenizer
            self.suite = suite
            self.every_n_steps = every_n_steps
            self.evaluate_on_save = evaluate_on_save
            self.close_on_train_end = close_on_train_end
            self.generate = generate
            self.evaluated: list[int] = []

        def _evaluate(self, step: int, model, state=None) -> None:
            if model is None or step in self.evaluated or not self.collector._evaluates_here():
                return
            if state is not None and not getattr(state, "is_world_process_zero", True):
                return  # the Trainer knows it is not rank 0 even if the environment did not say
            self.collector.evaluate(step, model, self.tokenizer, self.suite, **self.generate)
            self.evaluated.append(step)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if self.every_n_steps and state.global_step % self.every_n_steps == 0:
                self._evaluate(state.global_step, model, state)

        def on_save(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
            self.collector.checkpoint(step, path=f"{args.output_dir}/checkpoint-{step}",
                                      metrics={} if loss is None else {"loss": loss})
            if self.evaluate_on_save:
                self._evaluate(step, model, state)

        def on_train_end(self, args, state, control, **kwargs):
            if self.close_on_train_end:
                self.collector.close("completed")

    return _RunwatchCallback


_CALLBACK = None


def RunwatchCallback(collector: Collector, tokenizer: Any, suite: Any, **kwargs):
    """A ``transformers.TrainerCallback`` that records checkpoints and evaluates ``suite``.

    ``every_n_steps``: also evaluate every N global steps [off]; ``evaluate_on_save`` [True];
    ``close_on_train_end`` [False]; other keyword arguments go to :meth:`Collector.evaluate`.

    Under ``accelerate launch`` / torchrun / DeepSpeed the Trainer calls it on every process:
    checkpoints are recorded and the suite is evaluated on the main process (rank 0) only, once
    per save, never once per rank.
    """
    global _CALLBACK
    if _CALLBACK is None:
        try:
            _CALLBACK = _callback_class()
        except ImportError as exc:
            raise ImportError("RunwatchCallback needs transformers: pip install transformers") from exc
    return _CALLBACK(collector, tokenizer, suite, **kwargs)
