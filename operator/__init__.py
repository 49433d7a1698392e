"""Thresher's control plane: a kopf operator that runs CurationJobs as one Indexed Job per step.

Entry points: ``python -m curation_operator`` (see ``__main__``) or
``kopf run -m curation_operator.main``. The builders (``builders``), the state machine (``state``)
and the CRD generator (``curation.crd``) are pure and import neither kopf nor kubernetes.
"""

__all__: list[str] = []
