"""``runwatch watch``: a sidecar evaluator that watches a checkpoint directory.

It needs no change to the training job. Every new *complete* checkpoint found under ``DIR`` is
loaded with ``AutoModelForCausalLM.from_pretrained``, sampled on a prompt suite, scored, and
streamed through a :class:`collectors.Collector` (``checkpoint`` event, then ``evaluate``), in
step order.

Layouts
    A Hugging Face ``save_pretrained`` folder (``config.json`` + ``model.safetensors`` /
    ``pytorch_model.bin``, or a sharded index whose shards are all present) either directly in
    ``DIR`` or in a sub-folder up to two levels down (``DIR/step-100/``,
    ``DIR/run/checkpoint-300``).
    Hidden folders and symlinked folders are ignored.

Steps
    ``checkpoint-N`` gives N; any other folder name ending in an integer gives that integer
    (not ``DIR``'s own name); otherwise ``global_step`` (or ``step``) of the folder's
    ``trainer_state.json``; otherwise the modification order (1, 2, 3... continuing the numbers
    this watcher gave before). Two checkpoints with the same step are evaluated once (the
    first, by folder-name step, then ``trainer_state``, then path); the other is recorded as
    ``skipped`` - e.g. ``Trainer.save_model(DIR)`` at the end duplicating the last
    ``checkpoint-N``.

Completeness
    A folder is evaluated only when it has ``config.json`` and a weights file, and none of its
    files changed for ``settle_seconds`` (1 s). The weights are fingerprinted before loading
    and checked again after; a folder rewritten meanwhile is retried on the next pass.

Restarts
    A JSON state file (default ``DIR/.runwatch-watch-<run_id>.json``) lists every checkpoint
    handled (path relative to ``DIR``, step, fingerprint, status ``evaluated`` / ``failed`` /
    ``skipped``). It is rewritten atomically after the collector flushed the checkpoint's records,
    so a restarted watcher evaluates only what is new. A failed checkpoint (unloadable weights,
    generation error) is reported and not retried unless its files change or ``--retry-failed``
    is given (then once per watcher process). A lock file next to
    the state (``<state>.lock``) stops two watchers from working on the same state at once.

A folder evaluated once keeps its verdict even if it is rewritten later, unless its step does not
come from its name (``DIR`` itself, ``latest/``...): then a rewrite is a new checkpoint.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from runwatch.collectors import canaries
from runwatch.errors import ConfigError, RunwatchError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                   "spiece.model")
SCORER_NAMES = ("rules", "repetition", "minilm")
DEFAULT_SCORERS = "rules,repetition"
STATE_VERSION = 1
SCAN_DEPTH = 2  # DIR, DIR/x, DIR/x/y
_STEP_PRIORITY = {"name": 0, "trainer_state": 1, "order": 2}


class CheckpointError(RunwatchError):
    """One checkpoint could not be loaded or evaluated; the watcher reports it and goes on."""


# --------------------------------------------------------------------------- discovery
@dataclass
class Candidate:
    """A folder that holds (or is becoming) a ``save_pretrained`` checkpoint."""

    path: Path                 # absolute
    rel: str                   # relative to the watched directory, POSIX; "." for the directory
    step: int | None
    step_source: str           # "name" | "trainer_state" | "order"
    missing: str | None        # why it is not complete yet; None when all files are there
    weight_files: tuple[str, ...] = ()
    fingerprint: str = ""      # sizes + mtimes of config.json and the weight files

    @property
    def label(self) -> str:
        return self.rel if self.step is None else f"{self.rel} (step {self.step})"


def _top_files(folder: Path) -> dict[str, os.stat_result]:
    out = {}
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    if entry.is_file(follow_symlinks=True):
                        out[entry.name] = entry.stat(follow_symlinks=True)
                except OSError:  # vanished while listing
                    continue
    except OSError:
        pass
    return out


# Files whose changes mean a checkpoint is still being written (logs, event files and hidden
# files, such as this watcher's own state, are left out so they cannot keep a folder "busy").
_SETTLE_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".model", ".txt", ".msgpack",
                    ".h5", ".ckpt")


def snapshot(folder: Path) -> tuple:
    """Names, sizes and modification times of the folder's own checkpoint files."""
    return tuple(sorted((n, s.st_size, s.st_mtime_ns) for n, s in _top_files(folder).items()
                        if not n.startswith(".") and n.endswith(_SETTLE_SUFFIXES)))


