"""read_state_dict on hostile or broken local files: the real reason, never advice to load unsafely."""

import os
import pickle
import random

import pytest
import torch

from vitpeft.models.backbone import read_state_dict
from vitpeft.errors import VitpeftError

SYSTEM = f"{os.system.__module__}.system"  # how a pickle names os.system (posix.system on Linux)


class RunsAShellCommand:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def refused(path):
    with pytest.raises(VitpeftError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert message.startswith(f"checkpoint {path} ") and "\n" not in message
    assert "weights_only" not in message and "trust" not in message
    return message


def test_random_bytes_and_an_empty_file_are_not_checkpoints(tmp_path):
    noise = random.Random(0).randbytes(4096)
    assert noise[:1] not in (b"P", b"\x80")  # neither header by chance
    (tmp_path / "noise.pth").write_bytes(noise)
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "is not a torch checkpoint (no zip archive / pickle header)" in refused(tmp_path / "noise.pth")
    assert "is empty (0 bytes)" in refused(tmp_path / "empty.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the plain pickle
@pytest.mark.parametrize("layout", ["zip", "legacy", "plain pickle"])
def test_a_pickle_that_runs_code_names_what_it_loads_and_never_runs(tmp_path, layout):
    marker = tmp_path / "pwned"
    evil = RunsAShellCommand(f"touch {marker}")
    path = tmp_path / "evil.pth"
    if layout == "zip":
        torch.save({"w": torch.ones(2), "x": evil}, path)
    elif layout == "legacy":
        torch.save({"w": torch.ones(2), "x": evil}, path, _use_new_zipfile_serialization=False)
    else:  # protocol 5 names its globals through STACK_GLOBAL
        path.write_bytes(pickle.dumps({"x": evil}, protocol=5))
    message = refused(path)
    assert f"tries to load {SYSTEM}, which a weights-only load refuses: it is not a plain state dict" in message
    assert not marker.exists()


def test_a_cut_zip_checkpoint_is_called_damaged(tmp_path):
    torch.save({"w": torch.ones(1000)}, tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "is a damaged zip archive" in refused(tmp_path / "cut.pth")


def test_garbage_after_a_pickle_header_gives_torchs_reason_without_its_advice(tmp_path):
    (tmp_path / "odd.pth").write_bytes(b"\x80\x02" + random.Random(1).randbytes(200))
    message = refused(tmp_path / "odd.pth")
    assert "cannot be read by torch (" in message and "it is damaged or not a checkpoint" in message
