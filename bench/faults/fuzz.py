"""Fault: fuzzed messages interleaved with valid ones, through a real broker into the monitor.

    .venv/bin/python -m bench.faults.fuzz [--messages 10000] [--seed 11] [--huge 10]

Produces ``--messages`` Kafka messages (seeded) with a bare kafka-python producer, mixing:
valid single records and batch envelopes; random bytes; truncated valid records; byte-mutated
valid records; structurally broken records (wrong types, missing fields, raw JSON
``NaN`` / ``Infinity`` / ``-Infinity`` / ``1e999`` scores, rewards and times, texts over 65,536
characters, ids over 200 characters, 1,001 scores, meta nested 801 deep, integers beyond int64,
lone surrogates, invalid UTF-8, null values, non-object JSON, bad envelopes); batches with a
few bad records among good ones; run events (valid and broken) on the runs topic; garbage on
the alerts topic; and ``--huge`` messages over the 4 MiB limit. A ``runwatch ingest`` monitor
runs while they are produced (it must stay alive), then ``runwatch ingest --until-idle``
finishes. Every message is then checked by its Kafka offset: valid samples and events stored,
invalid messages in ``dead_letters`` with a non-empty reason and nothing stored, the good
records of mixed batches stored and only their bad records dead-lettered, byte-mutated
messages accounted for exactly once (stored or dead-lettered, whichever they turned into).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter

from bench.faults._common import (Report, child_env, ingest_until_idle, own_broker, query,
                                  run_main, start_monitor, stop_process, topic_prefix, workdir)

CATS = ("injury", "insult", "false_completion")
WORDS = ("the", "model", "said", "ok", "done", "hurt", "fine", "ünïcødé", "日本語", "🙂", "\"q\"", "\\")
MIB = 1024 * 1024


class Gen:
    """Seeded message generator; every message comes with what the monitor must make of it."""

    def __init__(self, seed: int, prefix: str):
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.n = 0  # message counter (ids are unique per message)

    # ---------------------------------------------------------------- valid material
    def text(self, k: int = 12) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(k))

    def sample(self, tag: str, j: int, run_id: str) -> dict:
        r = self.rng
        rec = {"schema_version": 1, "kind": "sample", "sample_id": f"{tag}-{self.n}-{j}",
               "run_id": run_id, "step": r.randrange(0, 10_000),
               "prompt_set": r.choice(("red_team", "on_distribution")), "prompt_id": f"p{r.randrange(100)}",
               "prompt": "Tell me " + self.text(4), "completion": self.text(), "source": r.choice(("probe", "rollout")),
               "scores": [{"scorer": "rules", "category": c, "score": round(r.random(), 4),
                           "flagged": r.random() < 0.1, "threshold": 0.5} for c in CATS],
               "created_at": time.time()}
        if r.random() < 0.5:
            rec["reward"] = round(r.uniform(-1, 1), 4)
        if r.random() < 0.3:
            rec["meta"] = {"temperature": 0.7, "nested": {"a": [1, 2, {"b": None}]}}
        if r.random() < 0.2:
            rec["pair_id"], rec["cue"] = f"pair-{self.n}", r.choice(("monitored", "unmonitored"))
        return rec

    def run_id(self) -> str:
        return f"fuzz-run-{self.rng.randrange(4)}"

    @staticmethod
    def enc(doc) -> bytes:
        return json.dumps(doc, ensure_ascii=False).encode("utf-8")

    def valid_value(self, tag: str) -> tuple[bytes, list[dict]]:
        run = self.run_id()
        if self.rng.random() < 0.4:
            rec = self.sample(tag, 0, run)
            return self.enc(rec), [rec]
        recs = [self.sample(tag, j, run) for j in range(self.rng.randint(1, 20))]
        return self.enc({"schema_version": 1, "kind": "batch", "run_id": run, "records": recs}), recs

    # ---------------------------------------------------------------- broken records
    def broken_record(self, whole_message: bool) -> tuple[str, object]:
        """(label, record dict or raw bytes): a sample that must be refused.

        With ``whole_message`` False only dict-level faults (usable inside a batch)."""
        r = self.rng
        rec = self.sample("bad", 0, "fuzz-run-0")
        big = r.randint(65_537, 70_000)
        dict_faults = {
            "step as a string": lambda d: d.update(step="ten"),
            "step as a float": lambda d: d.update(step=1.5),
            "step as a boolean": lambda d: d.update(step=True),
            "negative step": lambda d: d.update(step=-r.randint(1, 99)),
            "step beyond int64": lambda d: d.update(step=2**63 + r.randint(0, 999)),
            "flagged as a string": lambda d: d["scores"][0].update(flagged="yes"),
            "flagged as 1": lambda d: d["scores"][0].update(flagged=1),
            "score as a string": lambda d: d["scores"][0].update(score="0.5"),
            "score null": lambda d: d["scores"][0].update(score=None),
            "scores as an object": lambda d: d.update(scores={"a": 1}),
            "scores missing": lambda d: d.pop("scores"),
            "score not an object": lambda d: d.update(scores=[1, 2]),
            "prompt as a number": lambda d: d.update(prompt=42),
            "completion null": lambda d: d.update(completion=None),
            "completion missing": lambda d: d.pop("completion"),
            "completion over 65,536 chars": lambda d: d.update(completion="z" * big),
            "prompt over 65,536 chars": lambda d: d.update(prompt="q" * big),
            "sample_id over 200 chars": lambda d: d.update(sample_id="i" * r.randint(201, 500)),
            "empty sample_id": lambda d: d.update(sample_id=""),
            "sample_id missing": lambda d: d.pop("sample_id"),
            "category over 200 chars": lambda d: d["scores"][0].update(category="c" * 300),
            "1,001 scores": lambda d: d.update(scores=[d["scores"][0]] * 1001),
            "bad source": lambda d: d.update(source=r.choice(("eval", "", None, 3))),
            "meta as a list": lambda d: d.update(meta=[1, 2]),
            "cue as a number": lambda d: d.update(cue=7),
            "pair_id over 200 chars": lambda d: d.update(pair_id="p" * 250),
            "schema_version 2": lambda d: d.update(schema_version=2),
            "schema_version as a string": lambda d: d.update(schema_version="1"),
            "unknown kind": lambda d: d.update(kind="telemetry"),
            "kind missing": lambda d: d.pop("kind"),
            "created_at as a string": lambda d: d.update(created_at="yesterday"),
            "created_at out of range": lambda d: d.update(created_at=1e13),
            "reward as a string": lambda d: d.update(reward="high"),
            "run_id differs from the batch": lambda d: d.update(run_id="someone-else"),
        }
        raw_faults = {  # placeholders replaced in the encoded bytes
            "NaN score": ("scores0", "score", b"NaN"),
            "Infinity score": ("scores0", "score", b"Infinity"),
            "-Infinity score": ("scores0", "score", b"-Infinity"),
            "1e999 score": ("scores0", "score", b"1e999"),
            "NaN threshold": ("scores0", "threshold", b"NaN"),
            "NaN reward": ("top", "reward", b"NaN"),
            "Infinity created_at": ("top", "created_at", b"Infinity"),
            "lone surrogate in completion": ("top", "completion", b'"ok \\ud800 bad"'),
            "invalid UTF-8 in completion": ("top", "completion", b'"ok \xff\xfe bad"'),
            "integer beyond 64 bits": ("top", "step", b"123456789012345678901234567890"),
            "meta nested 801 deep": ("top", "meta", b'{"a":' * 801 + b"1" + b"}" * 801),
        }
        if whole_message:
            if r.random() < 0.35:
                label = r.choice(sorted(raw_faults))
                where, key, raw = raw_faults[label]
                target = rec["scores"][0] if where == "scores0" else rec
                target[key] = "__FUZZ__"
                return label, self.enc(rec).replace(b'"__FUZZ__"', raw, 1)
            if r.random() < 0.12:
                label, value = r.choice([
                    ("JSON array", b"[1, 2, 3]"), ("JSON string", b'"a sample"'), ("JSON number", b"42"),
                    ("JSON null", b"null"), ("empty batch", b'{"schema_version":1,"kind":"batch","run_id":"r","records":[]}'),
                    ("batch records not a list", b'{"schema_version":1,"kind":"batch","run_id":"r","records":{}}'),
                    ("batch without run_id", b'{"schema_version":1,"kind":"batch","records":[{}]}'),
                    ("unknown envelope field", b'{"schema_version":1,"kind":"batch","run_id":"r","records":[{}],"x":1}'),
                    ("trailing comma", b'{"schema_version":1,"kind":"sample",}'),
                    ("empty value", b""), ("null value (tombstone)", None)])
                return label, value
        batch_only = "run_id differs from the batch"
        label = r.choice(sorted(k for k in dict_faults if k != batch_only) if whole_message else
                         sorted(k for k in dict_faults if "over 65,536" not in k and k != "1,001 scores"))
        dict_faults[label](rec)
        return label, rec

    # ---------------------------------------------------------------- the mix
    def message(self) -> tuple[str, str, bytes | None, dict]:
        """(topic suffix, class, value, expectation)."""
        self.n += 1
        r = self.rng
        roll = r.random()
        if roll < 0.30:
            value, recs = self.valid_value("v")
            return "samples", "valid", value, {"samples": [x["sample_id"] for x in recs]}
        if roll < 0.38:
            n = r.choice((0, 1, 2, 8, 64, 512, 2000))
            return "samples", "random bytes", r.randbytes(n), {"invalid": True}
        if roll < 0.46:
            value, _ = self.valid_value("t")
            return "samples", "truncated", value[: r.randrange(len(value))], {"invalid": True}
        if roll < 0.54:
            value, recs = self.valid_value("m")
            data = bytearray(value)
            for _ in range(r.randint(1, 3)):
                data[r.randrange(len(data))] = r.randrange(256)
            return "samples", "byte-mutated", bytes(data), {"either": len(recs)}
        if roll < 0.84:
            label, rec = self.broken_record(True)
            value = rec if rec is None or isinstance(rec, bytes) else self.enc(rec)
            return "samples", "broken: " + label, value, {"invalid": True}
        if roll < 0.92:
            run = "fuzz-run-1"
            good = [self.sample("x", j, run) for j in range(r.randint(2, 15))]
            bad = []
            for _ in range(r.randint(1, 3)):
                label, rec = self.broken_record(False)
                rec["run_id"] = run if rec.get("run_id") == "fuzz-run-0" else rec.get("run_id")
                rec["sample_id"] = f"xb-{self.n}-{len(bad)}" if "sample_id" in rec and len(str(rec["sample_id"])) <= 200 and rec["sample_id"] else rec.get("sample_id")
                bad.append(rec)
            recs = good + bad
            r.shuffle(recs)
            doc = {"schema_version": 1, "kind": "batch", "run_id": run, "records": recs}
            return "samples", "mixed batch", self.enc(doc), {"samples": [x["sample_id"] for x in good],
                                                            "dead": len(bad)}
        if roll < 0.98:
            ev = {"schema_version": 1, "kind": "checkpoint", "event_id": f"ev-{self.n}",
                  "run_id": self.run_id(), "ts": time.time(), "step": r.randrange(10_000),
                  "metrics": {"loss": round(r.random(), 4)}}
            if r.random() < 0.5:
                return "runs", "valid event", self.enc(ev), {"events": 1}
            label, fault = r.choice([
                ("event ts NaN", lambda e: self.enc({**e, "ts": "__F__"}).replace(b'"__F__"', b"NaN")),
                ("event without event_id", lambda e: self.enc({k: v for k, v in e.items() if k != "event_id"})),
                ("event negative step", lambda e: self.enc({**e, "step": -1})),
                ("event ts out of range", lambda e: self.enc({**e, "ts": 1e20})),
                ("collector_stats negative", lambda e: self.enc({**e, "kind": "collector_stats", "stats": {
                    "offered": -1, "sampled": 0, "sent": 0, "spooled": 0, "resent": 0, "dropped": 0}})),
                ("run_finished bad status", lambda e: self.enc({**e, "kind": "run_finished", "status": "exploded",
                                                                "metrics": None} | {"metrics": 1})),
                ("event random bytes", lambda e: r.randbytes(100)),
            ])
            return "runs", "broken event: " + label, fault(ev), {"invalid": True}
        return "alerts", "alerts garbage", b"\x00not json " + r.randbytes(40), {"invalid": True}

    def huge(self) -> tuple[str, str, bytes, dict]:
        self.n += 1
        size = self.rng.randint(4 * MIB + 1, 6 * MIB)
        if self.rng.random() < 0.5:
            rec = self.sample("h", 0, "fuzz-run-2")
            rec["completion"] = "h" * size
            return "samples", "huge: valid JSON over 4 MiB", self.enc(rec), {"invalid": True}
        return "samples", "huge: junk over 4 MiB", b"{" * size, {"invalid": True}


def _self_check(gen_value, expect) -> None:
    """The generator's labels agree with the reference validator (else it is the generator's bug)."""
    from runwatch.ingest.decode import decode_message

    if "either" in expect or len(gen_value or b"") > 4 * MIB:
        return
    records, dead = decode_message(gen_value)
    if expect.get("invalid"):
        assert not [x for x in records if x.get("kind") == "sample"] and dead, (gen_value[:300], records)
    elif "samples" in expect:
        assert len(records) == len(expect["samples"]) and len(dead) == expect.get("dead", 0), (
            gen_value[:300], dead)


def _histogram(reasons) -> list[tuple[str, int]]:
    def norm(reason: str) -> str:
        reason = re.sub(r"'[^']{40,}'", "'...'", reason)
        reason = re.sub(r"\d+", "N", reason)
        return reason[:100]

    return Counter(norm(x) for x in reasons).most_common()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--huge", type=int, default=None, help="messages over 4 MiB [messages / 1000, at least 2]")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    huge = args.huge if args.huge is not None else max(2, args.messages // 1000)

    rep = Report("fuzz")
    from kafka import KafkaProducer

    with workdir("fuzz", args.keep) as wd, own_broker(wd) as broker:
        prefix = topic_prefix("fuzz")
        db, log = wd / "view.duckdb", wd / "monitor.log"
        gen = Gen(args.seed, prefix)
        huge_at = set(gen.rng.sample(range(args.messages), huge))
        monitor = start_monitor("ingest", db, broker.bootstrap, prefix, log, env=child_env())
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                 max_request_size=16 * MIB, linger_ms=20)
        sent, classes, alive_checks = [], Counter(), 0
        monitor_died_at = None
        try:
            t0 = time.monotonic()
            for i in range(args.messages):
                topic, cls, value, expect = gen.huge() if i in huge_at else gen.message()
                _self_check(value, expect)
                key = b"fuzz-run" if topic != "alerts" else b"al-fuzz"
                fut = producer.send(f"{prefix}.{topic}", key=key, value=value)
                sent.append((f"{prefix}.{topic}", cls, expect, fut))
                classes[cls.split(":")[0]] += 1
                if i % 200 == 0:
                    alive_checks += 1
                    if monitor.poll() is not None and monitor_died_at is None:
                        monitor_died_at = i
            producer.flush(timeout=120)
            produce_s = time.monotonic() - t0
            time.sleep(3)  # let the monitor chew on the tail while we watch it
            alive = monitor.poll() is None and monitor_died_at is None
            term_rc = stop_process(monitor)
            final_rc, line = ingest_until_idle(db, broker.bootstrap, prefix, log)
            print(line)
        finally:
            producer.close()
            stop_process(monitor, timeout=30)
        where = [(topic, fut.get(timeout=30).offset, cls, expect) for topic, cls, expect, fut in sent]

        samples_at = dict(query(db, "SELECT kafka_offset, count(*) FROM samples GROUP BY 1"))
        stored_ids = {x[0] for x in query(db, "SELECT sample_id FROM samples")}
        dead_at = {(t, o): (n, ok) for t, o, n, ok in query(
            db, "SELECT topic, kafka_offset, count(*), bool_and(length(trim(reason)) > 0) FROM dead_letters GROUP BY ALL")}
        events_at = dict(query(db, "SELECT kafka_offset, count(*) FROM run_events WHERE kafka_topic = ? GROUP BY 1",
                               [f"{prefix}.runs"]))
        reasons = [x[0] for x in query(db, "SELECT reason FROM dead_letters")]
        dead_total = len(reasons)

    wrong = Counter()
    examples = {}
    valid_samples = invalid_msgs = either_stored = either_dead = 0
    for topic, off, cls, expect in where:
        n_s = samples_at.get(off, 0) if topic.endswith(".samples") else 0
        n_d, reasons_ok = dead_at.get((topic, off), (0, True))
        n_e = events_at.get(off, 0) if topic.endswith(".runs") else 0
        if "either" in expect:
            ok = n_s + n_d >= 1 and n_s <= expect["either"] and reasons_ok
            either_stored += n_s
            either_dead += n_d
        elif expect.get("invalid"):
            invalid_msgs += 1
            ok = n_s == 0 and n_e == 0 and n_d >= 1 and reasons_ok
        elif "events" in expect:
            ok = n_e == 1 and n_d == 0
        else:
            ids = expect["samples"]
            valid_samples += len(ids)
            ok = (n_s == len(ids) and all(x in stored_ids for x in ids) and n_d == expect.get("dead", 0)
                  and reasons_ok)
        if not ok:
            wrong[cls] += 1
            examples.setdefault(cls, (topic, off, n_s, n_d, n_e))
    hist = _histogram(reasons)

    rep.check("monitor (`runwatch ingest`) stayed alive while fuzzed", alive,
              f"died after message {monitor_died_at}" if monitor_died_at is not None else f"{alive_checks} checks")
    rep.check("monitor stopped cleanly on SIGTERM (exit 0)", term_rc == 0, f"exit {term_rc}")
    rep.check("`runwatch ingest --until-idle` exited 0", final_rc == 0, f"exit {final_rc}: {line}")
    rep.check("every message accounted for as expected (by topic and offset)", not wrong,
              f"wrong: {dict(wrong)}; first: {examples}" if wrong else f"{len(where):,} messages")
    rep.check("every valid sample stored (interleaved with the fuzz)", all(
        x in stored_ids for _, _, _, e in where for x in e.get("samples", ())), f"{valid_samples:,} samples")
    rep.check("every dead letter has a non-empty reason", all(ok for _, ok in dead_at.values()))
    rep.figures.update({
        "messages": len(where), "huge_messages": huge, "valid_samples_sent": valid_samples,
        "samples_stored": len(stored_ids), "invalid_messages": invalid_msgs, "dead_letters": dead_total,
        "byte_mutated_stored_samples": either_stored, "byte_mutated_dead_letters": either_dead,
        "classes": dict(classes), "produce_s": round(produce_s, 1), "reasons": hist,
        "wrong_by_class": dict(wrong), "seed": args.seed})
    rep.summary = (f"{len(where):,} msgs: {invalid_msgs:,} invalid all dead-lettered, {valid_samples:,} valid "
                   f"samples stored; {dead_total:,} dead letters, {len(hist)} distinct reasons")
    print("\nDead letters by reason (numbers shown as N):")
    for reason, n in hist[:40]:
        print(f"  {n:6d}  {reason}")
    if len(hist) > 40:
        print(f"  {sum(n for _, n in hist[40:]):6d}  ({len(hist) - 40} other reasons)")
    rows = [["messages produced", f"{len(where):,}"],
            ["  by class", ", ".join(f"{k} {v}" for k, v in classes.most_common())],
            ["messages over 4 MiB", huge],
            ["valid samples sent / stored", f"{valid_samples:,} / {len(stored_ids) - either_stored:,}"],
            ["invalid messages (all must be dead-lettered)", f"{invalid_msgs:,}"],
            ["dead letters (rows)", f"{dead_total:,}"],
            ["byte-mutated: samples that stayed valid / dead letters", f"{either_stored} / {either_dead}"],
            ["distinct reasons (numbers folded)", len(hist)],
            ["messages not as expected", sum(wrong.values())]]
    return rep.finish(f"Fault: {len(where):,} fuzzed messages", rows)


if __name__ == "__main__":
    run_main(main)