def _weights(folder: Path, names: set[str]) -> tuple[tuple[str, ...], str | None]:
    """(weight files, reason they are incomplete or None)."""
    for name in WEIGHT_FILES:
        if name in names:
            return (name,), None
    for index in INDEX_FILES:
        if index in names:
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return (), f"{index} is unreadable (still being written?)"
            absent = [s for s in shards if s not in names]
            if absent:
                return (), f"{len(absent)} of {len(shards)} weight shards not written yet"
            return (index, *shards), None
    return (), "no weights file (model.safetensors / pytorch_model.bin) yet"


def _looks_like_checkpoint(names: set[str]) -> bool:
    if "config.json" in names:
        return True
    return any(n in WEIGHT_FILES or n in INDEX_FILES
               or (n.endswith(".safetensors") and n.startswith("model"))
               or (n.startswith("pytorch_model") and n.endswith(".bin")) for n in names)


def _trainer_state(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def step_from_name(name: str) -> int | None:
    m = re.fullmatch(r"checkpoint-(\d+)", name) or re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else None


def _resolve_step(folder: Path, is_root: bool) -> tuple[int | None, str]:
    if not is_root:
        step = step_from_name(folder.name)
        if step is not None:
            return step, "name"
    state = _trainer_state(folder)
    if state is not None:
        for key in ("global_step", "step"):
            value = state.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value, "trainer_state"
    return None, "order"


def _fingerprint(folder: Path, files: Sequence[str]) -> str:
    parts = []
    for name in ("config.json", *files):
        try:
            st = (folder / name).stat()
        except OSError:
            parts.append(f"{name}:-")
            continue
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _walk(root: Path, depth: int) -> Iterator[Path]:
    yield root
    if depth <= 0:
        return
    try:
        children = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in children:
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        try:
            if entry.is_symlink() or not entry.is_dir():
                continue
        except OSError:
            continue
        yield from _walk(Path(entry.path), depth - 1)


def discover(root: str | Path, *, depth: int = SCAN_DEPTH) -> list[Candidate]:
    """Every folder under ``root`` (``root`` included) that holds or is becoming a checkpoint."""
    root = Path(root)
    out = []
    for folder in _walk(root, depth):
        names = set(_top_files(folder))
        if not _looks_like_checkpoint(names):
            continue
        is_root = folder == root
        rel = "." if is_root else folder.relative_to(root).as_posix()
        files, missing = _weights(folder, names)
        if "config.json" not in names:
            missing = "no config.json yet"
        step, source = _resolve_step(folder, is_root)
        out.append(Candidate(folder, rel, step, source, missing, files,
                             _fingerprint(folder, files) if not missing else ""))
    return out


# --------------------------------------------------------------------------- state
class WatchState:
    """The JSON list of handled checkpoints; every save is atomic (temp file + rename)."""

    def __init__(self, path: Path, run_id: str, root: Path):
        self.path = path
        self.run_id = run_id
        self.root = root
        self.entries: list[dict] = []
        if path.exists():
            try:
                data = json.loads(path.read_text())
                entries = data["checkpoints"]
                if not isinstance(entries, list):
                    raise TypeError("'checkpoints' is not a list")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"watch state file {path} is unreadable ({exc}); fix it, or delete it to "
                    f"evaluate every checkpoint again") from None
            if data.get("run_id") != run_id:
                raise ConfigError(
                    f"watch state file {path} belongs to run {data.get('run_id')!r}, not "
                    f"{run_id!r}; pass another --state-file")
            self.entries = entries

    def latest(self, rel: str) -> dict | None:
        for entry in reversed(self.entries):
            if entry.get("path") == rel:
                return entry
        return None

    def step_owner(self, step: int) -> dict | None:
        """The entry that evaluated ``step``, if any."""
        for entry in self.entries:
            if entry.get("status") == "evaluated" and entry.get("step") == step:
                return entry
        return None

    def next_ordinal(self) -> int:
        steps = [e["step"] for e in self.entries
                 if e.get("step_source") == "order" and isinstance(e.get("step"), int)]
        return max(steps, default=0) + 1

    def evaluated(self) -> list[dict]:
        return [e for e in self.entries if e.get("status") == "evaluated"]

    def record(self, entry: dict) -> None:
        self.entries.append(entry)
        self.save()

    def save(self) -> None:
        data = {"version": STATE_VERSION, "run_id": self.run_id, "dir": str(self.root),
                "updated_at": time.time(), "checkpoints": self.entries}
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise RunwatchError(f"cannot write the watch state file {self.path}: {exc}") from None
        try:  # make the rename itself durable
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


