"""Typed configuration: one pydantic model per stage, composed into the pipeline config.

A config file (TOML or YAML) holds one table per stage::

    workspace = "runs/ts-ct"

    [prepare]
    source = "/data/Totalsegmentator_dataset_v201"
    planes = ["axial", "coronal", "sagittal"]

    [encode]
    encoders = ["efficientnet-lite0"]

Command-line flags override file values; the resolved config of each stage is saved in the
manifest of the artifact it produced.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medsae.errors import InputError

M = TypeVar("M", bound=BaseModel)


PATH_FIELD: dict[str, Any] = {"path": True}
"""``json_schema_extra`` of a field holding a path: read relative to its config file."""


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def runtime_fields(cls) -> tuple[str, ...]:
        """Fields that only change where or how the work runs (marked ``runtime`` in their
        ``json_schema_extra``, such as ``device``): out of the artifact key."""
        return tuple(
            name
            for name, f in cls.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("runtime")
        )

    def key_config(self) -> dict[str, Any]:
        """The config as hashed into the artifact key: every runtime field at its default (so
        a key made before the field was marked runtime stays valid)."""
        data = self.model_dump(mode="json")
        for name in self.runtime_fields():
            field = type(self).model_fields[name]
            data[name] = field.get_default(call_default_factory=True)
        return data

    def runtime_values(self) -> dict[str, Any]:
        """The runtime fields as set (recorded in the manifest's ``runtime`` block)."""
        return {name: getattr(self, name) for name in self.runtime_fields()}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a dict, with errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "config file not found")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        elif p.suffix.lower() in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        elif p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise InputError(p, "unknown config format; use .toml, .yaml/.yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as e:
        raise InputError(p, f"cannot parse config: {e}") from e
    if not isinstance(data, dict):
        raise InputError(p, "config must be a table/mapping at the top level")
    return data


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` (None values in overrides are ignored)."""
    out = dict(base)
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_overrides(out[k], v)
        else:
            out[k] = v
    return out


def build_config(model: type[M], data: dict[str, Any], source: str | Path = "config") -> M:
    """Validate ``data`` into ``model``; errors name the source and the offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors()
        )
        raise InputError(source, f"invalid {model.__name__}: {problems}") from e


def parse_override(item: str) -> dict[str, Any]:
    """Turn ``section.key=value`` into a nested dict; the value is parsed as YAML (numbers, lists)."""
    if "=" not in item:
        raise InputError(item, "override must look like section.key=value")
    dotted, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    out: dict[str, Any] = {}
    cur = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    return out


class PipelineConfig(StageConfig):
    """The whole pipeline: one section per stage (see each stage's config for its fields)."""

    workspace: str | None = Field(default=None, description="Workspace folder for every artifact.")
    device: str | None = Field(
        default=None,
        description="Device of every stage that runs a model (encode, train, codes, evaluate, "
        "interpret, report), unless its section sets its own: auto | cpu | cuda | cuda:N.",
    )
    prepare: dict[str, Any] = Field(default_factory=dict, description="PrepareConfig fields.")
    split: dict[str, Any] = Field(default_factory=dict, description="SplitConfig fields.")
    encode: dict[str, Any] = Field(default_factory=dict, description="EncodeConfig fields.")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields.")
    codes: dict[str, Any] = Field(default_factory=dict, description="CodesConfig fields.")
    evaluate: dict[str, Any] = Field(default_factory=dict, description="EvaluateConfig fields.")
    rank: dict[str, Any] = Field(default_factory=dict, description="RankConfig fields.")
    interpret: dict[str, Any] = Field(default_factory=dict, description="InterpretConfig fields.")
    index: dict[str, Any] = Field(default_factory=dict, description="Index/search fields.")
    report: dict[str, Any] = Field(default_factory=dict, description="ReportConfig fields.")


def resolve_paths(model: Any, data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` with the path fields of ``model`` made absolute against ``base``."""
    out = dict(data)
    for member in model_members(model):
        for name, info in member.model_fields.items():
            value = out.get(name)
            if value is None:
                continue
            extra = info.json_schema_extra
            if isinstance(extra, Mapping) and extra.get("path") and isinstance(value, str):
                out[name] = str((base / Path(value).expanduser()).resolve())
            elif model_members(info.annotation) and isinstance(value, dict):
                out[name] = resolve_paths(info.annotation, value, base)
    return out


def strip_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
        return typing.Union[tuple(rest)], True  # noqa: UP007
    return annotation, False


def unannotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def model_members(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a type stands for: itself, or each member of a union of configs."""
    annotation, _ = strip_optional(unannotated(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [unannotated(a) for a in typing.get_args(annotation)]
        if members and all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return list(members)
    return []
