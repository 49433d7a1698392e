"""Thresher's data side: the pipeline spec, datasets, stages, the local runner and the worker.

Heavy dependencies (torch, transformers, faiss) are imported lazily by the model stages; this
package never imports Kubernetes libraries.
"""

__version__ = "0.1.0"
