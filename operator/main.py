"""Handler module for `kopf run -m curation_operator.main` (equivalent to `python -m curation_operator`)."""

from curation_operator import handlers  # noqa: F401 - registers the handlers with kopf
