"""Prompt templates (``prompts/*.txt`` or a file of your own) and corpus text made safe to show an LLM."""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from lookups.pipeline.llm import ExplainerError

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
SNIPPET_MARKERS = ("<<<", ">>>")
#: Around the token an attention head reads most (explain.v2). Corpus text never holds them: ``untrusted`` maps
#: them to parentheses, so a mark in a prompt is always the pipeline's.
LOOKUP_MARKERS = ("⟦", "⟧")
_NO_LOOKUP_MARKERS = str.maketrans({LOOKUP_MARKERS[0]: "(", LOOKUP_MARKERS[1]: ")"})
#: What prompt delimiters are made of: the templates' markers (<<<SNIPPETS ... SNIPPETS>>>, the token's [[ ]]) and
#: the <| |> of chat-format special tokens (<|im_start|>). In untrusted text, runs of < or > are cut to two and of
#: [ or ] to one, and a | beside < or > is set apart, so none of them can be formed (docs/method.md, "Prompt templates and untrusted text").
_BRACKET_RUNS = re.compile(r"<{3,}|>{3,}|\[{2,}|\]{2,}")
_PIPE_BESIDE_ANGLE = re.compile(r"(?<=[<>])\||\|(?=[<>])")
_REFUSAL = re.compile(r"\b(i can(?:no|')t|i am unable|i'm unable|i won't|i will not|sorry|as an ai)\b", re.I)


@dataclass(frozen=True)
class Template:
    """A chat prompt with ``$placeholders``: a system and a user message. ``version`` = name + content hash."""

    name: str
    version: str
    system: str
    user: str

    def messages(self, **values: str) -> list[dict]:
        try:
            return [
                {"role": "system", "content": string.Template(self.system).substitute(values)},
                {"role": "user", "content": string.Template(self.user).substitute(values)},
            ]
        except KeyError as err:
            raise ExplainerError(f"Template {self.name} uses the placeholder ${err.args[0]}, which this step does not provide.") from err


def load_template(name_or_path: str) -> Template:
    """A shipped template (``explain.v1``) or a file of your own, in the same format: '--- system ---' and
    '--- user ---' sections, '#' comment lines."""
    path = PROMPTS_DIR / f"{name_or_path}.txt"
    if not path.exists():
        path = Path(name_or_path).expanduser()
    if not path.is_file():
        shipped = sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
        raise ExplainerError(f"No prompt template '{name_or_path}': use one of {shipped} or the path of a template file.")
    text = path.read_text(encoding="utf-8")
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        marker = re.fullmatch(r"---\s*(system|user)\s*---\s*", line)
        if marker:
            current = sections.setdefault(marker.group(1), [])
        elif current is not None and not line.startswith("#"):
            current.append(line)
    if "user" not in sections:
        raise ExplainerError(f"Template {path} has no '--- user ---' section.")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return Template(path.stem, f"{path.stem}@{digest}", "\n".join(sections.get("system", [])).strip(), "\n".join(sections["user"]).strip())


def _no_delimiters(text: str) -> str:
    """``text`` with every bracket run cut (``_BRACKET_RUNS``), every pipe beside an angle bracket set apart and
    the look-up markers turned into parentheses."""
    text = _BRACKET_RUNS.sub(lambda run: run.group(0)[0] * (2 if run.group(0)[0] in "<>" else 1), text)
    return _PIPE_BESIDE_ANGLE.sub(" | ", text).translate(_NO_LOOKUP_MARKERS)


def _escaped(char: str) -> str:
    """A token's character as shown in its [[ ]]: brackets and non-printable characters as escapes."""
    if char in "[]":
        return f"\\x{ord(char):02x}"
    return char if char.isprintable() else repr(char)[1:-1]


def untrusted(text: str) -> str:
    """Corpus text, or an LLM's answer about it, made safe to put in a prompt: one line of printable characters
    (no forged sections) in which no delimiter can be formed. A fixed point: ``untrusted(untrusted(t)) == untrusted(t)``."""
    return " ".join(_no_delimiters("".join(c if c.isprintable() else " " for c in text)).split())


def quoted(value: str) -> str:
    """A value (the neuron's token) as a JSON string with the delimiters' characters escaped (``\\u003c``...):
    the same string to any JSON reader, yet no marker can be formed from it."""
    escaped = json.dumps(value)
    for char in "<>[]|":
        escaped = escaped.replace(char, f"\\u{ord(char):04x}")
    return escaped


