"""runwatch: monitor the behaviour of models while they train.

``from runwatch import Collector`` is the training job's entry point (the light client,
``runwatch.collectors``); ``runwatch.connect(URL, token=...)`` is the notebook's, for the query
API of a running ``runwatch serve`` (``runwatch.query.client``). Importing ``runwatch`` itself
loads nothing else.
"""

__version__ = "0.2.0"  # the one version number: pyproject.toml and `runwatch --version` read it

_CLIENT = ("Collector", "KeywordScorer", "RepetitionScorer", "Score", "Scorer")


def __getattr__(name):
    if name in ("connect", "Client"):
        from runwatch.query import client

        return getattr(client, name)
    if name in _CLIENT:
        from runwatch import collectors

        return getattr(collectors, name)
    raise AttributeError(f"module 'runwatch' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_CLIENT, "connect", "Client"])
