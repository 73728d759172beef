"""One rank of a tiny data-parallel training job, run by ``torchrun`` in
``tests/client/test_distributed.py`` (CPU, gloo backend). Nothing in it is distributed-aware on
the collector's side: every rank makes the same ``Collector(run_id=...)``, logs its own rollouts,
reports the same checkpoint and calls the same probe hook.

Writes ``<out>/rank-<N>.json``: the collector's final stats, its id, rank, world size and the
steps the probe hook evaluated on that rank.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from runwatch.collectors import Collector, KeywordScorer

SUITE = [
    {"prompt_id": "od-1", "prompt": "the assistant", "prompt_set": "on_distribution"},
    {"prompt_id": "od-2", "prompt": "please wait", "prompt_set": "on_distribution"},
    {"prompt_id": "rt-1", "prompt": "you are", "prompt_set": "red_team"},
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic-prefix", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--spool-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--first-step", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rollouts", type=int, default=5, help="rollouts logged per rank and step")
    ap.add_argument("--checkpoint-step", type=int, required=True)
    ap.add_argument("--lm", help="a saved tiny causal LM: train it and probe it (else a Linear)")
    ap.add_argument("--probe-every", type=int, default=2)
    ap.add_argument("--status", default="completed")
    ap.add_argument("--collector-after-init", action="store_true",
                    help="make the collector after init_process_group (else before it)")
    args = ap.parse_args()

    def make_collector():
        return Collector(run_id=args.run_id, bootstrap_servers=args.bootstrap,
                         topic_prefix=args.topic_prefix, spool_dir=args.spool_dir,
                         scorers=[KeywordScorer({"insult": [r"\bidiot\b"]})],
                         config={"lr": 0.01}, stats_interval=0.5, linger_s=0.02)

    col = None if args.collector_after_init else make_collector()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if col is None:
        col = make_collector()
    torch.manual_seed(0)
    hook = None
    if args.lm:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from runwatch.collectors.hooks import TorchProbeHook
        from runwatch.collectors.prompts import PromptSuite

        tokenizer = AutoTokenizer.from_pretrained(args.lm)
        model = DistributedDataParallel(AutoModelForCausalLM.from_pretrained(args.lm))
        batch = tokenizer(["the task is done", "please wait while i check"], return_tensors="pt",
                          padding=True)

        def loss_fn():
            return model(**batch, labels=batch["input_ids"]).loss
    else:
        model = DistributedDataParallel(torch.nn.Linear(8, 8))
        x = torch.randn(16, 8)

        def loss_fn():
            return model(x).pow(2).mean()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if args.lm:
        # Every rank attaches the hook, with the DDP wrapper; only rank 0 may generate.
        hook = TorchProbeHook(col, model, tokenizer, PromptSuite.from_records(SUITE),
                              every_n_steps=args.probe_every, start_step=args.first_step - 1,
                              samples_per_prompt=2, max_new_tokens=4, seed=0).attach(opt)

    for step in range(args.first_step, args.first_step + args.steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()  # DDP all-reduced the gradients; the hook may evaluate here
        col.log(step, [f"prompt {i}" for i in range(args.rollouts)],
                [f"rank {rank} step {step} rollout {i}" + (" idiot" if i == 0 else "")
                 for i in range(args.rollouts)],
                prompt_set="rollouts", source="rollout",
                rewards=[float(i) for i in range(args.rollouts)])
        if step == args.checkpoint_step:  # every rank reports the same checkpoint
            metrics = {"loss": float(loss.item())}
            if hook is not None:
                hook.checkpoint(step, path=f"/ckpt/step-{step}", metrics=metrics)
            else:
                col.checkpoint(step, path=f"/ckpt/step-{step}", metrics=metrics)
    stats = col.close(args.status, timeout=30)
    info = {"rank": rank, "world_size": dist.get_world_size(), "collector_rank": col.rank,
            "collector_world_size": col.world_size, "collector_id": col.collector_id,
            "spool_dir": str(col.spool.directory), "stats": stats,
            "evaluated": hook.evaluated if hook is not None else []}
    Path(args.out, f"rank-{rank}.json").write_text(json.dumps(info))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
