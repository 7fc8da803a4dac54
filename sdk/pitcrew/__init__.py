"""Pitcrew Python SDK: local flag evaluation and event reporting (stdlib only).

    from pitcrew import Client

    client = Client("https://flags.example.com", "pc_sdk_...")
    if client.enabled("new-checkout", {"id": "user-1", "country": "DE"}):
        ...
    client.track("purchase", {"id": "user-1"}, value=42.0)

See :class:`Client` for the API, and README.md ("SDK usage") for asyncio,
gunicorn and OpenFeature usage.
"""

from .client import Client
from .evaluation import CompiledRuleset, EvaluationResult, InvalidRuleset, Reason

__version__ = "0.2.0"

__all__ = ["Client", "CompiledRuleset", "EvaluationResult", "InvalidRuleset", "Reason", "__version__"]
