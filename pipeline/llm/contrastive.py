"""The contrastive reference (no LLM): the words and bigrams that set active prompts apart from inactive
ones (smoothed log-odds), and classification by them: the baseline LLM explanations must beat."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def text_features(text: str) -> set[str]:
    """Lower-cased words and adjacent-word bigrams present in a text."""
    words = [w.lower() for w in _WORD.findall(text)]
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}


@dataclass
class ContrastiveExplanation:
    """Features with their smoothed log-odds (active vs inactive); the explanation is their description, and
    classification uses exactly these weights: score = sum of the present features' log-odds, active if > 0."""

    features: dict[str, float] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)  # feature -> [in active, in inactive]
    n_active: int = 0
    n_inactive: int = 0

    @property
    def text(self) -> str:
        if not self.features:
            return "No word or bigram sets the active prompts apart."
        def describe(items):
            return ", ".join(f"'{f}' ({self.counts[f][0]}/{self.n_active} active, {self.counts[f][1]}/{self.n_inactive} inactive)" for f, _ in items)
        pos = [(f, w) for f, w in self.features.items() if w > 0]
        neg = [(f, w) for f, w in self.features.items() if w < 0]
        text = f"Active when the context contains {describe(pos)}." if pos else "No word marks the active prompts."
        return text + (f" Inactive when it contains {describe(neg)}." if neg else "")

    def score(self, text: str) -> float:
        present = text_features(text)
        return float(sum(w for f, w in self.features.items() if f in present))


def contrastive_explanation(active: list[str], inactive: list[str], n_features: int, alpha: float = 0.5) -> ContrastiveExplanation:
    """Smoothed log-odds of each feature's presence in active vs inactive prompts, ranked by its z-score
    (log-odds over its standard error); the top ``n_features`` positive and the top half as many negative."""
    in_active = Counter(f for t in active for f in text_features(t))
    in_inactive = Counter(f for t in inactive for f in text_features(t))
    n_a, n_i = len(active), len(inactive)
    scored = []
    for feature in set(in_active) | set(in_inactive):
        a, b = in_active[feature], in_inactive[feature]
        log_odds = math.log((a + alpha) / (n_a - a + alpha)) - math.log((b + alpha) / (n_i - b + alpha))
        se = math.sqrt(1 / (a + alpha) + 1 / (n_a - a + alpha) + 1 / (b + alpha) + 1 / (n_i - b + alpha))
        scored.append((log_odds / se, log_odds, feature, a, b))
    scored.sort(key=lambda s: (-s[0], s[2]))
    pos = [s for s in scored if s[0] > 1.0][:n_features]
    neg = sorted((s for s in scored if s[0] < -1.0), key=lambda s: (s[0], s[2]))[: max(1, n_features // 2)]
    chosen = pos + neg
    return ContrastiveExplanation(
        features={s[2]: round(s[1], 4) for s in chosen},
        counts={s[2]: [s[3], s[4]] for s in chosen},
        n_active=n_a,
        n_inactive=n_i,
    )
