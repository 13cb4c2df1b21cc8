"""mtfleet: translate whole datasets with neural MT models on an elastic Ray cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtfleet.api.client import Client, Job

__all__ = ["Client", "Job"]


def __getattr__(name: str) -> Any:
    # The client loads on first use, so `import mtfleet` stays light for the workers.
    if name in __all__:
        from mtfleet.api import client

        return getattr(client, name)
    raise AttributeError(f"module 'mtfleet' has no attribute {name!r}")
