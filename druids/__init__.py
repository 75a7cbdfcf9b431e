"""DRUIDS: a reproducible compendium for understanding generative weather-forecast models.

Data flows one way: ``data -> dataset -> models -> training -> sampling ->
(explain, calibration) -> plotting``. Notebooks in ``notebooks/`` orchestrate;
all logic lives here.
"""

__version__ = "0.1.0"
