"""Typed parameters of every stage, one module per family.

These modules import only pydantic: the spec, the CRD generator and the operator load
them without any heavy dependency.
"""

from curation.params.base import CamelModel
from curation.params.curriculum import CurriculumParams
from curation.params.decontaminate import DecontaminateParams
from curation.params.dedup import ExactDedupParams, MinHashParams
from curation.params.heuristic import HeuristicFilterParams
from curation.params.language_id import LanguageIdParams
from curation.params.model_stages import (
    QualityScoreParams,
    RedundancyControlParams,
    RephraseParams,
    SemanticDedupParams,
)
from curation.params.pii import PiiRedactionParams
from curation.params.source_policy import SourcePolicyParams

__all__ = [
    "CamelModel",
    "CurriculumParams",
    "DecontaminateParams",
    "ExactDedupParams",
    "HeuristicFilterParams",
    "LanguageIdParams",
    "MinHashParams",
    "PiiRedactionParams",
    "QualityScoreParams",
    "RedundancyControlParams",
    "RephraseParams",
    "SemanticDedupParams",
    "SourcePolicyParams",
]
