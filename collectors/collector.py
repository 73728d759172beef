"""The collector: attach to a training job, sample its outputs, score them, stream them to Kafka.

The training thread only pays for a sampling decision and an append to a bounded in-memory
queue (``log`` never waits on the network, the scorers or the disk). A background thread
scores, batches, encodes and produces. While the broker is unreachable, messages go to a
local spool directory (up to ``spool_max_bytes``) and are resent, oldest first, once the broker
answers again. Every record that is lost is counted by reason and reported in a
``collector_stats`` run event and by :meth:`Collector.stats`; run events (start, checkpoints,
end) are spooled like samples, and one that is lost is counted too (``events_lost``).

A slow broker is not a down broker. Messages wait for their acknowledgement up to
``delivery_timeout_ms`` (120 s) and the bytes in flight are bounded (``max_inflight_bytes``):
past the bound the background thread waits for acknowledgements (back-pressure; the training
thread still never waits, its queue absorbs the difference). Only when nothing has been
acknowledged for ``down_after_s`` and no bootstrap address accepts a TCP connection is the
broker "down": what is in flight then goes to the spool at once (a copy that the broker still
writes later is a duplicate the view ignores: sample and event ids are unique).

A collector that cannot start its Kafka producer at all (kafka-python not importable, a codec
library missing, a setting the producer refuses) says so once with a :class:`CollectorWarning`
naming the fix, and keeps every record in the spool; the next collector of the run that can
produce (same ``spool_dir``) sends them.

Distributed jobs (torchrun, ``accelerate launch``, DeepSpeed, SLURM, an initialised
``torch.distributed``; see :mod:`runwatch.collectors.distributed`) need no change: every rank's
``Collector(run_id=...)`` is part of one run. Rank 0 alone records the run's start, its
checkpoints and its end, and runs prompt-suite evaluation; every rank logs its own samples
(sample ids carry the rank) and reports its own ``collector_stats``, which the view sums.
Each rank spools to its own ``rank-<N>`` folder under ``spool_dir``. A job restarted with the
same run id continues the run: the view counts the restart (``runs.restarts``).
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from runwatch.collectors import distributed, wire
from runwatch.collectors.canaries import CanaryMixer, CanarySuite
from runwatch.collectors.errors import CollectorWarning
from runwatch.collectors.kafka_config import ErrorTrap, explain_failure, security_options
from runwatch.collectors.scoring import Scorer
from runwatch.collectors.spool import Spool, SpoolError

log = logging.getLogger("runwatch.collector")

DEFAULT_SPOOL_ROOT = Path(os.environ.get("RUNWATCH_SPOOL_DIR", Path.home() / ".cache" / "runwatch" / "spool"))
DROP_REASONS = ("queue_full", "spool_full", "spool_error", "encode_error", "close_timeout")
# compression codec -> (kafka.codec check, the package that provides it)
_CODECS = {"gzip": ("has_gzip", None), "lz4": ("has_lz4", "lz4"),
           "zstd": ("has_zstd", "zstandard"), "snappy": ("has_snappy", "python-snappy")}


class Collector:
    """Stream a training run's sampled outputs and their scores to Kafka.

    Keyword-only arguments (defaults in brackets):

    - ``run_id``: unique id of the training run.
    - ``bootstrap_servers``: Kafka address(es), e.g. ``"127.0.0.1:9092"`` [env RUNWATCH_BOOTSTRAP].
    - ``topic_prefix``: topics are ``<prefix>.samples`` and ``<prefix>.runs`` [``runwatch``].
    - ``scorers``: :class:`~runwatch.collectors.scoring.Scorer` objects run on every kept sample [none].
    - ``sample_rate``: share of outputs passed to :meth:`log` that are kept [1.0].
    - ``config`` / ``metadata``: dicts stored with the run (hyper-parameters; project, model...).
    - ``spool_dir``: where messages wait while the broker is down
      [``$RUNWATCH_SPOOL_DIR/<run_id>``, default ``~/.cache/runwatch/spool/<run_id>``]; in a
      distributed job each rank uses its own sub-folder ``rank-<N>``.
    - ``spool_max_bytes``: spool size limit; beyond it records are dropped and counted [256 MiB].
    - ``max_queue_samples``: bound of the in-memory queue; beyond it records are dropped [100000].
    - ``batch_max_records``: records per Kafka message [500]; ``linger_s``: max wait to fill one [0.05].
    - ``compression``: Kafka compression codec: ``lz4``, ``zstd``, ``snappy``, ``gzip`` or None
      [``lz4``]. One that is unknown or whose library is missing is reported once (a
      :class:`CollectorWarning`) and records are spooled, never lost.
    - ``close_timeout``: seconds :meth:`close` waits for the flush [10]; what is still unacknowledged
      then is spooled, not lost.
    - ``max_inflight_bytes`` / ``max_inflight_messages``: bytes / messages sent but not yet
      acknowledged before the background thread waits for the broker [16 MiB / 5]. The message
      bound matters while the broker does not answer: with more messages handed over than the
      producer may have requests in flight (5), kafka-python's sender thread spins over the
      waiting batches holding the GIL, and the training thread waits for it (measured: 70-230 ms
      around ``log()`` during an 8 s freeze with no bound, 0.2 ms with this one).
    - ``down_after_s``: seconds without any acknowledgement, with messages in flight, after
      which the broker is probed; only an unreachable broker is treated as down [5].
    - ``stats_interval``: seconds between ``collector_stats`` events [10].
    - ``seed``: seed of the sampling decision [None: random].
    - ``kafka_options``: kafka-python producer settings (security: ``security_protocol``,
      ``sasl_mechanism``, ``sasl_plain_username``, ``ssl_cafile``...) [None: the security
      settings of ``RUNWATCH_KAFKA_CONFIG`` / ``RUNWATCH_KAFKA_*``, see
      :mod:`runwatch.collectors.kafka_config`; a dict is used as given].
    - ``canaries``: a canary suite (:class:`~runwatch.collectors.canaries.CanarySuite`, a JSONL
      path, or a list of canaries) of known-bad and known-fine completions mixed into the
      scored stream, so the view measures the scorers' misses live [None: no canaries]; see
      :mod:`runwatch.collectors.canaries`.
    - ``canary_rate``: canaries per kept sample, in (0, 1] [0.01 with ``canaries``]. They are
      scored with the real samples, in the same scorer calls; they are not counted in
      ``offered``/``sampled``/``sent``, but in ``canaries`` (made so far).
    - ``rank`` / ``world_size``: this process's rank and the job's number of processes [None:
      detected, see :mod:`runwatch.collectors.distributed`; pass them only for a launcher that
      sets none of the variables, e.g. ``mp.spawn`` with a collector made before
      ``init_process_group``].
    """

    def __init__(
        self,
        *,
        run_id: str,
        bootstrap_servers: str | Sequence[str] | None = None,
        topic_prefix: str = "runwatch",
        scorers: Sequence[Scorer] = (),
        sample_rate: float = 1.0,
        config: dict | None = None,
        metadata: dict | None = None,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        max_queue_samples: int = 100_000,
        batch_max_records: int = 500,
        linger_s: float = 0.05,
        compression: str | None = "lz4",
        close_timeout: float = 10.0,
        stats_interval: float = 10.0,
        retry_interval: float = 1.0,
        max_inflight_bytes: int = 16 * 1024 * 1024,
        max_inflight_messages: int = 5,
        down_after_s: float = 5.0,
        seed: int | None = None,
        kafka_options: dict | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        canaries=None,
        canary_rate: float | None = None,
        start: bool = True,
    ):
        if not run_id or not isinstance(run_id, str):
            raise ValueError("Collector needs a non-empty run_id string")
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
        bootstrap_servers = bootstrap_servers or os.environ.get("RUNWATCH_BOOTSTRAP")
        if not bootstrap_servers:
            raise ValueError("Collector needs bootstrap_servers (or env RUNWATCH_BOOTSTRAP)")
        self.run_id = run_id
        self.bootstrap_servers = bootstrap_servers
        self.topics = wire.topics(topic_prefix)
        self.scorers = list(scorers)
        self.sample_rate = float(sample_rate)
        self.max_queue_samples = int(max_queue_samples)
        self.batch_max_records = int(batch_max_records)
        self.linger_s = float(linger_s)
        self.close_timeout = float(close_timeout)
        self.stats_interval = float(stats_interval)
        self.retry_interval = float(retry_interval)
        self.max_inflight_bytes = int(max_inflight_bytes)
        self.max_inflight_messages = int(max_inflight_messages)
        self.down_after_s = float(down_after_s)
        if isinstance(compression, str) and compression.strip().lower() in ("", "none"):
            compression = None
        self._compression = compression
        self._kafka_options = dict(security_options() if kafka_options is None else kafka_options)
        self._rng = random.Random(seed)
        self._key = run_id.encode()
        if canaries is None:
            if canary_rate:
                raise ValueError("canary_rate needs canaries (a canary suite: a JSONL path or a "
                                 "CanarySuite)")
            self._canaries = None
        else:
            self._canaries = CanaryMixer(CanarySuite.of(canaries),
                                         0.01 if canary_rate is None else canary_rate, seed=seed)
        self._ranks = distributed.given(rank, world_size) or distributed.detect()
        self.rank = self._ranks.rank
        self.world_size = self._ranks.world_size
        # Names this collector (one process, one start of the job): its collector_stats rows,
        # and the prefix of its sample ids, which carry the rank so that ranks never collide.
        self.collector_id = wire.new_id()[:16] + (f"-r{self.rank}" if self._ranks.distributed else "")
        self._id_prefix = self.collector_id + "-"
        self._seq = 0

        self._queue: deque = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending = 0
        self._counts = {"offered": 0, "sampled": 0, "sent": 0, "spooled": 0, "resent": 0}
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._events_lost = dict.fromkeys(DROP_REASONS, 0)
        # messages handed to the producer and not yet acknowledged: token -> (topic, value, n,
        # events, spool_name); kept so that they can be spooled if the broker turns out down
        self._inflight: dict[int, tuple] = {}
        self._inflight_bytes = 0
        self._token = 0
        self._acked = threading.Event()
        self._last_progress = time.monotonic()  # last acknowledgement (or first message in flight)
        self._last_probe = 0.0
        self._errors: deque[str] = deque(maxlen=20)
        self._failed: deque = deque()
        self._inflight_spool: set[str] = set()
        self._down = False
        self._closing = False
        self._closed = False
        self._producer = None
        self._last_connect_try = 0.0
        self._last_stats = time.monotonic()
        self._unusable: str | None = None  # why no producer can ever start (reported once)

        spool_dir = Path(spool_dir) if spool_dir else DEFAULT_SPOOL_ROOT / _safe(run_id)
        if self._ranks.distributed:  # ranks of one job share the folder given: one each
            spool_dir = spool_dir / f"rank-{self.rank}"
        self.spool = Spool(spool_dir, max_bytes=spool_max_bytes)
        problem = _producer_problem(self._compression, self._kafka_options)
        if problem:
            self._producer_unusable(problem, stacklevel=2)  # points at the job's line
        self._thread = threading.Thread(target=self._run, name=f"runwatch-collector-{run_id}", daemon=True)
        if self.rank == 0:  # the run's start, checkpoints and end come from rank 0 only
            self._enqueue_event(wire.run_event("run_started", run_id, config=config or {},
                                               metadata=metadata or {},
                                               world_size=self.world_size))
        if start:
            self._thread.start()

    # ------------------------------------------------------------------ training-thread API
    def log(
        self,
        step: int,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        prompt_set: str,
        prompt_ids: Sequence[str] | None = None,
        rewards: Sequence[float | None] | None = None,
        source: str = "rollout",
        pair_ids: Sequence[str | None] | None = None,
        cues: Sequence[str | None] | None = None,
        meta: dict | None = None,
    ) -> int:
        """Offer outputs the job already has; returns how many were kept (sampled and queued).

        Never blocks: when the queue is full the records are dropped and counted.
        """
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"log(): {len(prompts)} prompts but {n} completions")
        for name, values in (("prompt_ids", prompt_ids), ("rewards", rewards),
                             ("pair_ids", pair_ids), ("cues", cues)):
            if values is not None and len(values) != n:
                raise ValueError(f"log(): {name} has {len(values)} items, expected {n}")
        if source not in wire.SOURCES:
            raise ValueError(f"log(): source must be one of {wire.SOURCES}, got {source!r}")
        if self.sample_rate >= 1.0:
            keep = range(n)
        else:
            rnd, rate = self._rng.random, self.sample_rate
            keep = [i for i in range(n) if rnd() < rate]
        kept = len(keep)
        with self._lock:
            self._counts["offered"] += n
            if self._closed:
                self._dropped["close_timeout"] += kept
                return 0
            if self._pending + kept > self.max_queue_samples:
                self._dropped["queue_full"] += kept
                return 0
            self._pending += kept
            self._counts["sampled"] += kept
        if kept:
            self._queue.append(("samples", int(step), prompts, completions, prompt_set, prompt_ids,
                                rewards, source, pair_ids, cues, meta, keep, time.time()))
            if self._pending >= self.batch_max_records:
                self._wake.set()
        return kept

    def log_sample(self, step: int, prompt: str, completion: str, *, prompt_set: str,
                   prompt_id: str | None = None, reward: float | None = None,
                   source: str = "rollout", pair_id: str | None = None, cue: str | None = None) -> int:
        """One output; see :meth:`log`."""
        return self.log(step, [prompt], [completion], prompt_set=prompt_set,
                        prompt_ids=None if prompt_id is None else [prompt_id],
                        rewards=None if reward is None else [reward], source=source,
                        pair_ids=None if pair_id is None else [pair_id],
                        cues=None if cue is None else [cue])

    @property
    def is_main_process(self) -> bool:
        """True on rank 0 of a distributed job, and in a single-process job."""
        return self.rank == 0

    def checkpoint(self, step: int, *, path: str | os.PathLike | None = None,
                   metrics: dict | None = None) -> None:
        """Record that the run reached (or saved) a checkpoint at ``step``.

        In a distributed job only rank 0 records it (with rank 0's ``path`` and ``metrics``);
        on the other ranks this does nothing, so every rank may call it at the same step.
        """
        if self.rank != 0:
            return
        self._enqueue_event(wire.run_event("checkpoint", self.run_id, step=int(step),
                                           path=None if path is None else str(path),
                                           metrics=metrics or {}))

    def evaluate(self, step: int, model: Any, tokenizer: Any, suite: Any, *,
                 samples_per_prompt: int = 1, max_new_tokens: int = 32, temperature: float = 1.0,
                 seed: int | None = None, batch_size: int = 64) -> int:
        """Generate on a prompt suite with a transformers causal LM, then log the outputs.

        Generation runs on the calling thread (it needs the model as it is at ``step``);
        scoring and sending happen in the background. Returns how many outputs were kept.

        In a distributed job this runs on rank 0 only: on every other rank it returns 0 at once,
        so a job that calls it on every rank evaluates each checkpoint once, not once per rank
        (the replicas of a data-parallel job hold the same weights). A
        ``DistributedDataParallel`` / ``DataParallel`` wrapper is unwrapped (``.module``), so
        generation never enters the wrapper's collectives. Sharded weights (FSDP, DeepSpeed
        ZeRO-3) cannot generate on one rank alone: evaluate the saved checkpoints instead
        (``runwatch watch``).
        """
        if not self._evaluates_here():
            return 0
        from runwatch.collectors.generation import generate_completions

        model = _unwrap(model)
        entries = list(suite)
        completions = generate_completions(
            model, tokenizer, [e.prompt for e in entries], samples_per_prompt=samples_per_prompt,
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
            batch_size=batch_size)
        kept = 0
        by_set: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            by_set.setdefault(e.prompt_set, []).append(i)
        for prompt_set, idx in by_set.items():
            rows = [(entries[i], c) for i in idx for c in completions[i]]
            kept += self.log(
                step, [e.prompt for e, _ in rows], [c for _, c in rows], prompt_set=prompt_set,
                prompt_ids=[e.prompt_id for e, _ in rows], source="probe",
                pair_ids=[getattr(e, "pair_id", None) for e, _ in rows],
                cues=[getattr(e, "cue", None) for e, _ in rows])
            metrics = self._checkpoint_scores(prompt_set, [c for _, c in rows])
            if metrics:
                self._enqueue_event(wire.run_event("checkpoint", self.run_id, step=int(step),
                                                   path=None, metrics=metrics))
        return kept

    def _evaluates_here(self) -> bool:
        """Rank 0 only; also asks ``torch.distributed`` again when the collector was made
        before the job initialised it (without the launcher variables)."""
        if self.rank != 0:
            return False
        if self._ranks.distributed or self._ranks.source == "given":
            return True
        return distributed.detect().is_main

    def _checkpoint_scores(self, prompt_set: str, completions: list[str]) -> dict:
        out = {}
        for scorer in self.scorers:
            try:
                for s in scorer.score_checkpoint(completions):
                    out[f"{scorer.name}/{s.category}/{prompt_set}"] = {
                        "score": s.score, "flagged": s.flagged, "threshold": s.threshold}
            except Exception as exc:  # a broken scorer must not stop training
                self._note_error(f"{scorer.name}.score_checkpoint: {exc!r}")
        return out

    def stats(self) -> dict:
        """Cumulative counters (the same the ``collector_stats`` event carries)."""
        with self._lock:
            dropped = dict(self._dropped)
            return {**self._counts, "dropped": sum(dropped.values()),
                    "dropped_by_reason": {k: v for k, v in dropped.items() if v},
                    "events_lost": sum(self._events_lost.values()),
                    "events_lost_by_reason": {k: v for k, v in self._events_lost.items() if v},
                    "inflight_bytes": self._inflight_bytes,
                    "queued": self._pending, "spool_messages": len(self.spool),
                    "spool_bytes": self.spool.size_bytes, "broker_down": self._down,
                    "last_errors": list(self._errors),
                    **({} if self._canaries is None else {"canaries": self._canaries.made})}

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is sent or spooled; True if it finished in time."""
        done = threading.Event()
        self._queue.append(("flush", done))
        self._wake.set()
        return done.wait(timeout)

    def close(self, status: str = "completed", *, timeout: float | None = None) -> dict:
        """Send the run's end (rank 0 only), flush within ``timeout`` and stop. Returns the
        final stats."""
        if self._closing:
            return self.stats()
        if self.rank == 0:
            self._enqueue_event(wire.run_event("run_finished", self.run_id, status=status,
                                               step=None))
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.close_timeout if timeout is None else timeout)
        alive = self._thread.is_alive()
        if alive:  # unacknowledged messages go to the spool for the run's next collector
            self._rescue_inflight()
        with self._lock:
            self._closed = True
            if alive:
                self._dropped["close_timeout"] += self._pending
                self._events_lost["close_timeout"] += sum(1 for item in list(self._queue)
                                                          if item[0] == "event")
        return self.stats()

    def __enter__(self) -> "Collector":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("completed" if exc_type is None else
                   "aborted" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    # ------------------------------------------------------------------ background thread
    def _enqueue_event(self, record: dict) -> None:
        self._queue.append(("event", record))
        self._wake.set()

    def _note_error(self, message: str) -> None:
        self._errors.append(message)
        log.warning("runwatch collector %s: %s", self.run_id, message)

    def _run(self) -> None:
        batch: list[dict] = []
        batch_started = 0.0
        while True:
            self._wake.wait(self.linger_s)
            self._wake.clear()
            try:
                now = time.monotonic()
                if self._producer is None and now - self._last_connect_try >= self.retry_interval:
                    if self._down and self._unusable is None and not self._reachable():
                        self._last_connect_try = now  # still down: a TCP check, not a producer
                    else:
                        self._connect()
                while self._queue:
                    item = self._queue.popleft()
                    kind = item[0]
                    if kind == "samples":
                        if not batch:
                            batch_started = time.monotonic()
                        batch.extend(self._build_samples(item))
                        if len(batch) >= self.batch_max_records:
                            self._send_records(self.topics["samples"], batch)
                            batch = []
                    elif kind == "event":
                        if batch:  # keep a checkpoint event behind its samples
                            self._send_records(self.topics["samples"], batch)
                            batch = []
                        self._send_records(self.topics["runs"], [item[1]])
                    elif kind == "flush":
                        if batch:
                            self._send_records(self.topics["samples"], batch)
                            batch = []
                        self._flush_producer(5.0)
                        self._handle_failures()
                        item[1].set()
                if batch and (time.monotonic() - batch_started >= self.linger_s or self._closing):
                    self._send_records(self.topics["samples"], batch)
                    batch = []
                self._handle_failures()
                self._drain_spool()
                if time.monotonic() - self._last_stats >= self.stats_interval:
                    self._emit_stats()
                self._check_stall()
                if self._closing and not self._queue:
                    self._flush_producer(max(1.0, self.close_timeout - 2.0))
                    self._handle_failures()
                    self._rescue_inflight()  # not acknowledged in time: spooled, not lost
                    self._emit_stats()  # final counts, after the flush settled them
                    self._flush_producer(1.0)
                    self._handle_failures()
                    self._rescue_inflight()
                    if self._producer is not None:
                        self._producer.close(timeout=1.0)
                    return
            except Exception as exc:  # the thread must survive anything
                self._note_error(f"background loop: {exc!r}")
                time.sleep(0.1)

    def _producer_unusable(self, problem: str, *, stacklevel: int = 1) -> None:
        """No producer can start in this process: say so once, with the fix; records spool."""
        if self._unusable is not None:
            return
        self._unusable = problem
        message = (f"runwatch collector {self.run_id}: cannot start the Kafka producer: {problem}. "
                   f"Training goes on; records are kept in the spool {self.spool.directory} (up "
                   f"to {self.spool.max_bytes} bytes) and sent by the next collector of this run "
                   f"that can reach Kafka with the same spool_dir.")
        self._errors.append(message)
        warnings.warn(message, CollectorWarning, stacklevel=stacklevel + 1)

    def _connect(self) -> None:
        self._last_connect_try = time.monotonic()
        if self._unusable is not None:
            return  # told once; every record goes to the spool
        try:
            from kafka import KafkaProducer
        except Exception as exc:  # checked at construction; a broken install can still fail here
            self._producer_unusable(_import_problem(exc))
            return
        options = dict(
            bootstrap_servers=self.bootstrap_servers, acks="all", compression_type=self._compression,
            enable_idempotence=False, linger_ms=20, max_block_ms=2000, request_timeout_ms=30_000,
            delivery_timeout_ms=120_000, bootstrap_timeout_ms=2000, reconnect_backoff_max_ms=2000,
            max_request_size=8 * 1024 * 1024, max_in_flight_requests_per_connection=5,
            client_id=f"runwatch-collector-{self.run_id}")
        options.update(self._kafka_options)
        try:
            with ErrorTrap() as trap:
                self._producer = KafkaProducer(**options)
        except Exception as exc:
            self._producer = None
            if _is_setting_error(exc):  # retrying cannot help: report once, spool everything
                self._producer_unusable(
                    f"kafka-python refused the producer settings ({type(exc).__name__}: {exc}); "
                    f"check the collector's compression and kafka_options")
                return
            # Retried every retry_interval even when the credentials were refused: spooling
            # keeps the records, and training never waits on the broker.
            message = explain_failure(exc, self._kafka_options, self.bootstrap_servers, trap)[0]
            if message.startswith("cannot connect"):
                message += ("; check bootstrap_servers (env RUNWATCH_BOOTSTRAP) and that the "
                            "broker is up")
            self._mark_down(message)
            return
        # The topics' metadata now, on this thread, so that the first batch does not wait for it
        # (0.5-0.7 s measured); a real problem shows up again on the first send.
        for topic in (self.topics["samples"], self.topics["runs"]):
            try:
                self._producer.partitions_for(topic)
            except Exception:
                pass

    def _mark_down(self, reason: str) -> None:
        """The broker is down (background thread): spool what is in flight, close the producer.

        Closing matters: kafka-python keeps unsendable batches for the whole delivery timeout,
        its sender thread spinning over them with the GIL held (measured: the training loop ran
        at 13 instead of 80 steps/s). A new producer connects every ``retry_interval``; the
        spool is resent once one does."""
        if not self._down:
            self._note_error(f"{reason} (spooling to {self.spool.directory}; sent when the "
                             f"broker answers)")
        self._down = True
        producer, self._producer = self._producer, None
        if producer is not None:
            self._rescue_inflight()
            _close_now(producer, self._note_error)

    def _build_samples(self, item) -> list[dict]:
        (_, step, prompts, completions, prompt_set, prompt_ids, rewards, source, pair_ids, cues,
         meta, keep, created_at) = item
        sub_prompts = [prompts[i] for i in keep]
        sub_completions = [completions[i] for i in keep]
        canaries = self._canaries.take(len(keep)) if self._canaries is not None else ()
        for _, c in canaries:  # scored in the same calls as the real samples
            sub_prompts.append(c.prompt)
            sub_completions.append(c.completion)
        per_sample: list[list[dict]] = [[] for _ in sub_completions]
        for scorer in self.scorers:
            try:
                results = scorer.score_batch(sub_prompts, sub_completions)
            except Exception as exc:  # a broken scorer must not lose the samples
                self._note_error(f"scorer {scorer.name}: {exc!r}")
                continue
            for row, scores in zip(per_sample, results):
                for s in scores:
                    value = float(s.score)
                    if not math.isfinite(value):
                        self._note_error(f"scorer {scorer.name} returned {value} for {s.category}; skipped")
                        continue
                    threshold = None if s.threshold is None else float(s.threshold)
                    if threshold is not None and not math.isfinite(threshold):
                        self._note_error(f"scorer {scorer.name} threshold {threshold} for "
                                         f"{s.category} is not a JSON number; sent as null")
                        threshold = None
                    row.append({"scorer": scorer.name, "category": s.category, "score": value,
                                "flagged": bool(s.flagged), "threshold": threshold})
        records = []
        for j, i in enumerate(keep):
            self._seq += 1
            reward = None if rewards is None or rewards[i] is None else float(rewards[i])
            records.append({
                "schema_version": wire.SCHEMA_VERSION, "kind": "sample",
                "sample_id": f"{self._id_prefix}{self._seq:x}", "run_id": self.run_id,
                "step": step, "prompt_set": prompt_set,
                "prompt_id": str(prompt_ids[i]) if prompt_ids is not None else f"{prompt_set}-{i}",
                "prompt": prompts[i], "completion": completions[i], "source": source,
                "reward": reward if reward is None or math.isfinite(reward) else None,
                "pair_id": None if pair_ids is None else pair_ids[i],
                "cue": None if cues is None else cues[i],
                "scores": per_sample[j], "created_at": created_at, "meta": meta,
            })
        for j, (seq, c) in enumerate(canaries, len(keep)):
            self._seq += 1
            records.append({
                "schema_version": wire.SCHEMA_VERSION, "kind": "sample",
                "sample_id": f"{self._id_prefix}{self._seq:x}", "run_id": self.run_id,
                "step": step, "prompt_set": wire.CANARY_PROMPT_SET, "prompt_id": c.canary_id,
                "prompt": c.prompt, "completion": c.completion, "source": "canary",
                "reward": None, "pair_id": None, "cue": None, "scores": per_sample[j],
                "created_at": created_at, "meta": None,
                "canary": {"category": c.category, "expected": c.expected, "seq": seq,
                           "collector_id": self.collector_id},
            })
        with self._lock:
            self._pending -= len(keep)
        return records

    def _count_drop(self, reason: str, n: int, events: int = 0) -> None:
        with self._lock:
            self._dropped[reason] += n
            self._events_lost[reason] += events

    def _send_records(self, topic: str, records: list[dict]) -> None:
        # samples the counters count: canaries have their own count (the view finds them by seq)
        n = sum(1 for r in records if r.get("kind") == "sample" and r.get("source") != "canary")
        try:
            value = wire.encode_batch(self.run_id, records)
        except (TypeError, ValueError) as exc:
            self._note_error(f"cannot encode {len(records)} records: {exc}")
            self._count_drop("encode_error", n, len(records) - n)
            return
        if not self._down and self._producer is not None and not len(self.spool):
            self._wait_for_room()
        if (self._down and not len(self.spool) and self._producer is not None
                and time.monotonic() - self._last_connect_try >= self.retry_interval):
            # Down with nothing spooled (e.g. the spool cannot be written): nothing would ever
            # be resent to find out that the broker is back, so this message is the probe.
            self._last_connect_try = time.monotonic()
            self._produce(topic, value, n, None, len(records) - n)
            return
        if self._down or len(self.spool) or self._producer is None:
            if not self._spool(topic, value, n, len(records) - n, drop=False):
                if not self._down and self._producer is not None:
                    # Up, but the spool is full or unwritable: send now rather than lose it
                    # (order behind the spooled messages gives way to delivery).
                    self._produce(topic, value, n, None, len(records) - n)
                else:
                    self._spool(topic, value, n, len(records) - n)  # counts the loss by its reason
            return
        self._produce(topic, value, n, None, len(records) - n)

    def _produce(self, topic: str, value: bytes, n: int, spool_name: str | None,
                 events: int = 0) -> None:
        with self._lock:
            self._token += 1
            token = self._token
            if not self._inflight:
                self._last_progress = time.monotonic()
            self._inflight[token] = (topic, value, n, events, spool_name)
            self._inflight_bytes += len(value)
        try:
            future = self._producer.send(topic, key=self._key, value=value)
        except Exception as exc:
            with self._lock:
                if self._inflight.pop(token, None) is not None:
                    self._inflight_bytes -= len(value)
            self._mark_down(f"send to {topic} failed: {exc}")
            if spool_name is None:
                self._spool(topic, value, n, events)
            else:
                self._inflight_spool.discard(spool_name)
            return
        future.add_callback(self._on_ack, token)
        future.add_errback(self._on_fail, token)

    def _on_ack(self, token: int, _metadata=None) -> None:
        # Runs on kafka-python's I/O thread.
        with self._lock:
            entry = self._inflight.pop(token, None)
            self._last_progress = time.monotonic()
            if entry is not None:
                self._inflight_bytes -= len(entry[1])
                self._counts["sent"] += entry[2]
                if entry[4] is not None:
                    self._counts["resent"] += entry[2]
        # entry None: spooled meanwhile (broker taken for down); the spooled copy is resent and
        # the view ignores the duplicate.
        if entry is not None and entry[4] is not None:
            self.spool.remove(entry[4])
            self._inflight_spool.discard(entry[4])
        self._down = False  # any acknowledgement: the broker is reachable
        self._acked.set()

    def _on_fail(self, token: int, exc=None) -> None:
        with self._lock:
            entry = self._inflight.pop(token, None)
            if entry is not None:
                self._inflight_bytes -= len(entry[1])
        if entry is not None:
            self._failed.append((*entry, exc))
        self._acked.set()
        self._wake.set()

    def _handle_failures(self) -> None:
        while self._failed:
            topic, value, n, events, spool_name, exc = self._failed.popleft()
            self._mark_down(f"delivery to {topic} failed: {exc}")
            if spool_name is None:
                self._spool(topic, value, n, events)
            else:
                self._inflight_spool.discard(spool_name)

    def _rescue_inflight(self) -> None:
        """Spool every unacknowledged message (the broker is down, or the collector closes)."""
        with self._lock:
            entries = list(self._inflight.values())
            self._inflight.clear()
            self._inflight_bytes = 0
        for topic, value, n, events, spool_name in entries:
            if spool_name is None:
                self._spool(topic, value, n, events)
            else:  # still in the spool: resent by the next drain
                self._inflight_spool.discard(spool_name)

    def _reachable(self) -> bool:
        """Does any bootstrap address accept a TCP connection? (A slow broker still does.)"""
        servers = self.bootstrap_servers
        if isinstance(servers, str):
            servers = servers.split(",")
        for server in servers:
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1.0):
                    return True
            except (OSError, ValueError):
                continue
        return False

    def _check_stall(self) -> None:
        """Nothing acknowledged for ``down_after_s`` with messages in flight: probe the broker;
        unreachable means down, and what is in flight is spooled at once."""
        if self._down or not self._inflight:
            return
        now = time.monotonic()
        if now - self._last_progress < self.down_after_s or now - self._last_probe < self.down_after_s:
            return
        self._last_probe = now
        if self._reachable():
            return  # slow, not down: keep waiting for the acknowledgements
        self._mark_down(f"no acknowledgement for {now - self._last_progress:.0f} s and no broker "
                        f"at {self.bootstrap_servers} accepts connections")

    def _over_budget(self) -> bool:
        return (self._inflight_bytes >= self.max_inflight_bytes
                or len(self._inflight) >= self.max_inflight_messages)

    def _wait_for_room(self) -> None:
        """Back-pressure: hold the next message while ``max_inflight_bytes`` are unacknowledged."""
        while (self._over_budget() and not self._down and self._producer is not None):
            self._acked.wait(0.1)
            self._acked.clear()
            self._handle_failures()
            self._check_stall()

    def _spool(self, topic: str, value: bytes, n: int, events: int = 0, *, drop: bool = True) -> bool:
        """Spool one message; False when the spool refused it (full or unwritable), which is
        counted as a loss unless ``drop=False`` (the caller will try to send it instead)."""
        try:
            stored = self.spool.put(topic, self._key, value, n)
        except SpoolError as exc:
            self._note_error(str(exc))
            if drop:
                self._count_drop("spool_error", n, events)
            return False
        if stored:
            with self._lock:
                self._counts["spooled"] += n
            return True
        if drop:
            self._count_drop("spool_full", n, events)
        return False

    def _drain_spool(self) -> None:
        """Resend spooled messages oldest first: one probe while down, a window once up."""
        if self._producer is None or not len(self.spool):
            return
        if self._down:
            if self._inflight_spool or time.monotonic() - self._last_connect_try < self.retry_interval:
                return
            self._last_connect_try = time.monotonic()
            window = 1
        else:
            window = 16 - len(self._inflight_spool)
            if self._over_budget():
                window = 0
        for name in self.spool.oldest(max(window, 0), self._inflight_spool):
            try:
                topic, _key, value, n = self.spool.read(name)
            except OSError as exc:
                self._note_error(f"unreadable spool file {name}: {exc}")
                self.spool.remove(name)
                continue
            self._inflight_spool.add(name)
            self._produce(topic, value, n, name)

    def _flush_producer(self, timeout: float) -> None:
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:
            self._flush_failed(exc)
        # Keep resending spooled messages while the broker answers, within the timeout.
        deadline = time.monotonic() + timeout
        while len(self.spool) and not self._down and time.monotonic() < deadline:
            self._drain_spool()
            try:
                self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                self._flush_failed(exc)
            self._handle_failures()

    def _flush_failed(self, exc: Exception) -> None:
        """A flush that did not finish in time: a slow broker stays "up" (what is unacknowledged
        waits, and :meth:`close` spools it); an unreachable one is down."""
        if self._producer is not None and self._reachable():
            return
        self._mark_down(f"flush failed: {exc}")

    def _emit_stats(self) -> None:
        self._last_stats = time.monotonic()
        s = self.stats()
        body = {k: s[k] for k in ("offered", "sampled", "sent", "spooled", "resent", "dropped")}
        body["dropped_by_reason"] = s["dropped_by_reason"]
        body["events_lost"] = s["events_lost"]
        if s["events_lost_by_reason"]:
            body["events_lost_by_reason"] = s["events_lost_by_reason"]
        if "canaries" in s:
            body["canaries"] = s["canaries"]
        scorer_stats = {}
        for scorer in self.scorers:  # e.g. a judge's requests and failures
            report = getattr(scorer, "stats", None)
            if callable(report):
                try:
                    scorer_stats[scorer.name] = report()
                except Exception as exc:
                    self._note_error(f"scorer {scorer.name}.stats(): {exc!r}")
        if scorer_stats:
            body["scorers"] = scorer_stats
        self._send_records(self.topics["runs"], [wire.run_event(
            "collector_stats", self.run_id, stats=body, collector_id=self.collector_id,
            rank=self.rank, world_size=self.world_size)])


