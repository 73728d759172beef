"""Stage 3, ingest: Kafka records -> validated rows -> one DuckDB transaction per batch.

``decode`` turns wire messages into rows or dead letters; ``materializer`` is the consumer loop
that commits rows and Kafka offsets exactly once (see docs/architecture.md).
"""
