"""Frozen configuration values for every stage, grouped into named profiles.

* :mod:`~druids.config.stages`: the pipeline's stages (world, oracle, climate, dataset, model, training, sampling);
* :mod:`~druids.config.chapters`: the chapters' studies (skill, sampling study, calibration, explainability,
  reference levels);
* :mod:`~druids.config.schema`: the whole :class:`Config` and its serialisation (:func:`to_dict`,
  :func:`from_dict`, :func:`config_hash`, which keys caches);
* :mod:`~druids.config.profiles`: the profiles ``smoke``, ``default``, ``gpu``, ``era5``
  (:func:`get_config`), :func:`with_data` and :func:`objective_config`.

Base layer: imports nothing else of druids. This face re-exports all of it.
"""

from druids.config.chapters import (
    CalibrationConfig,
    ExplainConfig,
    ReferenceLevels,
    SamplingStudyConfig,
    SkillConfig,
)
from druids.config.profiles import (
    ERA5_LEVELS,
    ERA5_STATIC,
    ERA5_STORE,
    ERA5_VARIABLES,
    PROFILES,
    get_config,
    objective_config,
    store_dataset,
    with_data,
)
from druids.config.schema import Config, config_hash, from_dict, to_dict, updated
from druids.config.stages import (
    ClimateConfig,
    DatasetConfig,
    ModelConfig,
    OracleConfig,
    SamplingConfig,
    TrainingConfig,
    WorldConfig,
)

__all__ = [
    "CalibrationConfig",
    "ClimateConfig",
    "Config",
    "DatasetConfig",
    "ERA5_LEVELS",
    "ERA5_STATIC",
    "ERA5_STORE",
    "ERA5_VARIABLES",
    "ExplainConfig",
    "ModelConfig",
    "OracleConfig",
    "PROFILES",
    "ReferenceLevels",
    "SamplingConfig",
    "SamplingStudyConfig",
    "SkillConfig",
    "TrainingConfig",
    "WorldConfig",
    "config_hash",
    "from_dict",
    "get_config",
    "objective_config",
    "store_dataset",
    "to_dict",
    "updated",
    "with_data",
]
