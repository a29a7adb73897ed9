"""Named pretrained weights: where they live on disk and how they get there.

A named model (``"rna-fm"``) resolves to a file in the cache folder
(``$RNAFM_SKLEARN_HOME``, else the platform's user cache folder). If it is not there, it is
downloaded once from the Hugging Face Hub into a temporary folder *inside* the cache folder,
its size and SHA-256 are checked against the values pinned below, and only then is it moved
into place (``os.replace``: atomic). No code path returns random weights instead.

Before the first download in a process, one TCP connection to the Hub (``huggingface.co:443``
or ``$HF_ENDPOINT``) is tried with a 3-second limit: without a network the call fails at once
with :class:`WeightsUnavailableError` instead of after ``huggingface_hub``'s retries. The answer
is kept for the life of the process. Behind a proxy (``HTTPS_PROXY``/``ALL_PROXY``) no probe is
made. This module imports nothing heavy: the architectures of the named models are plain dicts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import CheckpointError, WeightsUnavailableError

__all__ = [
    "DEFAULT_STRUCTURE_THRESHOLD",
    "PRETRAINED",
    "STRUCTURE_THRESHOLDS",
    "WeightsUnavailableError",
    "cache_dir",
    "cached_pretrained_path",
    "pretrained_path",
]

logger = logging.getLogger("rnafm_sklearn")

ENV_HOME = "RNAFM_SKLEARN_HOME"
ENV_OFFLINE = "RNAFM_SKLEARN_OFFLINE"


@dataclass(frozen=True)
class Pretrained:
    """A released checkpoint on the Hugging Face Hub, pinned by size and SHA-256."""

    name: str
    repo_id: str
    revision: str  # a commit of the Hub repository: the file never changes under us
    filename: str
    sha256: str
    size: int | None  # bytes, where known (checked before hashing)
    description: str
    # Keyword arguments of RnaFmConfig for this model's architecture, known without the file
    # (plain values: this module does not import torch). token_dropout is left to the file.
    config: Mapping[str, object] = field(default_factory=dict, hash=False)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision}/{self.filename}"


# The RNA-FM authors' own Hub repository, pinned to one commit. The digests were published
# independently by other projects that verify these files (and agree with each other).
_REPO, _REVISION = "cuhkaih/rnafm", "91d4a46d28d8054a7b429955e8fc0c253ba0afd6"
PRETRAINED = {
    "rna-fm": Pretrained(
        name="rna-fm",
        repo_id=_REPO,
        revision=_REVISION,
        filename="RNA-FM_pretrained.pth",
        sha256="5b5d7d87b37c291ef42c140ef9edf7aea29f255fa2a4fd435f776c52e93d5e99",
        size=1194424423,
        description="RNA-FM (12 layers, 640 hidden, 23M ncRNAs from RNAcentral)",
        config={
            "num_layers": 12,
            "hidden_size": 640,
            "num_heads": 20,
            "ffn_size": 5120,
            "max_positions": 1024,
            "alphabet": "rna",
            "emb_layer_norm_before": True,
        },
    ),
    "mrna-fm": Pretrained(
        name="mrna-fm",
        repo_id=_REPO,
        revision=_REVISION,
        filename="mRNA-FM_pretrained.pth",
        sha256="413324520d35f00bf5419a85033b18e11eb57bc1356a752660f8d75d3ef7624f",
        size=None,
        description="mRNA-FM (12 layers, 1280 hidden, codon tokens, coding sequences)",
        config={
            "num_layers": 12,
            "hidden_size": 1280,
            "num_heads": 20,
            "ffn_size": 5120,
            "max_positions": 1024,
            "alphabet": "codon",
            "emb_layer_norm_before": False,
        },
    ),
}


# The official secondary-structure predictor (fm.downstream Baseline: the RNA-FM backbone plus
# the ResNet pair head) trained on PDB (all splits). Same architecture as "rna-fm"; the file's
# size is not known here (size=None: only the SHA-256 is checked, as for "mrna-fm").
PRETRAINED["rna-fm-ss"] = Pretrained(
    name="rna-fm-ss",
    repo_id=_REPO,
    revision=_REVISION,
    filename="SS/RNA-FM-ResNet_PDB-All.pth",
    sha256="bc9df2111ae6ba95b373641ed1ab35ef4fa8b4cd0f8d21065a55450f575fe15d",
    size=None,
    description="RNA-FM + official ResNet secondary-structure head (trained on PDB, <= 1022 nt)",
    config=dict(PRETRAINED["rna-fm"].config),
)

# Calibrated probability thresholds of the official structure heads (the ``threshold`` of their
# YAML test configs; the official predictor pairs i and j when p > threshold).
STRUCTURE_THRESHOLDS = {
    "RNA-FM-ResNet_PDB-All": 0.33993712,
    "RNA-FM-ResNet_bpRNA": 0.47729617,
    "RNA-FM-ResNet_PDB-TR1": 0.07595872,
}
# Threshold of a head whose origin is unknown (the official Python default).
DEFAULT_STRUCTURE_THRESHOLD = 0.5
# Official structure heads identified by SHA-256 (only PDB-All's digest is published).
KNOWN_STRUCTURE_FILES = {PRETRAINED["rna-fm-ss"].sha256: "RNA-FM-ResNet_PDB-All"}


def cache_dir() -> Path:
    """Folder holding downloaded weights: ``$RNAFM_SKLEARN_HOME`` or the user cache folder.

    Returns
    -------
    pathlib.Path
        ``$RNAFM_SKLEARN_HOME`` (``~`` expanded) when set, else the platform's user cache
        folder for ``rnafm_sklearn`` (e.g. ``~/.cache/rnafm_sklearn`` on Linux). The folder
        is not created here.

    Raises
    ------
    None
        Nothing is read or written.

    Examples
    --------
    >>> import os
    >>> from rnafm_sklearn import cache_dir
    >>> os.environ["RNAFM_SKLEARN_HOME"] = "/tmp/rnafm-home"
    >>> str(cache_dir())
    '/tmp/rnafm-home'
    >>> del os.environ["RNAFM_SKLEARN_HOME"]
    """
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rnafm_sklearn"))


def _offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", ENV_OFFLINE))


_PROBE_TIMEOUT = 3.0  # seconds for one TCP connection to the Hub, DNS included
_NETWORK: dict[tuple[str, int], bool] = {}  # probe answers, kept for the process


def _hub_address() -> tuple[str, str, int]:
    """Scheme, host and port of the Hub (``$HF_ENDPOINT`` if set, as huggingface_hub does)."""
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    scheme = url.scheme or "https"
    try:
        port = url.port
    except ValueError:
        port = None
    return scheme, url.hostname or "huggingface.co", port or (80 if scheme == "http" else 443)


def _probe(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds.

    Runs in a daemon thread so that a slow DNS lookup cannot hold the caller longer.
    """
    answer: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=connect, name="rnafm-sklearn-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer) and answer[0]


