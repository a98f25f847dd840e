"""Output folders and runs at the command line: claimed with a lock, never written through planted links,
never silently replaced; --resume that cannot be honoured is an error naming both values; SIGTERM saves
like Ctrl-C; every "saved" line is true."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from clihelp import (REPO, assert_one_line_error, assert_same_state, assert_usage_error, cli_cmd, cli_env, idx_folder,
                     last_json, run_cli, state_of)

import portacnn as pc
from portacnn import cli
from portacnn.run_folder import LOCK_NAME, RunFolder, RunFolderError

pytestmark = pytest.mark.slow  # subprocess runs of the CLI (locks, signals, concurrent runs): run by .ci/run, not by a plain pytest

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, flock and symlinks")
QUICK = ["--limit", 64, "--batch-size", 16, "--no-plots", "--json"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return idx_folder(tmp_path_factory.mktemp("data"), n_train=128, n_test=60)


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished 1-epoch run and its folder."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = run_cli("train", "--data", data_dir, *QUICK, "--epochs", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def cli_error(capsys, argv, *fragments, code=2):
    assert cli.main([str(a) for a in argv]) == code
    return assert_one_line_error(capsys.readouterr().err, "portacnn: error:", *fragments)


# -- claiming a folder ---------------------------------------------------------------------------------------
def test_a_folder_holding_a_run_is_refused_without_overwrite(finished, data_dir, capsys):
    before = (finished / "model.safetensors").read_bytes()
    cli_error(capsys, ["train", "--data", data_dir, *QUICK, "--epochs", 1, "--seed", 5, "--out", finished],
              str(finished), "already holds a run", "--overwrite")
    assert (finished / "model.safetensors").read_bytes() == before


def test_overwrite_replaces_the_run(data_dir, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--data", data_dir, *QUICK, "--epochs", 1, "--out", out).returncode == 0
    proc = run_cli("train", "--data", data_dir, *QUICK, "--epochs", 1, "--seed", 5, "--out", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert pc.load(out / "model.safetensors").checkpoint["train_state"]["seed"] == 5
    assert not (out / LOCK_NAME).exists()  # released and removed at the end


@POSIX
def test_symlinks_planted_in_a_shared_folder_are_never_written_through(data_dir, tmp_path):
    out, victim = tmp_path / "shared", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    (out / LOCK_NAME).symlink_to(victim)
    proc = run_cli("train", "--data", data_dir, *QUICK, "--epochs", 1, "--out", out)
    assert_usage_error(proc, "symbolic link", LOCK_NAME)
    assert victim.read_text() == "precious"
    (out / LOCK_NAME).unlink()
    for name in ("history.json.tmp", ".model.safetensors.1.x.tmp", "samples.png"):
        (out / name).symlink_to(victim)
    proc = run_cli("train", "--data", data_dir, "--limit", 64, "--batch-size", 16, "--json", "--epochs", 1,
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious"  # files are replaced by rename, never opened through a link
    assert not (out / "samples.png").is_symlink() and (out / "samples.png").stat().st_size > 0


@POSIX
def test_two_runs_into_one_folder_the_second_fails_fast(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out):
        code = "from portacnn.run_folder import RunFolder\nimport sys\nRunFolder(sys.argv[1]).__enter__()\n"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60,
                              env=cli_env(), cwd=REPO)
        assert proc.returncode != 0
        assert "another run (pid" in proc.stderr and str(os.getpid()) in proc.stderr
    with RunFolder(out):  # free again once the first run ended
        pass


@POSIX
def test_concurrent_cli_runs_one_wins_one_fails_and_no_model_is_lost(data_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", data_dir, "--limit", 64, "--batch-size", 8, "--epochs", 100000, "--no-plots",
            "--json", "--out", out]
    first = subprocess.Popen(cli_cmd(*args), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "model.safetensors").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        second = run_cli(*args[:-2], "--out", out, "--seed", 9)
        assert_usage_error(second, "another run (pid", str(out))
    finally:
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr
    assert pc.load(out / "model.safetensors").checkpoint["train_state"]["seed"] == 0  # the first run's, intact


@POSIX
def test_lock_holder_pid_is_released_after_a_crash(tmp_path):
    """flock goes with the process: a killed run's leftover lock file does not block the next run."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "from portacnn.run_folder import RunFolder\nimport sys, time\n"
                             "RunFolder(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(60)\n", str(out)],
                            stdout=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunFolderError, match="another run"):
        RunFolder(out).__enter__()
    proc.kill()
    proc.wait(timeout=30)
    assert (out / LOCK_NAME).exists()
    with RunFolder(out):
        pass


# -- resume ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, shown", [
    ("--batch-size", 32, "--batch-size 16"), ("--seed", 4, "--seed 0"), ("--model", "lenet5", "--model seed_cnn"),
    ("--dtype", "float64", "--dtype float32"), ("--limit", 32, "--limit 64"), ("--protocol", "tutorial", "--protocol full"),
])  # fmt: skip
def test_resume_with_a_conflicting_flag_names_both_values(finished, data_dir, capsys, flag, value, shown):
    ck = finished / "model.safetensors"
    line = cli_error(capsys, ["train", "--resume", ck, "--data", data_dir, flag, value], shown, f"{flag} {value}")
    assert "--resume" in line


