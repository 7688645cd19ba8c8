"""The online study's checks before anything runs: an API key, a server that answers, the Public API, the entity.

Each failure is one line, in seconds: a study must not train for minutes and then find it cannot log.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrscan.pipeline.errors import LrscanError

DEFAULT_BASE_URL = "https://api.wandb.ai"  # wandb's own default server
ONLINE_CHECK_SECONDS = 10.0  # how long the online checks wait on the server, each


@dataclass(frozen=True)
class WandbAccess:
    """How the online study reaches W&B; `from_env` reads the environment, at the CLI's edge."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    identity_token_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WandbAccess:
        return cls(base_url=(env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
                   api_key=env.get("WANDB_API_KEY") or None,
                   identity_token_file=env.get("WANDB_IDENTITY_TOKEN_FILE") or None)


def check_credentials(access: WandbAccess) -> None:
    """A key for `access.base_url` where wandb looks for one (WANDB_API_KEY, then the netrc file), well formed."""
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib.wbauth import read_netrc_auth
    from wandb.sdk.lib.wbauth.validation import check_api_key

    if access.api_key:
        if problem := check_api_key(access.api_key):
            raise LrscanError(f"WANDB_API_KEY is not a W&B API key: {problem}")
        return
    if access.identity_token_file:
        if not Path(access.identity_token_file).is_file():
            raise LrscanError(f"WANDB_IDENTITY_TOKEN_FILE={access.identity_token_file!r} is not a file")
        return
    try:
        key = read_netrc_auth(host=access.base_url)
    except AuthenticationError as e:
        raise LrscanError(f"the netrc entry for {access.base_url} is not a W&B API key: {e}") from None
    except ValueError as e:
        raise LrscanError(f"WANDB_BASE_URL={access.base_url!r}: {e}") from None
    if not key:
        raise LrscanError(f"no W&B API key for {access.base_url}: run `wandb login` or set WANDB_API_KEY "
                          f"(or run offline: drop --wandb_mode=online)")


def check_reachable(base_url: str, timeout_seconds: float) -> None:
    """The W&B server answers at `base_url` within `timeout_seconds`: any HTTP status counts (via a proxy if set)."""
    outcome: dict[str, BaseException] = {}

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(base_url, method="HEAD"), timeout=timeout_seconds).close()
        except urllib.error.HTTPError:
            pass  # an HTTP error status is an answer: the server is there
        except (urllib.error.URLError, OSError, ValueError) as e:
            outcome["error"] = e

    # a thread with a bounded join: name resolution is not covered by the socket timeout
    thread = threading.Thread(target=probe, name="lrscan-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout_seconds + 1.0)
    if thread.is_alive():
        raise LrscanError(f"the W&B server {base_url} did not answer within {timeout_seconds:g} s: check the network, "
                          f"WANDB_BASE_URL or a proxy (or run offline: drop --wandb_mode=online)")
    if "error" in outcome:
        e = outcome["error"]
        reason = getattr(e, "reason", None) or e
        reason = getattr(reason, "strerror", None) or reason  # "Connection refused", not "[Errno 111] ..."
        raise LrscanError(f"cannot reach the W&B server {base_url} ({reason}): check the network, WANDB_BASE_URL or "
                          f"a proxy (or run offline: drop --wandb_mode=online)")


def public_api(access: WandbAccess, timeout_seconds: float) -> Any:
    """`wandb.Api` for `access`; its credential or network failure as one line."""
    import wandb

    try:
        return wandb.Api(overrides={"base_url": access.base_url}, api_key=access.api_key,
                         timeout=max(1, int(timeout_seconds)))
    except Exception as e:  # wandb raises AuthenticationError, CommError, UsageError, ValueError here
        raise LrscanError(f"the W&B Public API at {access.base_url} failed: {_first_line(e)}") from None


def default_entity(api: Any) -> str:
    """The entity W&B files the user's runs under, or one line saying how to give one."""
    try:
        entity = api.default_entity
    except Exception as e:
        raise LrscanError(f"cannot ask W&B for your default entity ({_first_line(e)}); pass --entity=NAME") from None
    if not entity:
        raise LrscanError("W&B has no default entity for this API key: pass --entity=NAME (your user or team name, "
                          "the ENTITY of ENTITY/PROJECT)")
    return str(entity)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
