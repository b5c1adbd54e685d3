"""Which W&B mode a command runs in: one rule for the jobs that log and the dashboard that reads.

A laptop with no account must run without a prompt, so ``auto`` means ``offline`` unless
``WANDB_MODE`` says otherwise or an API key is configured (``WANDB_API_KEY``, or a
``wandb login`` entry in ``~/.netrc`` for ``WANDB_BASE_URL``'s host). The training jobs
(``runners.tracking``) and ``python -m analysis.dashboard`` must agree on this rule, or the
dashboard would try to save a report about runs that were never uploaded. It lives here,
in ``analysis``, because the dependency runs one way: ``runners`` may import ``analysis``,
never the reverse. Standard library only, so importing it pulls in neither W&B nor torch.
"""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

def has_api_key() -> bool:
    """Whether this machine can talk to W&B without a prompt: a key in the environment or in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str) -> str:
    """The mode a run uses: ``requested`` unless it is ``auto``; then ``WANDB_MODE`` if set,
    else ``online`` with an API key and ``offline`` without."""
    if requested != "auto":
        return requested
    return os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
