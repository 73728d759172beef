"""Stage 3, storage: the DuckDB file (``db``: connect, migrate), the batch writer (``store``)
and review events applied to alert state (``reviews``)."""
