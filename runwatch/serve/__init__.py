"""Stage 5, serving: the long-running service (ingest + detector + dashboard in one process,
``service``) and dashboard authentication (``auth``)."""
