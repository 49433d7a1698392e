"""Thresher's control plane: kopf handlers for CurationJob (imported as `curation_operator`)."""
