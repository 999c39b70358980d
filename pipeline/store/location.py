"""Where the warehouse lives, as a pyarrow file system and a base path: a local folder, or an S3 prefix
(``LOOKUPS_WAREHOUSE=s3://bucket/prefix``, any S3-compatible server through ``LOOKUPS_S3_ENDPOINT``).

Everything the store reads and writes there goes through here: result files, manifest commits, and the files
the steps hand each other (docs/object_store.md). Credentials come from the environment only (pyarrow's AWS
chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, a profile, a role); they are never
read into a setting, written anywhere, or named in an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lookups.pipeline.common import files
from lookups.pipeline.store.errors import StoreError
from lookups.pipeline.store.warehouse import is_local

#: The endpoint of an S3-compatible server (MinIO, Ceph, R2, a test's moto), e.g. ``http://127.0.0.1:9000``;
#: the standard ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL`` are honoured after it.
ENDPOINT_ENVS = ("LOOKUPS_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
#: ``chain``: credentials from pyarrow's default AWS chain although none is set in the environment (an EC2
#: instance role); ``anonymous``: unsigned requests (a public bucket). Unset: an S3 warehouse needs credentials
#: in the environment or an AWS profile, and says so in one line otherwise.
CREDENTIALS_ENV = "LOOKUPS_S3_CREDENTIALS"
SECRET_ENVS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_ns: int


def endpoint() -> str | None:
    for name in ENDPOINT_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _scrub(text: str) -> str:
    """``text`` with any credential from the environment blanked out (pyarrow never puts one in an error; a
    message of ours never does either: this is the belt to those braces)."""
    for name in SECRET_ENVS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _credentials_found() -> bool:
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    return Path(shared).expanduser().is_file()


@functools.cache
def _s3_filesystem(endpoint_url: str | None, region: str | None, credentials: str):
    """One pyarrow S3 file system per (endpoint, region, credential mode) and process. The keys themselves are
    not passed: pyarrow's AWS chain reads them from the environment."""
    import pyarrow.fs as pafs

    kwargs: dict = {"connect_timeout": 10, "request_timeout": 60}
    if endpoint_url:
        parsed = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
        if parsed.username or parsed.password:
            raise StoreError(
                "LOOKUPS_S3_ENDPOINT holds credentials: give the server's address only, and the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            )
        kwargs.update(endpoint_override=parsed.netloc + parsed.path.rstrip("/"), scheme=parsed.scheme or "https")
        region = region or "us-east-1"  # an S3-compatible server ignores it; without one pyarrow would ask AWS
    if region:
        kwargs["region"] = region
    if credentials == "anonymous":
        kwargs["anonymous"] = True
    return pafs.S3FileSystem(**kwargs)


class Location:
    """The warehouse root as (pyarrow file system, base path): what the store needs of it, for paths relative
    to the root (``neurons/part-....parquet``, ``_manifest/log/...json``, ``_files/handles/...``)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") if not is_local(root) else root
        self.local = is_local(root)
        self._checked = False
        if self.local:
            self.base = str(Path(root))
            self.bucket = ""
            return
        parsed = urlparse(self.root)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StoreError(
                f"LOOKUPS_WAREHOUSE={self.root} is not a warehouse: give a local folder or s3://bucket/prefix "
                "(another S3-compatible server: set LOOKUPS_S3_ENDPOINT too)."
            )
        self.bucket = parsed.netloc
        self.base = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")

    def __repr__(self) -> str:
        return f"Location({self.root!r})"

    @property
    def fs(self):
        """The pyarrow file system (checked on first use: the server answers, the bucket exists, credentials are set)."""
        import pyarrow.fs as pafs

        if self.local:
            return pafs.LocalFileSystem()
        mode = (os.environ.get(CREDENTIALS_ENV) or "").strip().lower()
        if mode not in ("", "chain", "anonymous"):
            raise StoreError(f"{CREDENTIALS_ENV}={mode} is not a credential mode: leave it unset, or give chain or anonymous.")
        if not mode and not _credentials_found():
            raise StoreError(
                f"No S3 credentials for LOOKUPS_WAREHOUSE={self.root}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                f"in the environment ({CREDENTIALS_ENV}=chain for an instance role, =anonymous for a public bucket)."
            )
        with self.translated("opening"):
            fs = _s3_filesystem(endpoint(), next((os.environ[n] for n in REGION_ENVS if os.environ.get(n)), None), mode or "env")
        if not self._checked:
            with self.translated("checking the bucket"):
                found = fs.get_file_info(self.bucket)
            if found.type == pafs.FileType.NotFound:
                raise StoreError(self._no_bucket())
            self._checked = True
        return fs

    def _where(self) -> str:
        found = endpoint()
        return f" at {urlparse(found).netloc or found}" if found else ""

    def _no_bucket(self) -> str:
        return f"The bucket {self.bucket} does not exist{self._where()}: create it, or correct LOOKUPS_WAREHOUSE={self.root}."

    @contextlib.contextmanager
    def translated(self, what: str):
        """An object store's failure as one line naming the problem and the fix (no traceback, no credential)."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as err:
            text = str(err)
            if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
                message = self._no_bucket()
            elif "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text or "Couldn't connect" in text:
                message = (f"The object store{self._where() or ' (AWS S3)'} cannot be reached while {what} {self.root}: start it, or correct "
                           "LOOKUPS_S3_ENDPOINT (or AWS_ENDPOINT_URL).")
            elif any(code in text for code in ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403")):
                message = (f"The object store{self._where()} refused access to {self.root} while {what}: check AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's policy.")
            else:
                detail = re.sub(r"\s*\(Request ID: [^)]*\)", "", text.splitlines()[0] if text else type(err).__name__)
                message = f"The object store failed while {what} {self.root}: {detail}"
            raise StoreError(_scrub(message)) from None

    # ------------------------------------------------------------ paths

    def url(self, relative: str) -> str:
        """What a DuckDB reader names: the local path, or ``s3://bucket/prefix/<relative>``."""
        return f"{self.root}/{relative}"

    def path(self, relative: str) -> str:
        """The path in the file system (``bucket/prefix/<relative>`` on S3)."""
        return f"{self.base}/{relative}"

    # ------------------------------------------------------------ operations

    def read_bytes(self, relative: str) -> bytes:
        """The whole object; FileNotFoundError when there is none."""
        if self.local:
            return Path(self.path(relative)).read_bytes()
        fs = self.fs
        with self.translated("reading"), fs.open_input_stream(self.path(relative)) as fh:
            return fh.read()

    def write_bytes(self, relative: str, data: bytes | str) -> None:
        """Write an object whole: a staging file renamed over it locally, one put on S3 (atomic: a reader sees the
        old object or the new one; an interrupted upload leaves no object)."""
        if isinstance(data, str):
            data = data.encode()
        if self.local:
            files.write_atomically(Path(self.path(relative)), data)
            return
        fs = self.fs
        with self.translated("writing to"), fs.open_output_stream(self.path(relative)) as fh:
            fh.write(data)

    def upload(self, relative: str, local_file: Path) -> None:
        """Put a local file at ``relative`` (S3: one upload, visible only once whole)."""
        import pyarrow.fs as pafs

        fs = self.fs
        with self.translated("writing to"):
            pafs.copy_files(str(local_file), self.path(relative), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    def stat(self, relative: str) -> Stat | None:
        """Size and modification time, or None when missing."""
        if self.local:
            try:
                found = os.stat(self.path(relative))
            except FileNotFoundError:
                return None
            return Stat(found.st_size, found.st_mtime_ns)
        import pyarrow.fs as pafs

        fs = self.fs
        with self.translated("reading"):
            info = fs.get_file_info(self.path(relative))
        if info.type != pafs.FileType.File:
            return None
        return Stat(info.size, int(info.mtime.timestamp() * 1e9) if info.mtime else 0)

    def exists(self, relative: str) -> bool:
        return self.stat(relative) is not None

    def list(self, folder: str = "") -> list[tuple[str, Stat]]:
        """Every file under ``folder`` (recursively), as (path relative to the root, stat), sorted by path."""
        import pyarrow.fs as pafs

        fs = self.fs
        base = self.path(folder).rstrip("/") if folder else self.base
        with self.translated("listing"):
            found = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        out = []
        for info in found:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(self.base) + 1:]
            out.append((relative, Stat(info.size, int(info.mtime.timestamp() * 1e9) if info.mtime else 0)))
        return sorted(out)

    def delete(self, relative: str) -> None:
        """Remove a file (missing already: nothing to do)."""
        if self.local:
            Path(self.path(relative)).unlink(missing_ok=True)
            return
        fs = self.fs
        with self.translated("removing from"):
            try:
                fs.delete_file(self.path(relative))
            except FileNotFoundError:
                pass

    def sha256(self, relative: str) -> str:
        digest = hashlib.sha256()
        if self.local:
            with open(self.path(relative), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
        fs = self.fs
        with self.translated("reading"), fs.open_input_stream(self.path(relative)) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
