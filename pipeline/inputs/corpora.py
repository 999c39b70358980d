"""Corpora and prompt sets.

A *corpus* is what a source yields: source documents (a Wikipedia article, a .txt file, a JSONL record).
A *prompt set* is a content-hashed, deduplicated list of passages cut from those documents, each with a
deterministic split (``explain`` or ``heldout``) decided by its source document, so that adding documents
never moves old ones between splits and passages of one article never straddle the two splits.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import re
import subprocess
import sys
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import EMBEDDED_CORPUS, CorpusSettings, PromptSetSettings, cache_dir

GENSIM_WHEEL_VERSION = "4.4.0"
GENSIM_WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# Sections that hold lists of links and citations rather than prose.
NON_PROSE_SECTIONS = {"references", "external links", "see also", "further reading", "notes", "bibliography", "sources", "footnotes", "citations"}
LEFTOVER_MARKUP = ("[[", "]]", "{{", "}}", "<ref", "</ref", "{|", "|}")
# Terminal escape sequences (ECMA-48: CSI, OSC, two-character; 7- and 8-bit) go whole, so no "[31m" is left
# behind as prose; then every other control character but tab and newline.
# An unterminated OSC loses only its introducer: the text after it is kept.
ESCAPE_SEQUENCE = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]{0,512}(?:\x07|\x1b\\|\x9c)|\x1b[ -~]?")
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class CorpusError(LookupsError, RuntimeError):
    """A corpus cannot be read; the message says why and what to do."""


@dataclass
class SourceDocument:
    source_id: str  # stable key of the source document (article title, file path, record number)
    title: str
    text: str


@dataclass
class ReadCounts:
    """What a reader skipped and why; nothing is dropped silently."""

    read: int = 0
    empty: int = 0
    undecodable: int = 0
    malformed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------- sources


def read_source(settings: CorpusSettings, counts: ReadCounts) -> Iterator[SourceDocument]:
    """Yield the source documents of ``settings.source``, counting what is skipped in ``counts``."""
    source = settings.source
    if source == EMBEDDED_CORPUS:
        docs = read_gensim_wiki(gensim_wiki_dump())
    elif source.startswith("hf:"):
        docs = read_hf_dataset(source[3:], settings.text_column, settings.hf_split)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise CorpusError(f"Corpus '{source}' not found: give a folder of .txt files, a .jsonl or .parquet file, 'hf:<dataset>' or '{EMBEDDED_CORPUS}'.")
        if path.is_dir():
            docs = read_text_folder(path, counts)
        elif path.suffix == ".jsonl":
            docs = read_jsonl(path, settings.text_column, counts)
        elif path.suffix == ".parquet":
            docs = read_parquet(path, settings.text_column)
        else:
            raise CorpusError(f"Corpus file {path} has an unknown type: use a folder of .txt files, .jsonl or .parquet.")
    for doc in docs:
        if settings.max_source_documents is not None and counts.read >= settings.max_source_documents:
            break
        if not isinstance(doc.text, str) or not doc.text.strip():
            counts.empty += 1
            continue
        if "\x00" in doc.text:  # a binary file, or UTF-16 that happens to decode as UTF-8: not prose
            counts.undecodable += 1
            continue
        counts.read += 1
        # Names reach the store, the atlas, `lookups query` and logs: no raw control character in them.
        yield SourceDocument(source_id=printable(doc.source_id), title=printable(doc.title), text=doc.text)


def printable(name: str) -> str:
    """``name`` with each control character written as its escape (ESC as ``\\x1b``), so that showing it never
    drives a terminal."""
    return NAME_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), name)


def gensim_wiki_dump() -> Path:
    """The Wikipedia dump inside the gensim wheel, fetched once from PyPI into the data folder."""
    folder = cache_dir() / "downloads"
    wheels = sorted(folder.glob(f"gensim-{GENSIM_WHEEL_VERSION}-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(folder), f"gensim=={GENSIM_WHEEL_VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(folder.glob(f"gensim-{GENSIM_WHEEL_VERSION}-*.whl"))
        if done.returncode != 0 or not wheels:
            raise CorpusError(
                f"Could not download gensim=={GENSIM_WHEEL_VERSION} from PyPI for the default corpus "
                f"({done.stderr.strip()[-300:]}). Check the package index is reachable, or set corpus.source to a local corpus."
            )
    dump = folder / Path(GENSIM_WIKI_MEMBER).name
    if not dump.exists():
        with zipfile.ZipFile(wheels[-1]) as wheel:
            dump.write_bytes(wheel.read(GENSIM_WIKI_MEMBER))
    return dump


def read_gensim_wiki(dump: Path) -> Iterator[SourceDocument]:
    """Articles (namespace 0, not redirects) of a MediaWiki XML dump, as plain text via mwparserfromhell."""
    import mwparserfromhell

    ns = ""
    with bz2.open(dump) as fh:
        for _, element in ElementTree.iterparse(fh, events=("end",)):
            tag = element.tag
            if not ns and tag.startswith("{"):
                ns = tag[: tag.index("}") + 1]
            if tag != f"{ns}page":
                continue
            title = element.findtext(f"{ns}title") or ""
            namespace = element.findtext(f"{ns}ns")
            redirect = element.find(f"{ns}redirect")
            page_id = element.findtext(f"{ns}id") or title
            wikitext = element.findtext(f"{ns}revision/{ns}text") or ""
            element.clear()
            if namespace != "0" or redirect is not None:
                continue
            yield SourceDocument(source_id=f"enwiki:{page_id}", title=title, text=wikitext_to_plain(mwparserfromhell.parse(wikitext)))


def wikitext_to_plain(code) -> str:
    """Drop non-prose sections, files, categories, references and tables, then strip the markup."""
    for section in code.get_sections(levels=[2]):
        headings = section.filter_headings()
        if headings and headings[0].title.strip_code().strip().lower() in NON_PROSE_SECTIONS:
            _remove(code, section)
    for link in code.filter_wikilinks():
        if str(link.title).strip().lower().startswith(("file:", "image:", "category:")):
            _remove(code, link)
    for tag in code.filter_tags():
        if str(tag.tag).lower() in ("ref", "table", "gallery", "math", "code"):
            _remove(code, tag)
    plain = code.strip_code(normalize=True, collapse=True)
    # Where the markup is malformed the parser leaves it as text; drop those paragraphs rather than
    # hand-parse them.
    return "\n\n".join(p for p in plain.split("\n\n") if not any(mark in p for mark in LEFTOVER_MARKUP))


def _remove(code, node) -> None:
    try:
        code.remove(node)
    except ValueError:  # already removed with an enclosing node
        pass


#: How corpus text files (.txt, .jsonl) are decoded: UTF-8, with the byte-order mark some editors write first
#: (``EF BB BF``) dropped rather than read as text (or, on a JSONL file's first line, as a malformed record).
TEXT_ENCODING = "utf-8-sig"


def read_text_folder(folder: Path, counts: ReadCounts) -> Iterator[SourceDocument]:
    for path in sorted(folder.rglob("*.txt")):
        try:
            text = path.read_bytes().decode(TEXT_ENCODING)
        except UnicodeDecodeError:
            counts.undecodable += 1
            continue
        rel = str(path.relative_to(folder))
        yield SourceDocument(source_id=f"file:{rel}", title=rel, text=text)


def read_jsonl(path: Path, column: str, counts: ReadCounts) -> Iterator[SourceDocument]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh):
            try:
                record = json.loads(raw.decode(TEXT_ENCODING))
            except UnicodeDecodeError:
                counts.undecodable += 1
                continue
            except json.JSONDecodeError:
                if raw.strip():
                    counts.malformed += 1
                else:
                    counts.empty += 1
                continue
            if not isinstance(record, dict) or column not in record:
                raise CorpusError(f"{path} line {number + 1} has no '{column}' field: set corpus.text_column to the field holding the text.")
            key = record.get("id", number)
            yield SourceDocument(source_id=f"jsonl:{key}", title=str(record.get("title", key)), text=record[column])


def read_parquet(path: Path, column: str) -> Iterator[SourceDocument]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    if column not in table.schema_arrow.names:
        raise CorpusError(f"{path} has no column '{column}' (columns: {table.schema_arrow.names}): set corpus.text_column.")
    number = 0
    for batch in table.iter_batches(columns=[column]):
        for text in batch.column(0).to_pylist():
            yield SourceDocument(source_id=f"parquet:{number}", title=str(number), text=text)
            number += 1


def read_hf_dataset(name: str, column: str, split: str) -> Iterator[SourceDocument]:
    try:
        import datasets
    except ImportError as err:
        raise CorpusError("Hugging Face datasets need the optional extra: pip install 'lookups[datasets]'.") from err
    try:
        data = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as err:  # the hub raises many types; the message carries the cause
        raise CorpusError(
            f"Could not load dataset '{name}' from the Hugging Face hub ({err}). Check the name and the connection, or use a local corpus."
        ) from err
    for number, record in enumerate(data):
        if column not in record:
            raise CorpusError(f"Dataset '{name}' has no column '{column}': set corpus.text_column.")
        yield SourceDocument(source_id=f"hf:{name}:{number}", title=str(number), text=record[column])


# ---------------------------------------------------------------- prompt sets


def normalise(text: str) -> str:
    """Canonical form of a document: NFC, Unix newlines, no terminal escapes or other control characters
    (form and line feeds become newlines), no trailing spaces, at most one blank line."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").replace("\v", "\n")
    text = CONTROL.sub("", ESCAPE_SEQUENCE.sub("", text))
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def dedupe_key(text: str) -> str:
    """Near-duplicate key: case, compatibility forms and all whitespace folded."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return hashlib.sha256(" ".join(folded.split()).encode()).hexdigest()


def _is_heading(paragraph: str) -> bool:
    return len(paragraph) < 40 and not paragraph.rstrip().endswith((".", "!", "?", '"', ":"))


def split_passages(text: str, max_chars: int) -> list[str]:
    """Cut a normalised document into passages of at most ``max_chars`` characters, at paragraph ends, within
    an over-long paragraph at sentence ends, within an over-long sentence at word boundaries, and within a
    longer run with no space by a hard cut: a passage is capped whatever the punctuation (docs/data.md).
    Headings (short lines with no final punctuation) are dropped so that a passage is prose."""
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip() and not _is_heading(p.strip())]
    pieces: list[str] = []
    for paragraph in paragraphs:
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
        else:
            sentences = [cut for sentence in re.split(r"(?<=[.!?])\s+", paragraph) for cut in _cut_at_words(sentence, max_chars)]
            pieces += _pack(sentences, max_chars, " ")
    return _pack(pieces, max_chars, "\n\n")


def _cut_at_words(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars``: each cut at the last whitespace that fits (dropped), or,
    where none does, a hard cut. Scans with an index (no copies of the rest), so linear in the length."""
    if len(text) <= max_chars:
        return [text]
    pieces = []
    start, end = 0, len(text)
    while end - start > max_chars:
        limit = start + max_chars
        cut = max(text.rfind(space, start + 1, limit + 1) for space in " \n\t")
        if cut <= start:
            pieces.append(text[start:limit])
            start = limit
            continue
        pieces.append(text[start:cut].rstrip())
        start = cut + 1
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        pieces.append(text[start:])
    return [p for p in pieces if p]


