"""Messages and answers of the OpenAI-compatible client: images, schemas, answer parsing."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from medsae.errors import InputError


def png_data_url(image: np.ndarray, size: int | None = None) -> str:
    """A ``data:image/png;base64,...`` URL of a uint8 image ``(H, W)`` or ``(H, W, 3)``.

    ``size``: resize (bilinear) so the longer side is ``size`` pixels; ``None`` keeps it.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError("image", f"expected uint8 pixels, got {arr.dtype}")
    img = Image.fromarray(arr)
    if size is not None and max(img.size) != size:
        scale = size / max(img.size)
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.Resampling.BILINEAR,
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def check_json_schema(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """Validate ``value`` against the subset of JSON Schema used for structured output.

    Supports ``type`` (object, array, string, number, integer, boolean, null, or a list of
    them), ``properties``, ``required``, ``additionalProperties: false``, ``items``, ``enum``,
    ``minItems``/``maxItems``, ``minimum``/``maximum``. Raises ``ValueError`` naming the path.
    """
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "boolean": lambda v: isinstance(v, bool),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "null": lambda v: v is None,
        }
        if not any(checks.get(t, lambda v: True)(value) for t in allowed):
            raise ValueError(f"{path}: expected {'/'.join(allowed)}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                raise ValueError(f"{path}: missing required field {key!r}")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(props))
            if extra:
                raise ValueError(f"{path}: unexpected field(s) {extra}")
        for key, sub in props.items():
            if key in value:
                check_json_schema(value[key], sub, f"{path}.{key}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise ValueError(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ValueError(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                check_json_schema(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ValueError(f"{path}: {value} > maximum {schema['maximum']}")


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema usable with strict structured output on most servers.

    ``$ref`` to ``$defs`` are inlined (several local servers do not resolve them), every
    object gets ``additionalProperties: false`` and lists all its properties as required
    (what OpenAI's strict mode demands).
    """
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name not in defs:
                raise InputError("schema", f"unresolved reference {node['$ref']}")
            return walk(defs[name])
        out = {k: walk(v) for k, v in node.items() if k != "$defs"}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list(out["properties"])
        return out

    result: dict[str, Any] = walk(schema)
    return result


def strip_fences(text: str) -> str:
    """Remove a Markdown code fence some servers wrap JSON answers in."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def with_images(
    messages: list[dict[str, Any]], images: Sequence[np.ndarray | str], size: int | None
) -> list[dict[str, Any]]:
    """Append images as ``image_url`` parts to the last user message (copying it)."""
    if not images:
        return messages
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            break
    else:
        raise InputError("messages", "images need a user message to attach to")
    content = messages[i].get("content", "")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    for image in images:
        url = image if isinstance(image, str) else png_data_url(image, size)
        parts.append({"type": "image_url", "image_url": {"url": url}})
    out = list(messages)
    out[i] = {**messages[i], "content": parts}
    return out


def parse_answer(
    body: dict[str, Any], json_schema: dict[str, Any], model_cls: type[BaseModel] | None
) -> dict[str, Any]:
    """The validated JSON answer of a chat completion; ``ValueError`` says what is wrong."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"no choices[0].message in the answer ({e})") from e
    refusal = message.get("refusal")
    if refusal:
        raise ValueError(f"the model refused: {str(refusal)[:200]}")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("empty answer")
    try:
        value = json.loads(strip_fences(content))
    except json.JSONDecodeError as e:
        raise ValueError(f"answer is not JSON ({e.msg}): {content[:120]!r}") from e
    if model_cls is not None:
        try:
            return model_cls.model_validate(value).model_dump(mode="json")
        except ValidationError as e:
            raise ValueError(f"answer does not follow the schema: {e.errors()[:3]}") from e
    check_json_schema(value, json_schema)
    if not isinstance(value, dict):
        raise ValueError("answer is not a JSON object")
    return value
