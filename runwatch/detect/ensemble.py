"""Ensemble rules: how the scorers of a category combine into one flag, and what each rule would
have caught.

A rule is written as text (``runwatch serve --ensemble-rule RULE``, repeatable):

- ``any``: flagged when any scorer of the category flags (what the dashboard and the detector use);
- ``all``: when every scorer of the category that scored the sample flags;
- ``K_of_n`` (e.g. ``2_of_n``): when at least K of them flag (all of them when fewer than K scored);
- ``weighted:T[:scorer=w,scorer=w...]``: when the sum of the flagging scorers' weights, divided by
  the sum of the weights of the scorers that scored the sample, is at least T (weights default to 1,
  so ``weighted:0.5`` is a majority vote).

A rule may be limited to one category: ``injury=2_of_n``. :func:`compare` evaluates every rule on
the run's canaries (recall, false positives, exact intervals, the miss-rate bound) and on the
reviewers' labels (recall, precision), so a reviewer sees what each rule would have caught.

:class:`FlagRules` is the rule set the service flags with (``runwatch serve --flag-rule RULE``):
one default rule and at most one per category. It is kept in the database file as SQL macros
(:meth:`FlagRules.macros`), so the materializer's aggregates, the detector, the dashboard's queries
and any reader of the file (``runwatch sql``, a notebook, plain DuckDB) flag with the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from runwatch.detect.canaries import clopper_pearson, miss_upper, nines

DEFAULT_RULES = ("any", "all", "2_of_n")
_K_OF_N = re.compile(r"^(\d+)_of_n$")


class RuleError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    text: str
    kind: str  # any | all | k_of_n | weighted
    k: int = 1
    threshold: float = 0.5
    weights: dict[str, float] = field(default_factory=dict)
    category: str = ""  # '' = every category

    @property
    def body(self) -> str:
        """The rule without its ``CATEGORY=``: ``injury=2_of_n`` -> ``2_of_n``."""
        return self.text.split("=", 1)[1].strip() if self.category else self.text

    def flags(self, flagging: set[str], scored: set[str]) -> bool:
        """Does the rule flag a sample whose scorers ``scored`` it and ``flagging`` of them flagged?"""
        if not scored:
            return False
        if self.kind == "any":
            return bool(flagging)
        if self.kind == "all":
            return flagging >= scored
        if self.kind == "k_of_n":
            return len(flagging) >= min(self.k, len(scored))
        total = sum(self.weights.get(s, 1.0) for s in scored)
        return total > 0 and sum(self.weights.get(s, 1.0) for s in flagging) / total >= self.threshold

    def predicate(self) -> str:
        """The rule as SQL over ``n_flagging``, ``n_scores`` (scorers flagging / scoring the sample
        for the category) and ``w_flagging``, ``w_scores`` (their weights): what :meth:`flags` says."""
        if self.kind == "any":
            return "n_flagging > 0"
        if self.kind == "all":
            return "n_scores > 0 AND n_flagging >= n_scores"
        if self.kind == "k_of_n":
            return f"n_scores > 0 AND n_flagging >= least({self.k}, n_scores)"
        return f"w_scores > 0 AND coalesce(w_flagging, 0) / w_scores >= {self.threshold!r}"


def parse_rule(text: str) -> Rule:
    """A rule from its text (see the module doc); :class:`RuleError` names what is wrong."""
    raw = text.strip()
    category, body = "", raw
    if "=" in raw.split(":", 1)[0]:
        category, body = (part.strip() for part in raw.split("=", 1))
        if not category:
            raise RuleError(f"ensemble rule {text!r}: empty category before '='")
    if body in ("any", "all"):
        return Rule(raw, body, category=category)
    if m := _K_OF_N.match(body):
        k = int(m.group(1))
        if k < 1:
            raise RuleError(f"ensemble rule {text!r}: K must be >= 1")
        return Rule(raw, "k_of_n", k=k, category=category)
    if body.startswith("weighted:"):
        parts = body.split(":", 2)
        try:
            threshold = float(parts[1])
        except ValueError:
            raise RuleError(f"ensemble rule {text!r}: 'weighted:T' needs a number T") from None
        if not 0 < threshold <= 1:
            raise RuleError(f"ensemble rule {text!r}: T must be in (0, 1]")
        weights = {}
        for item in (parts[2].split(",") if len(parts) > 2 and parts[2] else []):
            name, _, value = item.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise RuleError(f"ensemble rule {text!r}: weight {item!r} is not scorer=number") from None
            if weights[name.strip()] < 0:
                raise RuleError(f"ensemble rule {text!r}: weights must be >= 0")
        return Rule(raw, "weighted", threshold=threshold, weights=weights, category=category)
    raise RuleError(f"unknown ensemble rule {text!r}: use any, all, K_of_n (e.g. 2_of_n) or "
                    f"weighted:T[:scorer=w,...], optionally CATEGORY=RULE")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class FlagRules:
    """The rule the service flags with: ``default`` for every category, ``by_category`` for some."""
    default: Rule = field(default_factory=lambda: parse_rule("any"))
    by_category: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, texts) -> FlagRules:
        """From ``--flag-rule`` texts: at most one without a category, at most one per category."""
        default, by_category = None, {}
        for rule in (parse_rule(t) for t in texts if t and t.strip()):
            if not rule.category:
                if default is not None:
                    raise RuleError(f"flag rules {default.text!r} and {rule.text!r}: one default rule "
                                    f"only (limit the others to a category, CATEGORY=RULE)")
                default = rule
            elif rule.category in by_category:
                raise RuleError(f"flag rules {by_category[rule.category].text!r} and {rule.text!r}: "
                                f"one rule per category")
            else:
                by_category[rule.category] = rule
        return cls(default or parse_rule("any"), tuple(by_category[c] for c in sorted(by_category)))

    @property
    def texts(self) -> list[str]:
        """What ``--flag-rule`` was given, normalized: the default first, then per category."""
        return [self.default.text, *(r.text for r in self.by_category)]

    def rule_for(self, category: str) -> Rule:
        return next((r for r in self.by_category if r.category == category), self.default)

    def flags(self, category: str, flagging: set[str], scored: set[str]) -> bool:
        return self.rule_for(category).flags(flagging, scored)

    def macros(self) -> list[str]:
        """``CREATE OR REPLACE MACRO`` statements that persist the rules in the database file:

        - ``rw_weight(category, scorer)``: a scorer's weight (weighted rules; 1 elsewhere);
        - ``rw_flag(category, n_flagging, n_scores, w_flagging, w_scores)``: the rule's verdict;
        - ``rw_rule(category)``: the rule's text.

        ``rw_flagged(category, scorer, flagged)`` (an aggregate over a sample's score rows of one
        category, for ``bool_or(flagged)``) and ``rw_flag_scores(category, sample_scores)`` are
        defined once, in queries/migrations/0009_flag_rules.sql, on top of these."""
        weights = []
        for rule in (*self.by_category, self.default):
            if rule.kind != "weighted":
                continue
            where = f"category = {_literal(rule.category)} AND " if rule.category else ""
            weights += [f"WHEN {where}scorer = {_literal(s)} THEN {w!r}" for s, w in rule.weights.items()]
        weight = f"CASE {' '.join(weights)} ELSE 1.0 END" if weights else "1.0"
        flag = " ".join(f"WHEN category = {_literal(r.category)} THEN ({r.predicate()})"
                        for r in self.by_category)
        flag = f"CASE {flag} ELSE ({self.default.predicate()}) END" if flag else self.default.predicate()
        text = " ".join(f"WHEN category = {_literal(r.category)} THEN {_literal(r.text)}"
                        for r in self.by_category)
        text = (f"CASE {text} ELSE {_literal(self.default.text)} END" if text
                else _literal(self.default.text))
        return [
            f"CREATE OR REPLACE MACRO rw_weight(category, scorer) AS {weight}",
            f"CREATE OR REPLACE MACRO rw_flag(category, n_flagging, n_scores, w_flagging, w_scores) "
            f"AS coalesce({flag}, false)",
            f"CREATE OR REPLACE MACRO rw_rule(category) AS {text}",
        ]


def parse_rules(texts) -> list[Rule]:
    rules = [parse_rule(t) for t in texts if t and t.strip()]
    return rules or [parse_rule(t) for t in DEFAULT_RULES]


def _group(rows: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """(key..., flagging scorers, scoring scorers) per sample and category."""
    out = []
    for key, g in rows.groupby(keys, sort=False):
        out.append((*key, set(g.loc[g["flagged"], "scorer"]), set(g["scorer"])))
    return out


def compare(rules: list[Rule], canary_rows: pd.DataFrame, label_rows: pd.DataFrame,
            active: FlagRules | None = None) -> pd.DataFrame:
    """One row per rule and category: canary recall (exact interval, miss bound, nines) and false
    positives, and on labelled samples recall and precision. With ``active`` (the view's flag
    rule), its rule for each category is compared too, and the column ``active`` marks it.

    ``canary_rows`` / ``label_rows``: queries/ensemble_canaries.sql / ensemble_labels.sql (one
    row per sample, category and scorer with ``flagged``, and ``expected`` / ``label``)."""
    canaries = _group(canary_rows, ["sample_id", "category", "expected"]) if len(canary_rows) else []
    labels = _group(label_rows, ["sample_id", "category", "label"]) if len(label_rows) else []
    categories = sorted({c[1] for c in canaries} | {c[1] for c in labels})
    if active is not None:  # unless a compared rule says the same ('all' covers 'injury=all')
        rules = list(rules) + [r for r in (active.default, *active.by_category)
                               if not any(x.body == r.body and x.category in ("", r.category)
                                          for x in rules)]
    out = []
    for rule in rules:
        for category in categories:
            if rule.category and rule.category != category:
                continue
            bad = [rule.flags(f, s) for _, c, e, f, s in canaries if c == category and e == "bad"]
            fine = [rule.flags(f, s) for _, c, e, f, s in canaries if c == category and e == "fine"]
            lab = [(lb, rule.flags(f, s)) for _, c, lb, f, s in labels if c == category]
            caught, n_bad = sum(bad), len(bad)
            lo, hi = clopper_pearson(caught, n_bad)
            upper = miss_upper(n_bad - caught, n_bad)
            tp = sum(1 for lb, fl in lab if lb == "bad" and fl)
            fn = sum(1 for lb, fl in lab if lb == "bad" and not fl)
            fp = sum(1 for lb, fl in lab if lb == "fine" and fl)
            out.append({
                "rule": rule.text, "category": category,
                "canary_recall": caught / n_bad if n_bad else None,
                "canary_recall_low": lo, "canary_recall_high": hi,
                "miss_upper": upper, "nines": nines(upper), "n_canaries_bad": n_bad,
                "canary_fp_rate": sum(fine) / len(fine) if fine else None,
                "n_canaries_fine": len(fine),
                "label_recall": tp / (tp + fn) if tp + fn else None,
                "label_precision": tp / (tp + fp) if tp + fp else None,
                "n_labelled": len(lab),
                "active": active is not None and active.rule_for(category).body == rule.body,
            })
    return pd.DataFrame(out, columns=[
        "rule", "category", "canary_recall", "canary_recall_low", "canary_recall_high",
        "miss_upper", "nines", "n_canaries_bad", "canary_fp_rate", "n_canaries_fine",
        "label_recall", "label_precision", "n_labelled", "active"])
