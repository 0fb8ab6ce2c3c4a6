"""Command line: mistakes a user can fix exit with status 2 and one line on
stderr that says what to do, never a traceback or a usage block.

Every case runs `mnemosyne.cli.main` in-process and stops before any training
(the checks come first); one case runs the real `python -m mnemosyne` in a
subprocess to check the exit status and stderr of the installed entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mnemosyne import cli


def _run(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("mnemosyne") and "error:" in line, line
    assert "Traceback" not in err and "usage:" not in err
    for needle in needles:
        assert needle in line, (needle, line)
    return line


ARGUMENT_ERRORS = {
    # argv: what the single line must contain (the problem and the way out)
    "no-command": ([], ["required: command", "mnemosyne --help"]),
    "unknown-command": (["train"], ["invalid choice: 'train'", "mnemosyne --help"]),
    "steps-zero": (
        ["demo", "--steps", "0"],
        ["positive integer", "mnemosyne demo --help"],
    ),
    "steps-not-int": (["evaluate", "--steps", "ten"], ["positive integer, got 'ten'"]),
    "seeds-not-int": (
        ["evaluate", "--seeds", "0,x"],
        ["seeds must be", "evaluate --help"],
    ),
    "seeds-negative": (["demo", "--seeds", "-1"], ["non-negative"]),
    "seeds-empty": (["evaluate", "--seeds", ","], ["seeds must be"]),
    "unknown-option": (["evaluate", "--optimiser", "adam"], ["unrecognized arguments"]),
    "missing-preset": (["meta-train"], ["required: --preset", "meta-train --help"]),
    "missing-value": (["demo", "--out"], ["expected one argument"]),
    "process-id-negative": (
        ["meta-train", "--preset", "quick", "--process-id", "-1"],
        ["non-negative integer, got '-1'"],
    ),
    "num-processes-zero": (
        ["meta-train", "--preset", "quick", "--num-processes", "0"],
        ["positive integer"],
    ),
}


@pytest.mark.parametrize("case", sorted(ARGUMENT_ERRORS))
def test_bad_arguments(capsys, case):
    argv, needles = ARGUMENT_ERRORS[case]
    code, out, err = _run(capsys, argv)
    assert code == 2
    assert out == ""
    _assert_one_line_error(err, *needles)


def test_malformed_process_variables_are_one_line(capsys, monkeypatch):
    """A launcher's malformed JAX_NUM_PROCESSES is reported before anything
    tries to join other processes."""
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    code, out, err = _run(capsys, ["meta-train", "--preset", "quick"])
    assert code == 2 and out == ""
    _assert_one_line_error(
        err, "JAX_NUM_PROCESSES='two' is not an integer", "--num-processes"
    )


def test_help_still_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", "--help"])
    assert info.value.code == 0
    assert "--optimizers" in capsys.readouterr().out


def test_unknown_names(capsys):
    code, _, err = _run(
        capsys, ["evaluate", "--tasks", "quadratic,nope", "--optimizers", "adam"]
    )
    assert code == 2
    _assert_one_line_error(err, "unknown task(s) ['nope']", "mnemosyne evaluate --list")

    code, _, err = _run(
        capsys, ["evaluate", "--tasks", "quadratic", "--optimizers", "adam,nadam"]
    )
    assert code == 2
    _assert_one_line_error(err, "unknown optimizer 'nadam'", "known:")

    for command in ("meta-train", "ablation"):
        code, _, err = _run(capsys, [command, "--preset", "nope"])
        assert code == 2
        _assert_one_line_error(
            err, "unknown preset 'nope'", "choose one of", "'default'"
        )

    code, _, err = _run(capsys, ["ablation", "--tasks", "nope"])
    assert code == 2
    _assert_one_line_error(err, "unknown task(s) ['nope']")


def test_empty_lists(capsys):
    code, _, err = _run(capsys, ["evaluate", "--tasks", ","])
    assert code == 2
    _assert_one_line_error(err, "no tasks given", "--tasks all")
    code, _, err = _run(
        capsys, ["evaluate", "--tasks", "quadratic", "--optimizers", ""]
    )
    assert code == 2
    _assert_one_line_error(err, "no optimizers given")


def test_paths(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for argv in (
        [
            "evaluate",
            "--tasks",
            "quadratic",
            "--optimizers",
            "adam",
            "--out",
            str(a_file),
        ],
        ["demo", "--out", str(a_file)],
        ["ablation", "--out", str(a_file)],
    ):
        code, _, err = _run(capsys, argv)
        assert code == 2, argv
        _assert_one_line_error(err, "is a file, not a folder", "choose another --out")
    assert a_file.read_text() == "not a folder"  # untouched

    code, _, err = _run(
        capsys, ["meta-train", "--preset", "quick", "--output", str(tmp_path)]
    )
    assert code == 2
    _assert_one_line_error(err, "is a folder", "give a file name")
    code, _, err = _run(
        capsys, ["meta-train", "--preset", "quick", "--checkpoint-dir", str(a_file)]
    )
    assert code == 2
    _assert_one_line_error(err, "--checkpoint-dir", "is a file, not a folder")


def test_unreadable_checkpoints(capsys, tmp_path, monkeypatch):
    """Resuming from a folder whose only checkpoint is garbage: one line saying
    to pass --no-resume (the trainer also warns once about the skipped file).

    The preset's trainer is swapped for a tiny one (same `MetaTrainer.run`
    resume logic, nothing compiled: the error comes before the first step)."""
    import jax

    from mnemosyne import meta, tasks
    from mnemosyne.baselines import LearnableSGD

    def tiny_train_preset(name, *, checkpoint_dir, resume, **kwargs):
        trainer = meta.MetaTrainer(
            LearnableSGD(0.1),
            tasks.get_task("quadratic"),
            num_tasks=1,
            unroll_length=2,
            horizon=4,
            checkpoint_dir=checkpoint_dir,
            key=jax.random.key(0),
        )
        return trainer.run(1, resume=resume, progress=False)

    monkeypatch.setattr(meta, "train_preset", tiny_train_preset)
    checkpoints = tmp_path / "ckpts"
    checkpoints.mkdir()
    (checkpoints / "ckpt-00000005.eqx").write_bytes(b"half a file")
    argv = [
        "meta-train", "--preset", "quick", "--steps", "1",
        "--output", str(tmp_path / "w.eqx"), "--checkpoint-dir", str(checkpoints),
    ]
    with pytest.warns(RuntimeWarning, match="Skipping unreadable checkpoint"):
        code, _, err = _run(capsys, argv)
    assert code == 2
    _assert_one_line_error(err, "No readable checkpoint", "--no-resume")
    assert not (tmp_path / "w.eqx").exists()


def test_missing_file_is_one_line(capsys, monkeypatch):
    """An OSError about a path (here: a weights file that vanished) is reported
    in one line with exit status 2, not as a traceback."""

    def missing(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "weights/default.eqx")

    monkeypatch.setattr("mnemosyne.evaluation.evaluate", missing)
    code, _, err = _run(
        capsys, ["evaluate", "--tasks", "quadratic", "--optimizers", "adam"]
    )
    assert code == 2
    _assert_one_line_error(
        err, "No such file or directory", "'weights/default.eqx'", "check the path"
    )


def test_subprocess_exit_status_and_stderr():
    """The real entry point: status 2, a single stderr line, nothing on stdout."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "mnemosyne", "evaluate", "--tasks", "no_such_task"],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    _assert_one_line_error(result.stderr, "unknown task(s) ['no_such_task']")


