"""One base exception for the package; each subclass is a kind of failure a user can act on.

Messages say what failed, with identifiers, and what to do next; the CLI prints them as one
line (no traceback) and exits non-zero.
"""


class RunwatchError(Exception):
    """Base class: anything runwatch reports to a user as a clear message."""


class ConfigError(RunwatchError):
    """A setting or argument is missing or invalid."""


class BrokerError(RunwatchError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""


class MissingToolError(BrokerError):
    """Java or Maven is not installed."""


class DatabaseLockedError(RunwatchError):
    """Another process holds the DuckDB file read-write."""


class QueryError(RunwatchError):
    """A named query is unknown, or its parameters are missing or extra."""