def _unreachable_hub() -> str | None:
    """``"host:port"`` if the Hub cannot be reached; ``None`` if it can or we cannot tell."""
    scheme, host, port = _hub_address()
    proxies = urllib.request.getproxies()
    if (proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None  # a direct connection proves nothing: let huggingface_hub go through it
    if (host, port) not in _NETWORK:
        _NETWORK[(host, port)] = _probe(host, port, _PROBE_TIMEOUT)
    return None if _NETWORK[(host, port)] else f"{host}:{port}"


def _hf_download(entry: Pretrained, folder: Path) -> Path:
    """Fetch ``entry`` from the Hub into ``folder`` (the network step; replaced in tests)."""
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(entry.repo_id, entry.filename, revision=entry.revision, local_dir=folder)
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _unavailable(entry: Pretrained, dest: Path, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"The pretrained {entry.name!r} weights are not in the cache ({dest}) and {reason}. "
        f"Either run once with internet access, or download {entry.filename} from {entry.url} "
        f"(SHA-256 {entry.sha256}) and pass its path, e.g. "
        f"RnaFmEmbedder(model='/path/to/{entry.filename}'), or place it at {dest}. "
        "A multimolecule/rnafm folder or a folder written by rnafm_sklearn.save_model also "
        f"works as model=. Set {ENV_HOME} to move the cache."
    )


def _cached(entry: Pretrained) -> tuple[Path, bool]:
    """Where ``entry`` lives in the cache, and whether it is there (with the pinned size)."""
    dest = cache_dir() / entry.name / Path(entry.filename).name
    # Files only get here after the SHA-256 check (atomic move): the size is a cheap guard.
    present = dest.is_file() and (entry.size is None or dest.stat().st_size == entry.size)
    return dest, present


def cached_pretrained_path(name: str) -> Path | None:
    """Local path of the named pretrained checkpoint if it is already cached; never downloads.

    Examples
    --------
    >>> import os, tempfile
    >>> from rnafm_sklearn._hub import cached_pretrained_path
    >>> os.environ["RNAFM_SKLEARN_HOME"] = tempfile.mkdtemp()
    >>> cached_pretrained_path("rna-fm") is None
    True
    >>> del os.environ["RNAFM_SKLEARN_HOME"]
    """
    if name not in PRETRAINED:
        raise ValueError(f"Unknown pretrained model {name!r}; known: {sorted(PRETRAINED)}.")
    dest, present = _cached(PRETRAINED[name])
    return dest if present else None


def pretrained_path(
    name: str, *, download: Callable[[Pretrained, Path], Path] | None = None
) -> Path:
    """Local path of the named pretrained checkpoint, downloading it once if needed.

    Parameters
    ----------
    name : str
        A key of ``PRETRAINED``: ``"rna-fm"``, ``"mrna-fm"`` or ``"rna-fm-ss"`` (RNA-FM with the
        official secondary-structure head).
    download : callable, optional
        ``download(entry, folder) -> path`` fetching the file into ``folder``; defaults to
        the Hugging Face Hub.

    Returns
    -------
    pathlib.Path
        The verified checkpoint file in :func:`cache_dir`.

    Raises
    ------
    WeightsUnavailableError
        Offline (``HF_HUB_OFFLINE=1`` or ``RNAFM_SKLEARN_OFFLINE=1``, or the Hub cannot be
        reached: checked once per process, in at most 3 seconds) and not cached, or the
        download failed.
    rnafm_sklearn.CheckpointError
        The downloaded file does not have the pinned size or SHA-256 (it is discarded).
    ValueError
        ``name`` is not a key of ``PRETRAINED``.

    Examples
    --------
    >>> import os, tempfile
    >>> from rnafm_sklearn import pretrained_path, WeightsUnavailableError
    >>> os.environ.update(RNAFM_SKLEARN_OFFLINE="1", RNAFM_SKLEARN_HOME=tempfile.mkdtemp())
    >>> try:  # offline and not cached: a clear error, never random weights
    ...     pretrained_path("rna-fm")
    ... except WeightsUnavailableError as exc:
    ...     print(str(exc)[:60])
    The pretrained 'rna-fm' weights are not in the cache (...
    >>> del os.environ["RNAFM_SKLEARN_OFFLINE"], os.environ["RNAFM_SKLEARN_HOME"]
    """
    if name not in PRETRAINED:
        raise ValueError(f"Unknown pretrained model {name!r}; known: {sorted(PRETRAINED)}.")
    entry = PRETRAINED[name]
    dest, present = _cached(entry)
    if present:
        return dest
    if dest.exists():
        logger.warning("Cached %s has the wrong size; downloading it again.", dest)
    if _offline():
        raise _unavailable(entry, dest, "offline mode is on (HF_HUB_OFFLINE/RNAFM_SKLEARN_OFFLINE)")
    if download is None and (address := _unreachable_hub()):
        raise _unavailable(entry, dest, f"{address} cannot be reached (no network?)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".download-"))
    try:
        logger.info("Downloading %s from %s", entry.filename, entry.url)
        try:
            fetched = (download or _hf_download)(entry, tmp)
        except Exception as exc:  # network, HTTP, disk: all end in the same advice
            raise _unavailable(entry, dest, f"the download failed ({exc})") from exc
        size = fetched.stat().st_size
        size_ok = entry.size is None or size == entry.size
        digest = sha256_file(fetched) if size_ok else "(not computed)"
        if not size_ok or digest != entry.sha256:
            expected = f"{entry.size} bytes with " if entry.size is not None else ""
            raise CheckpointError(
                f"Downloaded {entry.filename} from {entry.url} failed the integrity check: "
                f"expected {expected}SHA-256 {entry.sha256}, got {size} bytes with "
                f"SHA-256 {digest}. The file was discarded; try again later."
            )
        os.replace(fetched, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
