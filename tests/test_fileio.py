"""fileio: temporaries of killed writers are cleaned up; refused writes become one explained line."""

import subprocess

import pytest

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, explained_os_errors


def dead_pid():
    """The pid of a process that has exited and been reaped."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.fixture
def live_pid():
    sleeper = subprocess.Popen(["sleep", "60"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_the_next_atomic_write_removes_dead_writers_temps_and_keeps_live_ones(tmp_path, live_pid, kind):
    out = tmp_path / "out"
    dead_file, dead_folder = tmp_path / f".out.tmp-{dead_pid()}", tmp_path / f".out.tmp-{dead_pid()}"
    dead_file.write_bytes(b"half a file")
    dead_folder.mkdir()
    (dead_folder / "part").write_bytes(b"half a folder")
    live = tmp_path / f".out.tmp-{live_pid}"  # another job still writing
    live.write_bytes(b"in progress")
    other = tmp_path / f".other.tmp-{dead_pid()}"  # a different path's business
    other.write_bytes(b"not ours")
    with atomic_path(out) as tmp:
        if kind == "folder":
            tmp.mkdir()
            (tmp / "x").write_text("whole")
        else:
            tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "out"])
    assert live.read_bytes() == b"in progress"


def test_a_real_full_device_is_one_line_with_the_path_and_free_space():
    with pytest.raises(VitpeftError) as error:
        with explained_os_errors("/dev/full"):
            with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
                full.write(b"x")
    message = str(error.value)
    assert message.startswith("cannot write /dev/full: the disk is full (")
    assert " free on /dev/full); free some space there or write elsewhere" in message
    assert "\n" not in message


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "notes").write_text("a file")
    out = tmp_path / "notes" / "run" / "weights.bin"
    with pytest.raises(VitpeftError, match=rf"cannot write {out}: {tmp_path / 'notes'} is a file, not a folder"):
        with explained_os_errors(out), atomic_path(out) as tmp:
            tmp.write_text("never")


def test_other_os_errors_pass_through_unexplained(tmp_path):
    with pytest.raises(FileNotFoundError):
        with explained_os_errors(tmp_path / "out"):
            (tmp_path / "absent").read_text()