def test_scale_out_commands_parse():
    """Every `mnemosyne` command on the Scale out page (two processes here, a
    SLURM cluster, a Cloud TPU slice) is one the command line accepts."""
    import pathlib
    import re
    import shlex

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "scale-out.md"
    commands = re.findall(r"mnemosyne (meta-train [^\n&\"]*)", page.read_text())
    assert len(commands) >= 4, commands
    for command in commands:
        args = cli.build_parser().parse_args(shlex.split(command))
        assert args.func is cli.cmd_meta_train, command


def test_distributed_flags_reach_jax(monkeypatch):
    """`--distributed` leaves everything to `jax.distributed.initialize`'s
    detection of the cluster; flags and the environment are passed on; no
    flag and no variable: no initialisation (one process, as before)."""
    import jax

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize",
                        lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(jax.config, "update", lambda *args: None)
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    parse = lambda *flags: cli.build_parser().parse_args(
        ["meta-train", "--preset", "quick", *flags]
    )
    cli._join_processes(parse())
    assert calls == []
    cli._join_processes(parse("--distributed"))
    assert calls.pop() == ((None, None, None), {})
    cli._join_processes(parse("--coordinator", "h:1", "--num-processes", "2",
                              "--process-id", "1", "--heartbeat-timeout", "7"))
    assert calls.pop() == (("h:1", 2, 1), {"heartbeat_timeout_seconds": 7})
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:2")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "3")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    cli._join_processes(parse())
    assert calls.pop() == (("h:2", 3, 0), {})
