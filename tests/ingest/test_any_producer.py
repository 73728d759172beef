"""Records from a producer that is not our collector: Debian's kcat (librdkafka) writes every
compression codec Kafka has, and a message the client cannot decode (its batch corrupted on the
broker's disk) is dead-lettered with its coordinates instead of stalling the partition."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from runwatch.collectors.wire import encode_batch
from tests.helpers import dumps, ingest_until_idle, query, sample_record

pytestmark = [pytest.mark.kafka,
              pytest.mark.skipif(shutil.which("kcat") is None,
                                 reason="kcat is not on PATH (apt-get install -y kcat)")]

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def _kcat(bootstrap, topic, key, values: list[bytes], codec="none"):
    subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-k", key, "-z", codec,
                    "-X", "linger.ms=0"], input=b"\n".join(values) + b"\n", check=True,
                   timeout=60)


def test_kcat_writes_every_codec_and_every_record_is_stored(bootstrap, topic_prefix, db_path):
    topic = f"{topic_prefix}.samples"
    for codec in CODECS:
        run_id = f"kcat-{codec}"
        messages = [encode_batch(run_id, [sample_record(run_id=run_id, sample_id=f"{codec}-{m}-{i}",
                                                        step=m) for i in range(5)])
                    for m in range(4)]
        _kcat(bootstrap, topic, run_id, messages, codec)
    ingest_until_idle(db_path, bootstrap, topic_prefix)
    counts = dict(query(db_path, "SELECT run_id, count(*) FROM samples GROUP BY run_id"))
    assert counts == {f"kcat-{codec}": 20 for codec in CODECS}
    assert query(db_path, "SELECT count(*) FROM dead_letters") == [(0,)]


def _segment(kafka_broker, topic):
    (segment,) = [p for p in kafka_broker.data_dir.rglob("*.log") if p.parent.name == f"{topic}-0"]
    return segment


def test_a_corrupt_message_is_dead_lettered_with_its_coordinates_and_the_rest_is_read(
        kafka_broker, bootstrap, topic_prefix, db_path):
    topic = f"{topic_prefix}.samples"
    records = [sample_record(run_id="corrupt-run", sample_id=f"c-{i}", step=i,
                             completion=f"completion-marker-{i}") for i in range(3)]
    for r in records:  # one message (one batch) each
        _kcat(bootstrap, topic, "corrupt-run", [dumps(r)])
    segment = _segment(kafka_broker, topic)
    data = bytearray(segment.read_bytes())
    at = data.index(b"completion-marker-1")
    data[at] ^= 0x20  # one flipped bit: the batch fails its CRC check
    with open(segment, "r+b") as f:
        f.seek(at)
        f.write(bytes(data[at:at + 1]))

    ingest_until_idle(db_path, bootstrap, topic_prefix)
    assert query(db_path, "SELECT sample_id FROM samples ORDER BY sample_id") == [("c-0",), ("c-2",)]
    ((t, part, off, reason),) = query(
        db_path, "SELECT topic, kafka_partition, kafka_offset, reason FROM dead_letters")
    assert (t, part, off) == (topic, 0, 1)
    assert f"undecodable Kafka message at {topic}[0]@1" in reason and "crc" in reason.lower()

    # Read again from the stored offsets: nothing doubles, the dead letter stays one.
    ingest_until_idle(db_path, bootstrap, topic_prefix)
    assert query(db_path, "SELECT count(*) FROM samples") == [(2,)]
    assert query(db_path, "SELECT count(*) FROM dead_letters") == [(1,)]
