"""Entry point of the test node agent: ``python tests/cluster/node_agent.py --help``.

The code lives in the ``nodeagent`` package next to this file (see its docstring).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nodeagent.node import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