def snippet(text: str, token: str | None, max_chars: int) -> str:
    """Corpus text made safe to show an LLM (``untrusted``), at most its last ``max_chars`` characters (the end
    is what the prediction depends on), then the token in [[ ]]: non-printable characters and brackets escaped
    (``\\n``, ``\\x5b``), so nothing but the marker's own brackets stands beside it."""
    flat = untrusted(text)
    if len(flat) > max_chars:
        flat = "…" + flat[-max_chars:].lstrip()
    return _with_token(flat, token)


def _with_token(flat: str, token: str | None) -> str:
    if token is None:
        return flat
    shown = _no_delimiters("".join(map(_escaped, token)))
    return f"{flat}{' ' if flat.endswith('[') else ''}[[{shown}]]"


def _one_line(text: str) -> str:
    """``untrusted`` keeping one space where the text had leading or trailing whitespace (a piece of a prompt)."""
    flat = untrusted(text)
    if not flat:
        return " " if text[:1].isspace() else ""
    return (" " if text[:1].isspace() else "") + flat + (" " if text[-1:].isspace() else "")


def marked_snippet(parts: tuple[str, str, str], token: str | None, max_chars: int) -> str:
    """Like ``snippet``, with the token the head reads most between ``LOOKUP_MARKERS``: ``parts`` is (text
    before, that token, text after). Cut to about ``max_chars`` characters keeping the mark and the end."""
    before, piece, after = (_one_line(p) for p in parts)
    lead = " " if piece.startswith(" ") else ""
    mark = f"{lead}{LOOKUP_MARKERS[0]}{piece.strip()}{LOOKUP_MARKERS[1]}{' ' if piece.endswith(' ') and piece.strip() else ''}"
    if len(before) + len(mark) + len(after) > max_chars:
        if len(mark) + len(after) <= max_chars - 20:
            before = "…" + before[-(max_chars - len(mark) - len(after)):]
        else:  # the end matters most (the prediction): a little context before the mark, the end of the rest
            keep = max(20, max_chars - len(mark) - 50)
            before = "…" + before[-40:] if len(before) > 40 else before
            after = after if len(after) <= keep else after[: 10] + " … " + after[-keep:].lstrip()
    return _with_token((before + mark + after).strip(), token)


#: An answer that compares the groups shown instead of stating a rule: it cannot be checked on one snippet
#: (the judge sees no groups), so it is flagged, stored and scored as such, never passed as a rule.
_COMPARISON = re.compile(
    r"\b(group [ab12]|groups? (?:one|two)|(?:the )?(?:first|second|other) (?:set|group|list)|active snippets?|inactive snippets?|"
    r"in contrast to the inactive|unlike the inactive|the inactive ones?|the active ones?|(?:set|list) [ab12]\b)",
    re.I,
)


def parse_explanation(text: str | None) -> tuple[str, str]:
    """(status, explanation): 'ok', 'empty', 'refused' or 'comparison' (an answer about the groups shown, not a
    rule that can be checked on one snippet)."""
    cleaned = " ".join((text or "").split())
    if not cleaned:
        return "empty", ""
    if _REFUSAL.search(cleaned[:80]):
        return "refused", cleaned
    if _COMPARISON.search(cleaned):
        return "comparison", cleaned[:2000]
    return "ok", cleaned[:2000]


def parse_rating(text: str | None) -> tuple[str, float | None]:
    """(status, rating) of a 0-9 rating reply: 'ok' with the first whole number in 0-9 (one above 9 counts as 9),
    else 'empty', 'refused' or 'malformed'."""
    cleaned = (text or "").strip()
    if not cleaned:
        return "empty", None
    number = re.search(r"\d+", cleaned)
    if number:
        return "ok", float(min(int(number.group(0)), 9))
    if _REFUSAL.search(cleaned):
        return "refused", None
    return "malformed", None


def parse_answer(text: str | None) -> tuple[str, bool | None]:
    """(status, answer) of a Yes/No reply: 'ok' with True/False, else 'empty', 'refused' or 'malformed'."""
    cleaned = (text or "").strip()
    if not cleaned:
        return "empty", None
    first = re.sub(r"[^a-z]", "", cleaned.split()[0].lower())
    if first in ("yes", "y"):
        return "ok", True
    if first in ("no", "n"):
        return "ok", False
    if _REFUSAL.search(cleaned):
        return "refused", None
    return "malformed", None
