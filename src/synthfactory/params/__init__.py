"""Typed parameters: `params.yaml` → pydantic models → Dagster resource config.

The file has three kinds of keys:

- `seed` and `runtime` configure the torch runtime resource (device, dtype, threads, seed);
- `store` configures the artifact store resource (its root);
- `dvc` configures the DVC resource (executable, and whether a materialization outside
  `dvc repro` commits its output to dvc.lock and pushes it); no stage reads it;
- every other key is the section of the asset with the same name, gathered in `Params`, the
  `params` resource that the assets read. Its values are the defaults shown in the Dagster
  launchpad, so one run can override a section without editing the file.

Unknown keys and wrong types fail with a message that names the key, the bad value and the rule.
"""

from synthfactory.params.base import ParamsError, Section, config_digest
from synthfactory.params.curation import FilteredSetParams, JudgeParams, RetrievalParams
from synthfactory.params.data import PromptsParams, RealImagesParams
from synthfactory.params.distillation import DistilledSetParams, ExpertTrajectoriesParams
from synthfactory.params.evaluation import (ClassifiersParams, ContaminationParams,
                                             EvalReportParams)
from synthfactory.params.generation import (AdapterParams, DdpmParams, GeneratorParams,
                                            SyntheticShardsParams)
from synthfactory.params.platform import (AutomationParams, ExecutorParams, ScheduleParams,
                                          SensorParams)
from synthfactory.params.project import Params, ProjectConfig, load_params, parse_params
from synthfactory.params.refinement import RefinementParams

__all__ = ["AdapterParams", "AutomationParams", "ClassifiersParams", "ContaminationParams",
           "DdpmParams", "DistilledSetParams", "EvalReportParams", "ExecutorParams",
           "ExpertTrajectoriesParams",
           "FilteredSetParams", "GeneratorParams",
           "JudgeParams", "Params", "ParamsError", "ProjectConfig", "PromptsParams",
           "RealImagesParams", "RefinementParams", "RetrievalParams", "ScheduleParams",
           "Section", "SensorParams",
           "SyntheticShardsParams", "config_digest", "load_params", "parse_params"]