def _close_now(producer, note) -> None:
    """Close a kafka-python producer without waiting: ``close(timeout=0)`` alone raises (and
    leaves sockets and its thread behind) while batches are unsent, so abort them first."""
    try:
        producer.close(timeout=0)
        return
    except Exception:
        pass
    try:
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()  # aborts the unsent batches (their errbacks are ignored)
            sender.join(1.0)
        producer.close(timeout=0)
    except Exception as exc:
        note(f"closing the producer: {exc!r}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]


def _unwrap(model):
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (which has no
    ``generate`` and would run collectives in its forward); anything else as it is."""
    inner = getattr(model, "module", None)
    if inner is not None and not hasattr(model, "generate") and hasattr(inner, "generate"):
        return inner
    return model


def _import_problem(exc: BaseException) -> str:
    return (f"kafka-python cannot be imported ({type(exc).__name__}: {exc}); install the "
            f"collector's dependencies: pip install 'runwatch' (or pip install "
            f"'kafka-python[lz4]')")


def _producer_problem(compression, kafka_options: dict) -> str | None:
    """Why no producer could start with these settings, found without the network; or None."""
    try:
        import kafka.codec as codec
        from kafka import KafkaProducer
    except Exception as exc:  # not installed, or broken
        return _import_problem(exc)
    if compression is not None:
        if compression not in _CODECS:
            return (f"compression={compression!r} is not a Kafka codec; pass one of "
                    f"{', '.join(repr(c) for c in _CODECS)} or None")
        check, package = _CODECS[compression]
        try:
            available = getattr(codec, check)()
        except Exception:  # another kafka-python layout: the producer itself will tell
            available = True
        if not available:
            return (f"compression={compression!r} needs the {package} library, which is not "
                    f"installed: pip install 'runwatch' (it brings kafka-python[lz4,snappy,zstd]) "
                    f"or pip install {package}; or pass compression='gzip' (no extra library) "
                    f"or compression=None")
    known = getattr(KafkaProducer, "DEFAULT_CONFIG", None)
    if isinstance(known, dict):
        unknown = sorted(set(kafka_options) - set(known))
        if unknown:
            return (f"kafka_options has setting(s) kafka-python's producer does not know: "
                    f"{', '.join(unknown)}; fix or remove them")
    return None


def _is_setting_error(exc: BaseException) -> bool:
    """KafkaProducer(...) refused its configuration (a retry cannot help), as opposed to not
    reaching the broker. kafka-python's own errors (some of them RuntimeErrors in older
    versions) mean the network, except KafkaConfigurationError."""
    try:
        from kafka.errors import KafkaConfigurationError, KafkaError
    except Exception:
        return False
    if isinstance(exc, KafkaConfigurationError):
        return True
    if isinstance(exc, KafkaError):
        return False
    return isinstance(exc, (ValueError, TypeError, AssertionError, RuntimeError, ImportError))
