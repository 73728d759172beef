"""The client's exceptions. The server's ``runwatch.errors`` builds on these, so the CLI prints
any of them as one line; the client itself imports nothing of the server."""


class RunwatchError(Exception):
    """Base class: anything runwatch reports to a user as a clear message."""


class ConfigError(RunwatchError):
    """A setting or argument is missing or invalid."""


class CollectorWarning(RuntimeWarning):
    """The collector cannot deliver (no Kafka client, an unusable setting): training goes on and
    records wait in the spool. Issued once per collector, with the fix."""
