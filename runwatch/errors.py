"""One base exception for the package; each subclass is a kind of failure a user can act on.

Messages say what failed, with identifiers, and what to do next; the CLI prints them as one
line (no traceback) and exits non-zero.

The base classes live with the client (``runwatch.collectors.errors``), which must not import
the server; they are re-exported here.
"""

from runwatch.collectors.errors import ConfigError, RunwatchError

__all__ = ["RunwatchError", "ConfigError", "BrokerError", "MissingToolError",
           "DatabaseLockedError", "QueryError"]


class BrokerError(RunwatchError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""


class MissingToolError(BrokerError):
    """Java or Maven is not installed."""


class DatabaseLockedError(RunwatchError):
    """Another process holds the DuckDB file read-write."""


class QueryError(RunwatchError):
    """A named query is unknown, or its parameters are missing or extra."""
