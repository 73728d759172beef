"""Stage 5, query: named SQL files under ``queries/`` (``named``) and the read-only guard that
ad-hoc SQL passes through (``guard``)."""
