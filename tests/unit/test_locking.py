"""The output lock of `thresher run`: exclusive, names its owner, released with its holder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from curation.errors import OutputInUseError
from curation.locking import LOCK_NAME, output_lock


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    with output_lock(str(tmp_path / "out")):
        record = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert record == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(OutputInUseError, match=rf"another run \(pid {os.getpid()} on .+\) is using this output"), \
                output_lock(str(tmp_path / "out")):
            pass
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released and removed
    with output_lock(str(tmp_path / "out")):
        pass


def test_a_stale_lock_file_of_a_dead_run_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999_999_999, "host": "gone"}))  # nobody holds it
    with output_lock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