def test_resume_never_opens_a_path_from_the_checkpoint(finished, data_dir, tmp_path, capsys):
    ck = finished / "model.safetensors"
    cli_error(capsys, ["train", "--resume", ck], "give --data", str(data_dir))
    other = idx_folder(tmp_path / "other", n_train=128, n_test=60)
    cli_error(capsys, ["train", "--resume", ck, "--data", other], str(data_dir), str(other))


def test_resuming_a_finished_run_into_a_new_folder_writes_what_it_says(finished, data_dir, tmp_path):
    out = tmp_path / "copy"
    proc = run_cli("train", "--resume", finished / "model.safetensors", "--data", data_dir, "--out", out, "--no-plots")
    assert proc.returncode == 0, proc.stderr
    saved = [line for line in proc.stdout.splitlines() if line.startswith("saved ")]
    assert saved and str(out / "model.safetensors") in saved[0]
    assert (out / "model.safetensors").is_file() and (out / "history.json").is_file()
    assert_same_state(state_of(out / "model.safetensors"), state_of(finished / "model.safetensors"))


def test_divergence_in_the_first_epoch_names_no_checkpoint(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", data_dir, *QUICK, "--optimizer", "sgd", "--lr", "1e30", "--epochs", 2,
                   "--checkpoint-every", 5, "--out", out)
    assert proc.returncode == 1
    line = assert_one_line_error(proc.stderr, "diverged")
    assert "checkpoint" not in line


# -- SIGTERM ---------------------------------------------------------------------------------------------------
@POSIX
def test_sigterm_saves_prints_how_to_resume_exits_143_and_resume_is_exact(data_dir, tmp_path):
    common = ["--data", data_dir, "--batch-size", 8, "--no-plots", "--json", "--seed", 1, "--epochs", 30]
    reference = run_cli("train", *common, "--out", tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "term"
    proc = subprocess.Popen(cli_cmd("train", *common, "--out", out), cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "model.safetensors").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    line = assert_one_line_error(stderr, "terminated (SIGTERM)", "checkpoint saved to", "--resume")
    assert line.endswith(str(out / "model.safetensors"))
    state = pc.load(out / "model.safetensors").checkpoint["train_state"]
    assert (state["epoch"], state["step"]) < (30, 0)
    resumed = run_cli("train", "--resume", out / "model.safetensors", "--data", data_dir, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(state_of(out / "model.safetensors"), state_of(tmp_path / "ref" / "model.safetensors"))
    assert last_json(resumed.stdout)["test_accuracy"] == last_json(reference.stdout)["test_accuracy"]


# -- environment and memory ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, value", [("PORTACNN_BLOCK_BYTES", "garbage"), ("PORTACNN_BACKEND", "tensorflow"),
                                         ("PORTACNN_PORTABLE", "maybe"), ("PORTACNN_MAX_DATA_BYTES", "lots"),
                                         ("PORTACNN_MAX_IMAGE_SIDE", "-3"), ("PORTACNN_MAX_CSV_LINE_BYTES", "0")])
def test_bad_environment_variables_are_one_line_errors(monkeypatch, capsys, name, value):
    monkeypatch.setenv(name, value)
    cli_error(capsys, ["info"], name)


def test_running_out_of_memory_is_one_line(monkeypatch, capsys):
    def exhausted(args):
        raise MemoryError

    monkeypatch.setitem(cli.COMMANDS, "info", exhausted)
    cli_error(capsys, ["info"], "out of memory", "--batch-size")


@POSIX
def test_a_hard_link_or_fifo_at_the_lock_name_is_refused_and_untouched(tmp_path):
    out, victim = tmp_path / "shared", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    os.link(victim, out / LOCK_NAME)
    with pytest.raises(RunFolderError, match="not a plain file of its own"):
        RunFolder(out).__enter__()
    assert victim.read_text() == "precious"
    (out / LOCK_NAME).unlink()
    os.mkfifo(out / LOCK_NAME)
    with pytest.raises(RunFolderError, match="not a plain file of its own"):
        RunFolder(out).__enter__()


def test_resume_with_fewer_epochs_than_done_is_refused(finished, data_dir, capsys):
    ck = finished / "model.safetensors"
    done = pc.load(ck).checkpoint["train_state"]["epoch"]
    proc = run_cli("train", "--resume", ck, "--data", data_dir, "--epochs", done + 1, "--out",
                   ck.parent.parent / "longer", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    longer = ck.parent.parent / "longer" / "model.safetensors"
    assert pc.load(longer).checkpoint["train_state"]["epoch"] == done + 1
    line = cli_error(capsys, ["train", "--resume", longer, "--data", data_dir, "--epochs", done], "already trained",
                     f"--epochs {done}")
    assert str(done + 1) in line


def test_default_run_folders_are_never_shared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20261202-120000")
    first, second = cli._out_folder(None), cli._out_folder(None)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == "20261202-120000-2"
