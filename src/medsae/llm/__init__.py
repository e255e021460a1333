"""medsae.llm: the OpenAI-compatible client, message building, the sentence embedder,
and the local fake server the tests talk to.

Names are imported lazily (on first use) so that importing the package, and ``medsae
--help``, stay fast. Add a name by adding it to ``_EXPORTS`` (name -> defining module).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "LLMClient": "medsae.llm.client",
    "LLMError": "medsae.llm.client",
    "Usage": "medsae.llm.client",
    "TextEmbedder": "medsae.llm.embed",
    "FakeLLMServer": "medsae.llm.fake_server",
    "Faults": "medsae.llm.fake_server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
