"""runwatch collectors: the library a training job imports.

Light on purpose: importing it loads neither torch, transformers, duckdb nor streamlit. Heavy
scorers and integrations import their dependencies when used.

Installed, this folder is ``runwatch.collectors``. From a source checkout the pre-0.2 name
``collectors`` still imports (with a DeprecationWarning): it is the same modules, not a copy.
"""

if __name__ == "collectors":  # the deprecated top-level name (source checkout only)
    import importlib as _importlib
    import importlib.abc as _abc
    import importlib.util as _util
    import sys as _sys
    import warnings as _warnings

    _warnings.warn("`collectors` is deprecated: import `runwatch.collectors` (or `from runwatch "
                   "import Collector`); the old name will be removed in 0.3",
                   DeprecationWarning, stacklevel=2)

    class _Alias(_abc.MetaPathFinder, _abc.Loader):
        """``collectors.X`` -> the module ``runwatch.collectors.X`` itself."""

        def find_spec(self, fullname, path=None, target=None):
            if fullname.startswith("collectors."):
                return _util.spec_from_loader(fullname, self)
            return None

        def create_module(self, spec):
            return _importlib.import_module("runwatch." + spec.name)

        def exec_module(self, module):
            pass

    _sys.meta_path.insert(0, _Alias())
    _sys.modules["collectors"] = _importlib.import_module("runwatch.collectors")

from runwatch.collectors.collector import Collector
from runwatch.collectors.scoring import KeywordScorer, RepetitionScorer, Score, Scorer

__all__ = ["Collector", "KeywordScorer", "RepetitionScorer", "Score", "Scorer",
           "PipelineScorer", "EmbeddingScorer", "PromptSuite", "TorchProbeHook", "RunwatchCallback",
           "RunwatchGRPO"]


def __getattr__(name):  # lazy imports of the heavier parts
    if name == "PipelineScorer":
        from runwatch.collectors.pipeline import PipelineScorer
        return PipelineScorer
    if name == "EmbeddingScorer":
        from runwatch.collectors.embedding import EmbeddingScorer
        return EmbeddingScorer
    if name == "PromptSuite":
        from runwatch.collectors.prompts import PromptSuite
        return PromptSuite
    if name == "TorchProbeHook":
        from runwatch.collectors.hooks import TorchProbeHook
        return TorchProbeHook
    if name == "RunwatchCallback":
        from runwatch.collectors.hooks import RunwatchCallback
        return RunwatchCallback
    if name == "RunwatchGRPO":
        from runwatch.collectors.trl import RunwatchGRPO
        return RunwatchGRPO
    raise AttributeError(f"module 'collectors' has no attribute {name!r}")
