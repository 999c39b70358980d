"""The LLM layer: prompt templates and untrusted text (``templates``), backends behind one interface
(``backends``: any OpenAI-compatible endpoint, a local instruct model), the contrastive no-LLM reference
(``contrastive``), the call ledger that caches every call and holds the run budget (``ledger``), which
pairs and prompts an explanation sees (``pairs``), explaining (``explain``) and scoring (``score``).
It reads and writes nothing itself: the steps hand the ledger the store (see docs/architecture.md)."""

from lookups.pipeline.common.errors import LookupsError


class ExplainerError(LookupsError, RuntimeError):
    """A backend or template cannot be set up; the message says why and what to do."""
