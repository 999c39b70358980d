"""The no-LLM references the LLM explanations must beat: the contrastive one (the words and bigrams that set
active prompts apart from inactive ones, smoothed log-odds) and the look-up one (the words the head reads
most), and classification by them."""

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


def _word(token: str) -> str | None:
    """A token's text as the word ``text_features`` would find (lower-cased), or None if it is not a whole word."""
    word = token.strip().lower()
    return word if word and _WORD.fullmatch(word) else None


@dataclass
class LookupExplanation(ContrastiveExplanation):
    """The look-up reference: the words the head reads most on active prompts, classified like the contrastive
    one (score = sum of the present words' weights, active if > 0). ``counts[w]`` = [prompts where the head
    reads w most, active contexts holding w, inactive contexts holding w]."""

    @property
    def text(self) -> str:
        if not self.features:
            return "The head reads no word that sets the active prompts apart."
        read = ", ".join(
            f"'{w}' (read most on {self.counts[w][0]}/{self.n_active} active prompts; in {self.counts[w][1]}/{self.n_active} active and "
            f"{self.counts[w][2]}/{self.n_inactive} inactive contexts)"
            for w in self.features
        )
        return f"The head reads {read}: active when the context contains {'it' if len(self.features) == 1 else 'one of them'}."


def lookup_explanation(read_tokens: list[str], active: list[str], inactive: list[str], n_features: int) -> LookupExplanation:
    """``read_tokens``: per active prompt, the token its head reads most. The ``n_features`` words read most
    often (ties by word), each weighted by how much more often it occurs in active than in inactive contexts;
    words no more frequent in active contexts are dropped (they would not tell the prompts apart)."""
    words = Counter(w for w in map(_word, read_tokens) if w)
    in_active = [text_features(t) for t in active]
    in_inactive = [text_features(t) for t in inactive]
    features, counts = {}, {}
    for word, n in sorted(words.items(), key=lambda item: (-item[1], item[0]))[:n_features]:
        a = sum(word in f for f in in_active)
        b = sum(word in f for f in in_inactive)
        weight = a / max(1, len(active)) - b / max(1, len(inactive))
        if weight > 0:
            features[word] = round(weight, 4)
            counts[word] = [n, a, b]
    return LookupExplanation(features=features, counts=counts, n_active=len(active), n_inactive=len(inactive))
