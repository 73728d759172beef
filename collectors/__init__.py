"""runwatch collectors: the library a training job imports.

Light on purpose: importing it loads neither torch, transformers, duckdb nor streamlit. Heavy
scorers and integrations import their dependencies when used.
"""

from runwatch.collectors.collector import Collector
from runwatch.collectors.scoring import KeywordScorer, RepetitionScorer, Score, Scorer

__all__ = ["Collector", "KeywordScorer", "RepetitionScorer", "Score", "Scorer",
           "PipelineScorer", "EmbeddingScorer", "PromptSuite", "TorchProbeHook", "RunwatchCallback"]


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
    raise AttributeError(f"module 'collectors' has no attribute {name!r}")
