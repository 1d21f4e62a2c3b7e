"""The Hugging Face hub as congrad meets it: is a repository in the local cache, can the hub be reached, may this
user read a repository, and what to do when not.

Nothing here waits long: the reachability probe and the access check have a timeout of a few seconds (the hub
client alone retries for about a minute), and with ``HF_HUB_OFFLINE=1`` nothing touches the network at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

TIMEOUT_S = 5.0
REPO_TYPES = ("model", "dataset")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def reachable(timeout: float = TIMEOUT_S) -> bool:
    """Whether the hub answers at all (a TCP connection to its endpoint); False when offline."""
    from huggingface_hub import constants

    if offline():
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def is_repo_id(value: str) -> bool:
    """Whether ``value`` can name a hub repository (``name`` or ``namespace/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def cached(
    repo_id: str, repo_type: str = "model", revision: str | None = None, filenames: Sequence[str] = ("config.json",)
) -> bool:
    """Whether the local cache holds the repository: one of ``filenames`` of a model (at ``revision``), or
    anything of a data set (the hub cache, or the ``datasets`` cache it was loaded into)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if repo_type == "dataset":
        if (Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}").is_dir():
            return True
        import datasets

        return (Path(datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")).is_dir()
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type)
        if isinstance(found, str):
            return True
    return False


def access_problem(repo_id: str, repo_type: str = "model", timeout: float = TIMEOUT_S) -> str | None:
    """None when this user may read the repository; else what stands in the way, in a few words: the hub's
    auth check, with the token ``huggingface-cli login`` or ``HF_TOKEN`` gives, within ``timeout``."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, get_session

    url = f"{constants.ENDPOINT}/api/{repo_type}s/{repo_id}/auth-check"
    try:
        response = get_session().get(url, headers=build_hf_headers(), timeout=timeout)
    except Exception as err:  # the client raises its transport's errors (requests or httpx)
        return f"the hub ({constants.ENDPOINT}) did not answer within {timeout:g} s ({type(err).__name__})"
    code, status = response.headers.get("X-Error-Code"), response.status_code
    if status == 200:
        return None
    page = f"{constants.ENDPOINT}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    login = "`huggingface-cli login` (or set HF_TOKEN)"
    if code == "GatedRepo":
        return f"it is gated on the hub: accept its licence on {page} and log in with {login}"
    if code == "RepoNotFound" or status == 404:
        return f"the hub has no {repo_type} {repo_id!r} (a private one needs {login})"
    if status in (401, 403):
        return f"the hub refuses access (status {status}): log in with {login}, as a user who may read it"
    return f"the hub answered status {status}"


def how_to_provide(repo_id: str, setting: str, repo_type: str = "model") -> str:
    """One line: the ways to make ``repo_id`` loadable without asking the hub at run time."""
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    kind = " --repo-type dataset" if repo_type == "dataset" else ""
    return (
        f"download it once where there is network (`huggingface-cli download {repo_id}{kind} --local-dir DIR`) "
        f"and set {setting}=DIR, or point HF_HOME (now {home}) at a Hugging Face cache that holds it; a gated "
        f"{repo_type} also needs its licence accepted on huggingface.co and `huggingface-cli login` (or HF_TOKEN)"
    )
