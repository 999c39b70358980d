"""Prompt templates (``prompts/*.txt`` or a file of your own) and corpus text made safe to show an LLM."""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path

from lookups.pipeline.llm import ExplainerError

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
SNIPPET_MARKERS = ("<<<", ">>>")
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


def snippet(text: str, token: str | None, max_chars: int) -> str:
    """Corpus text made safe to show an LLM: one line (no forged sections), no delimiter markers, at most its
    last ``max_chars`` characters (the end is what the prediction depends on), then the token in [[ ]]."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    for marker in SNIPPET_MARKERS:
        flat = flat.replace(marker, marker[0] * 2)
    if len(flat) > max_chars:
        flat = "…" + flat[-max_chars:].lstrip()
    return flat + (f"[[{token}]]" if token is not None else "")


def parse_explanation(text: str | None) -> tuple[str, str]:
    """(status, explanation): 'ok', 'empty' or 'refused'."""
    cleaned = " ".join((text or "").split())
    if not cleaned:
        return "empty", ""
    if _REFUSAL.search(cleaned[:80]):
        return "refused", cleaned
    return "ok", cleaned[:2000]


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