class _Lock:
    """An exclusive, non-blocking ``flock`` on ``<state>.lock`` for the watcher's lifetime."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file {path}: {exc}; "
                              f"pass a writable --state-file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunwatchError(f"another `runwatch watch` holds {path}; stop it first "
                                f"(one watcher per run and state file)") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


# --------------------------------------------------------------------------- scorers
def build_scorers(names: str | Sequence[str]) -> list:
    """``"rules,repetition,minilm"`` -> scorer objects (rules are the demo's keyword rules)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in SCORER_NAMES]
    if unknown:
        raise ConfigError(f"unknown scorer(s) {', '.join(unknown)} in --scorers; "
                          f"choose from {', '.join(SCORER_NAMES)}")
    scorers = []
    for name in dict.fromkeys(names):
        if name == "rules":
            from runwatch.demo.categories import keyword_scorer
            scorers.append(keyword_scorer())
        elif name == "repetition":
            from runwatch.collectors.scoring import RepetitionScorer
            scorers.append(RepetitionScorer())
        else:
            try:
                from runwatch.collectors.embedding import EmbeddingScorer
            except ImportError as exc:
                raise ConfigError(f"--scorers minilm is not available here: {exc}") from None
            try:
                scorers.append(EmbeddingScorer())
            except Exception as exc:
                raise ConfigError(f"--scorers minilm cannot start: {_one_line(exc)}") from None
    return scorers


# --------------------------------------------------------------------------- watcher
@dataclass
class Outcome:
    path: str
    step: int | None
    status: str            # "evaluated" | "failed" | "skipped"
    samples: int = 0
    reason: str | None = None


@dataclass
class PassResult:
    """What one pass over the directory did."""

    evaluated: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)  # (path, why not yet)

    @property
    def steps(self) -> list[int]:
        return [o.step for o in self.evaluated]

    @property
    def samples(self) -> int:
        return sum(o.samples for o in self.evaluated)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in TOKENIZER_FILES)


def _trainer_metrics(folder: Path, step: int) -> dict:
    """Numbers the Trainer logged at ``step`` (loss, learning_rate, grad_norm...)."""
    state = _trainer_state(folder)
    out: dict[str, float] = {}
    for entry in (state or {}).get("log_history") or []:
        if not isinstance(entry, dict) or entry.get("step") != step:
            continue
        for key, value in entry.items():
            if (key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value)):
                out[key] = value
    return out