def _pack(items: list[str], max_chars: int, separator: str) -> list[str]:
    """Join consecutive items greedily into chunks of at most ``max_chars`` (an over-long item stays whole)."""
    chunks: list[str] = []
    current = ""
    for item in items:
        if current and len(current) + len(separator) + len(item) > max_chars:
            chunks.append(current)
            current = item
        else:
            current = f"{current}{separator}{item}" if current else item
    if current:
        chunks.append(current)
    return chunks


def split_of(source_id: str, heldout_fraction: float) -> str:
    """Deterministic split from the source document's key alone (stable when documents are added)."""
    bucket = int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:8], "big") / 2**64
    return "heldout" if bucket < heldout_fraction else "explain"


@dataclass
class PromptSet:
    prompt_set_id: str
    documents: pd.DataFrame  # doc_id, doc_index, source_id, title, passage_index, split, text, n_chars
    counts: dict = field(default_factory=dict)


def build_prompt_set(sources: pd.DataFrame, settings: PromptSetSettings) -> PromptSet:
    """Normalise, cut into passages, deduplicate on normalised text, slice, assign splits and hash.

    ``sources`` has columns source_id, title, text (one row per source document, in source order).
    """
    rows = []
    seen: set[str] = set()
    duplicates = 0
    sliced = 0
    stripped = 0
    for source in sources.itertuples(index=False):
        split = split_of(source.source_id, settings.heldout_fraction)
        stripped += bool(isinstance(source.text, str) and (CONTROL.search(source.text) or ESCAPE_SEQUENCE.search(source.text)))
        passages = split_passages(normalise(source.text), settings.passage_chars)
        taken = 0
        for number, passage in enumerate(passages):
            key = dedupe_key(passage)
            if key in seen:
                duplicates += 1
                continue
            if settings.max_passages_per_source is not None and taken >= settings.max_passages_per_source:
                sliced += 1
                continue
            if settings.max_documents is not None and len(rows) >= settings.max_documents:
                sliced += 1
                continue
            seen.add(key)
            taken += 1
            rows.append(
                {
                    "doc_id": key[:16],
                    "source_id": source.source_id,
                    "title": source.title,
                    "passage_index": number,
                    "split": split,
                    "text": passage,
                    "n_chars": len(passage),
                }
            )
    documents = pd.DataFrame(rows, columns=["doc_id", "source_id", "title", "passage_index", "split", "text", "n_chars"])
    documents.insert(1, "doc_index", range(len(documents)))
    digest = hashlib.sha256()
    for doc_id, split in sorted(zip(documents["doc_id"], documents["split"])):
        digest.update(f"{doc_id}\t{split}\n".encode())
    counts = {
        "source_documents": int(len(sources)),
        "documents": int(len(documents)),
        "duplicates_dropped": duplicates,
        "beyond_slice": sliced,
        "explain": int((documents["split"] == "explain").sum()),
        "heldout": int((documents["split"] == "heldout").sum()),
        "control_stripped": stripped,  # source documents that had terminal escapes or control characters removed
    }
    if documents.empty:
        raise CorpusError(f"The corpus yielded no usable passages ({counts}): check corpus.source and corpus.text_column.")
    return PromptSet(prompt_set_id=f"ps-{digest.hexdigest()[:16]}", documents=documents, counts=counts)


def corpus_content_hash(sources: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for source_id, text in zip(sources["source_id"], sources["text"]):
        digest.update(source_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def source_fingerprint(settings: CorpusSettings) -> str:
    """A cheap fingerprint of the raw source (files by content), to reuse a parsed corpus."""
    if settings.source.startswith("hf:"):
        return hashlib.sha256(json.dumps([settings.source, settings.hf_split, settings.text_column]).encode()).hexdigest()[:16]
    if settings.source == EMBEDDED_CORPUS:
        paths = [gensim_wiki_dump()]
    else:
        root = Path(settings.source).expanduser()
        paths = sorted(root.rglob("*.txt")) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for path in paths:
        if path.exists():
            digest.update(str(path).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]
