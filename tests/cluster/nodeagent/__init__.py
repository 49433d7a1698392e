"""Thresher test node agent: a tiny stand-in for the kubelet, for tests only.

It registers a Node (capacity for cpu, memory, pods and ``nvidia.com/gpu``), keeps its Lease in
``kube-node-lease`` fresh, watches the pods the scheduler binds to it and runs every container's
``command + args`` as a **local process**. Images are never pulled: the command runs with the
agent's own Python environment (the directory of ``sys.executable`` is put first on ``PATH``, and
``VIRTUAL_ENV`` points at its venv), so ``python -m ...`` or any console script installed in that
venv (e.g. ``thresher``) works as the container command.

Mapping of container paths to local folders (there is no mount namespace):
- volumes: ``persistentVolumeClaim`` -> ``<pvc-root>/<namespace>/<claimName>`` (default
  ``<data-root>/pvc/...``), ``hostPath`` -> the same path on this machine, ``emptyDir`` -> a per-pod
  temp folder, ``configMap``/``secret``/``downwardAPI``/``projected`` -> files written into a
  per-pod folder. ``subPath`` is honoured.
- every container ``volumeMounts[].mountPath`` (and ``terminationMessagePath`` and ``workingDir``) is
  rewritten **as a string prefix** in ``command``, ``args`` and ``env`` values to the mapped local
  folder. Paths that a program computes or hard-codes internally are *not* rewritten — pass paths
  via args or env.
- ``terminationMessagePath`` (default ``/dev/termination-log``) is remapped to a per-container file;
  its first 4096 bytes become ``state.terminated.message``. With ``FallbackToLogsOnError`` an empty
  file on a non-zero exit uses the log tail (last 80 lines, at most 2048 bytes).

Container logs are in ``<data-root>/pods/<namespace>_<pod>_<uid>/logs/<container>/<restart>.log``
and are served to ``kubectl logs`` through the API server when ``--serve-port`` is given.

Run standalone (both forms are the same program)::

    python tests/cluster/node_agent.py --kubeconfig K --node-name n1 --data-root /tmp/n1 [--gpus 2]
    cd tests/cluster && python -m nodeagent --kubeconfig K ...
"""

from .node import NodeAgent, main
from .podspec import expand, path_rewriter

__all__ = ["NodeAgent", "expand", "main", "path_rewriter"]
