"""medsae.llm: the OpenAI-compatible client, message building, the sentence embedder,
and the local fake server the tests talk to.

Names are imported lazily (on first use) so that importing the package, and ``medsae
--help``, stay fast. Add a name by adding it to ``_EXPORTS`` (name -> defining module).
"""

from __future__ import annotations

from medsae._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "LLMClient": "medsae.llm.client",
    "LLMError": "medsae.llm.client",
    "Usage": "medsae.llm.client",
    "TextEmbedder": "medsae.llm.embed",
    "LLMConfig": "medsae.llm.config",
    "FakeLLMServer": "medsae.llm.fake_server",
    "Faults": "medsae.llm.fake_server",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