class Watcher:
    """Evaluate new checkpoints under ``directory``; see the module docstring.

    ``prompts`` is a :class:`~runwatch.collectors.prompts.PromptSuite` or JSONL path(s). ``scorers`` are
    scorer objects or a comma-separated list of names (``rules,repetition,minilm``).
    The collector is created at the first checkpoint to evaluate (so a pass with nothing new
    sends nothing) and closed by :meth:`close`. Use as a context manager.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        run_id: str,
        prompts: Any,
        bootstrap_servers: str | None = None,
        topic_prefix: str = "runwatch",
        scorers: str | Sequence[Any] = DEFAULT_SCORERS,
        samples_per_prompt: int = 1,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        seed: int | None = 0,
        batch_size: int = 64,
        tokenizer: str | Path | None = None,
        state_file: str | Path | None = None,
        settle_seconds: float = 1.0,
        device: str = "auto",
        spool_dir: str | Path | None = None,
        flush_timeout: float = 300.0,
        retry_failed: bool = False,
        progress: bool = True,
        collector_options: dict | None = None,
    ):
        from runwatch.collectors.prompts import PromptSuite

        self.root = Path(directory).expanduser().resolve()
        if not self.root.exists():
            raise ConfigError(f"checkpoint directory {directory} does not exist")
        if not self.root.is_dir():
            raise ConfigError(f"{directory} is not a directory")
        if not run_id or not isinstance(run_id, str) or len(run_id) > 200:
            raise ConfigError("--run-id must be a non-empty string of at most 200 characters")
        if samples_per_prompt < 1:
            raise ConfigError(f"--samples-per-prompt must be >= 1, got {samples_per_prompt}")
        if max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        if settle_seconds < 0:
            raise ConfigError(f"--settle-seconds must be >= 0, got {settle_seconds}")
        bootstrap_servers = bootstrap_servers or os.environ.get("RUNWATCH_BOOTSTRAP")
        if not bootstrap_servers:
            raise ConfigError("no Kafka address: pass --bootstrap HOST:PORT "
                              "(or set RUNWATCH_BOOTSTRAP)")
        if tokenizer is not None and not Path(tokenizer).expanduser().exists():
            raise ConfigError(f"--tokenizer {tokenizer} does not exist")
        self.run_id = run_id
        self.suite = (prompts if isinstance(prompts, PromptSuite)
                      else PromptSuite.from_jsonl(prompts))
        self.scorers = build_scorers(scorers) if isinstance(scorers, str) or (
            scorers and all(isinstance(s, str) for s in scorers)) else list(scorers)
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self.samples_per_prompt = int(samples_per_prompt)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.seed = seed
        self.batch_size = int(batch_size)
        self.tokenizer_path = Path(tokenizer).expanduser() if tokenizer is not None else None
        self.settle_seconds = float(settle_seconds)
        self.device_name = device
        self.spool_dir = spool_dir
        self.flush_timeout = float(flush_timeout)
        self.retry_failed = bool(retry_failed)
        self._retried: set[str] = set()
        self.progress = progress
        self.collector_options = dict(collector_options or {})
        self.collector = None
        self.failed_total = 0
        self._tokenizer_cache: dict[Path, Any] = {}
        self._last_pending: list[tuple[str, str]] | None = None
        self._device = None

        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)[:120]
        self.state_path = (Path(state_file).expanduser().resolve() if state_file is not None
                           else self.root / f".runwatch-watch-{safe_id}.json")
        if not self.state_path.parent.is_dir():
            raise ConfigError(f"the folder of the state file {self.state_path} does not exist")
        self._lock = _Lock(self.state_path.with_name(self.state_path.name + ".lock"))
        try:
            self.state = WatchState(self.state_path, run_id, self.root)
        except BaseException:
            self._lock.release()
            raise

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("completed" if exc_type is None else
                   "aborted" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    def close(self, status: str = "completed") -> dict | None:
        """Close the collector (flushing what it holds) and release the state lock."""
        stats = None
        try:
            if self.collector is not None:
                stats = self.collector.close(status)
                if stats.get("dropped"):
                    self._warn(f"the collector dropped {stats['dropped']} records "
                               f"({stats.get('dropped_by_reason')})")
                if stats.get("spool_messages"):
                    self._warn(f"{stats['spool_messages']} messages wait in the spool (broker "
                               f"unreachable); the next watcher run for {self.run_id} resends them")
        finally:
            self._lock.release()
        return stats

    # ------------------------------------------------------------------ output
    def _say(self, message: str) -> None:
        from tqdm import tqdm
        tqdm.write(message, file=sys.stdout)

    def _warn(self, message: str) -> None:
        from tqdm import tqdm
        tqdm.write(f"runwatch watch: {message}", file=sys.stderr)

    # ------------------------------------------------------------------ passes
    def _is_new(self, cand: Candidate) -> bool:
        prev = self.state.latest(cand.rel)
        if prev is None:
            return True
        if cand.missing:
            # A handled folder being rewritten: look again once it is complete.
            return False
        if prev.get("status") == "failed" and self.retry_failed and cand.rel not in self._retried:
            return True  # --retry-failed: once per watcher process
        if prev.get("fingerprint") == cand.fingerprint:
            return False
        if prev.get("status") == "failed":
            return True  # its files changed since it failed: one more try
        return cand.step_source != "name"  # DIR itself, latest/...: a rewrite is a new checkpoint

    def _settle(self, cands: list[Candidate], stop: threading.Event | None
                ) -> tuple[list[Candidate], list[tuple[str, str]]]:
        """Those whose files have not changed for ``settle_seconds``; the others with a reason."""
        if not cands:
            return [], []
        first = {c.rel: snapshot(c.path) for c in cands}
        now = time.time()
        # A file modified less than settle_seconds ago (or "in the future": clock skew on a
        # network file system) means: look again after settle_seconds, expect no change.
        fresh = {c.rel for c in cands
                 if any(now - mtime / 1e9 < self.settle_seconds for _, _, mtime in first[c.rel])}
        if fresh and self.settle_seconds > 0:
            if stop is not None:
                stop.wait(self.settle_seconds)
            else:
                time.sleep(self.settle_seconds)
        ready, waiting = [], []
        for c in cands:
            if c.rel in fresh and snapshot(c.path) != first[c.rel]:
                waiting.append((c.rel, "files still being written"))
            else:
                ready.append(c)
        return ready, waiting

    def run_once(self, stop: threading.Event | None = None) -> PassResult:
        """One pass: evaluate every new complete checkpoint, in step order."""
        result = PassResult()
        if self.collector is None and self._spool_pending():
            self._collector()  # records an earlier run left in the spool: resend them now
        new = [c for c in discover(self.root) if self._is_new(c)]
        result.pending.extend((c.rel, c.missing) for c in new if c.missing)
        ready, waiting = self._settle([c for c in new if not c.missing], stop)
        result.pending.extend(waiting)
        # Re-read the steps now that the files are settled (trainer_state.json may be new).
        fresh = {c.rel: c for c in discover(self.root)}
        ready = [fresh[c.rel] for c in ready if c.rel in fresh and not fresh[c.rel].missing]
        unnumbered = sorted((c for c in ready if c.step is None), key=self._mtime)
        ordinal = self.state.next_ordinal()
        for c in unnumbered:
            c.step, ordinal = ordinal, ordinal + 1
        ready.sort(key=lambda c: (c.step, _STEP_PRIORITY[c.step_source], c.rel))
        if ready:
            from tqdm import tqdm
            bar = tqdm(ready, desc=f"watch {self.run_id}", unit="ckpt", file=sys.stderr,
                       disable=not self.progress, dynamic_ncols=True)
            try:
                for c in bar:
                    if stop is not None and stop.is_set():
                        break
                    bar.set_postfix_str(f"step {c.step}", refresh=True)
                    outcome = self._process(c)
                    if outcome is None:
                        result.pending.append((c.rel, "files changed while loading"))
                    else:
                        getattr(result, outcome.status).append(outcome)
            finally:
                bar.close()
        self.failed_total += len(result.failed)
        return result

    def run(self, *, poll_seconds: float = 10.0, stop: threading.Event | None = None) -> None:
        """Poll until ``stop`` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            result = self.run_once(stop)
            pending = sorted(result.pending)
            if pending != self._last_pending and pending:
                for rel, why in pending:
                    self._say(f"waiting for {rel}: {why}")
            self._last_pending = pending
            stop.wait(poll_seconds)

    @staticmethod
    def _mtime(c: Candidate) -> float:
        try:
            return max((c.path / n).stat().st_mtime for n in ("config.json", *c.weight_files))
        except OSError:
            return time.time()

    # ------------------------------------------------------------------ one checkpoint
    def _entry(self, c: Candidate, status: str, **extra) -> dict:
        return {"path": c.rel, "step": c.step, "step_source": c.step_source, "status": status,
                "fingerprint": c.fingerprint, "at": time.time(), **extra}

    def _process(self, c: Candidate) -> Outcome | None:
        owner = self.state.step_owner(c.step)
        if owner is not None:
            reason = f"step {c.step} was already evaluated from {owner['path']}"
            self.state.record(self._entry(c, "skipped", reason=reason))
            self._warn(f"skipped {c.rel}: {reason}")
            return Outcome(c.rel, c.step, "skipped", reason=reason)
        self._retried.add(c.rel)
        started = time.monotonic()
        try:
            model, tokenizer = self._load(c)
        except CheckpointError as exc:
            return self._fail(c, str(exc))
        try:
            if _fingerprint(c.path, c.weight_files) != c.fingerprint:
                return None  # rewritten while we loaded it: next pass
            collector = self._collector()
            dropped_before = collector.stats()["dropped"]
            metrics = _trainer_metrics(c.path, c.step)
            collector.checkpoint(c.step, path=str(c.path), metrics=metrics)
            try:
                n = collector.evaluate(
                    c.step, model, tokenizer, self.suite,
                    samples_per_prompt=self.samples_per_prompt,
                    max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                    seed=self.seed, batch_size=self.batch_size)
            except Exception as exc:
                hint = self._length_hint(model, tokenizer)
                return self._fail(c, f"{c.label}: generation failed: {_one_line(exc)}{hint}; "
                                     f"fix the cause, then rerun with --retry-failed")
        finally:
            del model
            self._free_memory()
        self._flush(c)
        dropped = collector.stats()["dropped"] - dropped_before
        seconds = round(time.monotonic() - started, 2)
        extra = {"samples": n, "seconds": seconds, "metrics": metrics}
        if dropped:
            extra["dropped"] = dropped
            self._warn(f"{c.label}: the collector dropped {dropped} records")
        self.state.record(self._entry(c, "evaluated", **extra))
        self._say(f"step {c.step:>8}  {c.rel}  {n} samples  {seconds:.1f} s")
        return Outcome(c.rel, c.step, "evaluated", samples=n)

    def _length_hint(self, model, tokenizer) -> str:
        """Why generation may have failed: prompts + new tokens beyond the model's positions."""
        config = getattr(model, "config", None)
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings",
                                                                  None)
        if not isinstance(limit, int):
            return ""
        try:
            lengths = [len(ids) for ids in tokenizer(self.suite.prompts)["input_ids"]]
        except Exception:
            return ""
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[longest] + self.max_new_tokens <= limit:
            return ""
        return (f" (prompt {self.suite[longest].prompt_id} has {lengths[longest]} tokens; with "
                f"--max-new-tokens {self.max_new_tokens} that is beyond the model's {limit} "
                f"positions)")

    def _fail(self, c: Candidate, message: str) -> Outcome:
        self.state.record(self._entry(c, "failed", reason=message))
        self._warn(f"skipped: {message}")
        return Outcome(c.rel, c.step, "failed", reason=message)

    def _flush(self, c: Candidate) -> None:
        deadline = time.monotonic() + self.flush_timeout
        while not self.collector.flush(timeout=min(30.0, max(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise RunwatchError(
                    f"the collector did not flush the records of {c.label} within "
                    f"{self.flush_timeout:.0f} s; it is not marked as evaluated")

    def _spool_pending(self) -> bool:
        from runwatch.collectors.collector import DEFAULT_SPOOL_ROOT, _safe
        from runwatch.collectors.spool import SUFFIX

        folder = Path(self.spool_dir) if self.spool_dir else DEFAULT_SPOOL_ROOT / _safe(self.run_id)
        try:
            return any(folder.glob("*" + SUFFIX))
        except OSError:
            return False

    def _collector(self):
        if self.collector is None:
            from runwatch.collectors.collector import Collector

            options = dict(
                run_id=self.run_id, bootstrap_servers=self.bootstrap_servers,
                topic_prefix=self.topic_prefix, scorers=self.scorers, spool_dir=self.spool_dir,
                metadata={"source": "runwatch watch", "watch_dir": str(self.root)},
                config={"samples_per_prompt": self.samples_per_prompt,
                        "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                        "seed": self.seed, "prompt_sets": self.suite.counts(),
                        "scorers": [s.name for s in self.scorers]})
            options.update(self.collector_options)
            self.collector = Collector(**options)
        return self.collector

    # ------------------------------------------------------------------ loading
    def _torch_device(self):
        if self._device is None:
            import torch

            name = self.device_name
            if name == "auto":
                name = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                self._device = torch.device(name)
            except RuntimeError as exc:
                raise ConfigError(f"--device {self.device_name}: {exc}") from None
        return self._device

    def _load(self, c: Candidate):
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        tokenizer = self._tokenizer_for(c)
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = AutoModelForCausalLM.from_pretrained(c.path)
            model.to(self._torch_device())
            model.eval()
        except (KeyboardInterrupt, SystemExit):
            raise
        except ConfigError:
            raise
        except BaseException as exc:
            raise CheckpointError(f"{c.label}: cannot load the model: {_one_line(exc)}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        return model, tokenizer

    def _tokenizer_for(self, c: Candidate):
        if self.tokenizer_path is not None:
            source, cached = self.tokenizer_path, True
        elif _has_tokenizer(c.path):
            source, cached = c.path, False
        elif _has_tokenizer(self.root):
            source, cached = self.root, True
        else:
            raise CheckpointError(f"{c.label}: no tokenizer in {c.path} nor in {self.root}; "
                                  f"pass --tokenizer PATH")
        if cached and source in self._tokenizer_cache:
            return self._tokenizer_cache[source]
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            message = f"cannot load the tokenizer from {source}: {_one_line(exc)}"
            if source == self.tokenizer_path:
                raise ConfigError(message) from None
            raise CheckpointError(f"{c.label}: {message}") from None
        if cached:
            self._tokenizer_cache[source] = tokenizer
        return tokenizer

    def _free_memory(self) -> None:
        gc.collect()
        if self._device is not None and self._device.type == "cuda":
            import torch
            torch.cuda.empty_cache()


def watch_once(directory: str | Path, **kwargs) -> PassResult:
    """Evaluate the backlog of ``directory`` once and close; see :class:`Watcher`."""
    with Watcher(directory, **kwargs) as watcher:
        return watcher.run_once()


# --------------------------------------------------------------------------- CLI
@contextmanager
def _graceful_signals(stop: threading.Event, say) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: finish the current checkpoint, then stop. Second Ctrl-C: abort."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal the parent set to be ignored (e.g. SIGINT of a background job) stays ignored.
    previous = {s: h for s in (signal.SIGINT, signal.SIGTERM)
                if (h := signal.getsignal(s)) not in (signal.SIG_IGN, None)}

    def handler(signum, _frame):
        stop.set()
        for s, h in previous.items():
            signal.signal(s, h)
        say(f"runwatch watch: {signal.Signals(signum).name} received; stopping after the "
            f"current checkpoint (Ctrl-C again to abort)\n")

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def cmd_watch(args) -> int:
    if not args.poll_seconds > 0:
        raise ConfigError(f"--poll-seconds must be > 0, got {args.poll_seconds:g}")
    from runwatch.transport.security import kafka_options

    security = kafka_options(args.kafka_config)
    watcher = Watcher(
        args.dir, run_id=args.run_id, prompts=args.prompts, bootstrap_servers=args.bootstrap,
        topic_prefix=args.topic_prefix, scorers=args.scorers,
        samples_per_prompt=args.samples_per_prompt, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, seed=args.seed, batch_size=args.batch_size,
        tokenizer=args.tokenizer, state_file=args.state_file, settle_seconds=args.settle_seconds,
        device=args.device, spool_dir=args.spool_dir, retry_failed=args.retry_failed,
        progress=not args.no_progress,
        collector_options={"kafka_options": security, **canaries.collector_options(args)})
    stop = threading.Event()
    status = "failed"
    try:
        # os.write: a print() inside a signal handler can collide with a print in progress.
        with _graceful_signals(stop, lambda m: os.write(2, m.encode())):
            if args.once:
                result = watcher.run_once(stop)
                for rel, why in result.pending:
                    print(f"not evaluated yet: {rel} ({why})")
                steps = f" (steps {', '.join(map(str, result.steps))})" if result.steps else ""
                print(f"evaluated {len(result.evaluated)} checkpoint(s){steps}"
                      f", {result.samples} samples; {len(result.failed)} failed, "
                      f"{len(result.skipped)} skipped, {len(result.pending)} incomplete; "
                      f"state in {watcher.state_path}")
            else:
                print(f"watching {watcher.root} every {args.poll_seconds:g} s for run "
                      f"{args.run_id} (Ctrl-C to stop); state in {watcher.state_path}", flush=True)
                watcher.run(poll_seconds=args.poll_seconds, stop=stop)
                print(f"stopped; {len(watcher.state.evaluated())} checkpoint(s) evaluated "
                      f"for {args.run_id} so far")
        status = "completed"
    except KeyboardInterrupt:
        status = "aborted"
        raise
    finally:
        watcher.close(status)
    return 1 if watcher.failed_total else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("dir", metavar="DIR", help="checkpoint directory to watch")
    p.add_argument("--run-id", required=True, help="run id the samples are recorded under")
    p.add_argument("--prompts", action="append", required=True, metavar="FILE",
                   help="prompt suite JSONL file (repeat for several)")
    p.add_argument("--bootstrap", default=env("RUNWATCH_BOOTSTRAP", "127.0.0.1:9092"),
                   help="Kafka bootstrap HOST:PORT "
                        "[env RUNWATCH_BOOTSTRAP, default 127.0.0.1:9092]")
    p.add_argument("--topic-prefix", default=env("RUNWATCH_TOPIC_PREFIX", "runwatch"),
                   help="topics are PREFIX.samples and PREFIX.runs [env RUNWATCH_TOPIC_PREFIX]")
    from runwatch.transport.security import add_argument as kafka_config_argument

    kafka_config_argument(p)
    p.add_argument("--samples-per-prompt", type=int, default=1, metavar="N",
                   help="completions sampled per prompt [1]")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="[32]")
    p.add_argument("--temperature", type=float, default=1.0, help="<= 0 means greedy [1.0]")
    p.add_argument("--seed", type=int, default=0, help="sampling seed, the same at every "
                   "checkpoint [0]")
    p.add_argument("--batch-size", type=int, default=64, help="generation batch size [64]")
    p.add_argument("--poll-seconds", type=float, default=10.0, metavar="S",
                   help="seconds between looks at DIR [10]")
    p.add_argument("--once", action="store_true",
                   help="evaluate the complete checkpoints not evaluated yet, then exit")
    p.add_argument("--scorers", default=DEFAULT_SCORERS,
                   help=f"comma-separated, from {', '.join(SCORER_NAMES)} [{DEFAULT_SCORERS}]")
    p.add_argument("--state-file", default=None, metavar="PATH",
                   help="what was evaluated [DIR/.runwatch-watch-RUN_ID.json]")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer folder [the checkpoint's own, else DIR's]")
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available), cpu, cuda:1... [auto]")
    p.add_argument("--settle-seconds", type=float, default=1.0, metavar="S",
                   help="a checkpoint's files must not change for this long [1]")
    p.add_argument("--spool-dir", default=None, metavar="PATH",
                   help="where records wait while Kafka is down [~/.cache/runwatch/spool/RUN_ID]")
    p.add_argument("--retry-failed", action="store_true",
                   help="evaluate again, once, the checkpoints recorded as failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    canaries.add_arguments(p)
    p.set_defaults(func=cmd_watch)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``watch`` sub-command to ``runwatch``'s sub-parsers."""
    p = subparsers.add_parser(
        "watch", help="evaluate each new checkpoint in a directory (sidecar evaluator)",
        description="Watch a checkpoint directory (save_pretrained folders, Trainer "
                    "checkpoint-N folders) and evaluate each new complete checkpoint once on a "
                    "prompt suite, streaming scored samples to Kafka.")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``runwatch watch`` on its own: ``main(["DIR", "--run-id", ...])`` (a leading "watch" is
    accepted too). Parsing and error reporting are the CLI's own."""
    from runwatch.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["watch"]:
        argv = argv[1:]
    return cli_main(["watch", *argv])


if __name__ == "__main__":
    sys.exit(main())
