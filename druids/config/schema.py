"""The whole configuration (:class:`Config`) and its serialisation: a configuration is a value.

It is printed, hashed (:func:`config_hash`) and saved with every artifact, so
a changed setting never reuses a stale cache; :func:`to_dict` and
:func:`from_dict` round-trip it through JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from druids.config.chapters import (
    CalibrationConfig,
    ExplainConfig,
    ReferenceLevels,
    SamplingStudyConfig,
    SkillConfig,
)
from druids.config.stages import (
    ClimateConfig,
    DatasetConfig,
    ModelConfig,
    OracleConfig,
    SamplingConfig,
    TrainingConfig,
    WorldConfig,
)

#: Every config dataclass by name (the annotations are strings), for :func:`from_dict`.
_DATACLASSES = {cls.__name__: cls for cls in (WorldConfig, OracleConfig, ClimateConfig, DatasetConfig, ModelConfig, TrainingConfig, SamplingConfig, SkillConfig, SamplingStudyConfig, CalibrationConfig, ExplainConfig, ReferenceLevels)}


@dataclass(frozen=True)
class Config:
    """Everything a chapter needs; one per profile."""

    profile: str
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    climate: ClimateConfig = field(default_factory=ClimateConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    skill: SkillConfig = field(default_factory=SkillConfig)
    sampling_study: SamplingStudyConfig = field(default_factory=SamplingStudyConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    levels: ReferenceLevels = field(default_factory=ReferenceLevels)


def to_dict(cfg: Any) -> dict:
    """A JSON-serialisable dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable hex digest of a config dataclass; keys caches and file names."""
    text = json.dumps({"type": type(cfg).__name__, **to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config dataclass from :func:`to_dict` output."""
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in hints:
            raise ValueError(f"{cls.__name__} has no field {key!r}")
        ftype = hints[key].type
        target = _DATACLASSES.get(ftype, globals().get(ftype)) if isinstance(ftype, str) else ftype
        if dataclasses.is_dataclass(target):
            value = from_dict(target, value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    return cls(**kwargs)


def updated(cfg: Config, **sections: dict) -> Config:
    """``cfg`` with fields of its sections replaced: ``updated(cfg, model={"base_channels": 48})``."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in sections.items()}
    return dataclasses.replace(cfg, **changes)
