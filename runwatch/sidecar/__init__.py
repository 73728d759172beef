"""Stage 1 (out of process): the checkpoint watcher that probes checkpoints a job writes to disk,
for jobs that cannot attach a collector."""
