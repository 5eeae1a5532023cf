"""Process-level memory housekeeping for the long-running entry points."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Everything built at startup (botbuilder and msrest models, pydantic schemas, the policy, card models, clients)
    lives until the process exits. Moving it out of the cyclic collector's reach means a collection walks only what
    requests and jobs allocated, instead of pausing a click's path to re-walk the whole startup heap."""
    gc.collect()
    gc.freeze()
