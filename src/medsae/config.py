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
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medsae.errors import InputError

M = TypeVar("M", bound=BaseModel)


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


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    data = read_config_file(path)
    for item in overrides or []:
        data = merge_overrides(data, parse_override(item))
    return build_config(PipelineConfig, data, path)
