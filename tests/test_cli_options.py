"""The `nsm` command refuses what it would otherwise ignore or misread, and says so naming the
option; its help and docs/cli.md say what the parser does. Nothing here trains or downloads:
the functions that would are replaced by stubs that record their arguments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nsm.studies.reproduce
import nsm.training.loop
from nsm.cli import build_parser, main
from nsm.training.config import PROTOCOLS, TrainConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def trained(monkeypatch):
    """Replace run_table and fit by stubs; the list holds what they were called with."""
    calls = []

    def run_table(table, **kwargs):
        calls.append(kwargs)
        return []

    def fit(config, **kwargs):
        calls.append(config)
        return {"samples": 1, "final_test_error": 0.1, "epochs": 1, "wall_seconds": 0.0, "run_dir": "stub"}

    monkeypatch.setattr(nsm.studies.reproduce, "run_table", run_table)
    monkeypatch.setattr(nsm.training.loop, "fit", fit)
    return calls


def _fails(args, capsys, *named):
    assert main([str(a) for a in args]) == 2
    out, err = capsys.readouterr()
    for text in named:
        assert text in err, err
    return out, err


def test_an_empty_or_repeated_model_or_dataset_list_is_refused(tmp_path, trained, capsys):
    # `--models ""` (an empty shell variable) selected the whole table: 16 models of training
    base = ["reproduce", "mnist", "--out", tmp_path]
    for option, value, said in (
        ("--models", "", "--models names nothing"),
        ("--models", ",", "--models names nothing"),
        ("--datasets", " , ", "--datasets names nothing"),
        ("--models", "bnsm,bnsm", "--models names bnsm more than once"),
        ("--datasets", "mnist,mnist", "--datasets names mnist more than once"),
    ):
        for mode in ([], ["--status"], ["--table-only"]):
            _fails([*base, option, value, *mode], capsys, said)
    assert trained == [] and list(tmp_path.iterdir()) == []
    # what is asked for, each once, still reaches the table
    assert main([*map(str, base), "--models", " bnsm, dcnn ,", "--datasets", "mnist"]) == 0
    assert (trained[0]["models"], trained[0]["datasets"]) == (["bnsm", "dcnn"], ["mnist"])


def test_reproduce_without_a_table_says_what_is_missing(capsys):
    out, err = _fails(["reproduce"], capsys, "nsm reproduce: error: name the table to reproduce: one of ", "mnist,")
    assert out == ""
    assert main(["reproduce", "--list"]) == 0 and "mnist:" in capsys.readouterr().out


def test_seed_list_and_worker_errors_name_the_option(tmp_path, trained, capsys):
    base = ["reproduce", "mnist", "--models", "bnsm", "--out", tmp_path]
    for value in ("", ",", "0,0", "-1"):
        _fails([*base, f"--seed-list={value}"], capsys, "--seed-list must name distinct non-negative ints")
    for value in ("0/2", "3/2", "1/0", "1-2"):
        _fails([*base, "--worker", value], capsys, "--worker must read K/N with 1 <= K <= N")
    assert trained == []
    assert main([*map(str, base), "--seed-list", "3,1", "--worker", "2/2"]) == 0
    assert trained[0]["seeds"] == [3, 1] and trained[0]["worker"] == (2, 2)


def test_steal_after_is_checked_whatever_the_mode(tmp_path, trained, capsys):
    base = ["reproduce", "mnist", "--models", "bnsm", "--out", tmp_path]
    for value in ("-1", "nan", "30"):
        for mode in ([], ["--status"]):
            out, _ = _fails([*base, f"--steal-after={value}", *mode], capsys, "--steal-after must be >= 60 seconds")
            assert out == ""
    assert trained == []
    assert main([*map(str, base), "--steal-after", "600", "--status"]) == 0


def test_status_prints_nothing_before_a_refused_request(tmp_path, capsys):
    out, _ = _fails(["reproduce", "mnist", "--models", "resnet", "--status", "--out", tmp_path], capsys, "resnet")
    assert out == ""  # the header came first, as if the status were about to follow
    args = ["reproduce", "mnist", "--models", "bnsm", "--epochs", "0", "--status", "--out", tmp_path]
    out, _ = _fails(args, capsys, "'epochs' must be >= 1")
    assert out == ""


def test_no_compile_with_another_compile_is_refused(tmp_path, trained, capsys):
    for command in (["train", "--out", tmp_path], ["reproduce", "mnist", "--models", "bnsm", "--out", tmp_path]):
        for order in (["--no-compile", "--compile", "on"], ["--compile", "auto", "--no-compile"]):
            _fails([*command, *order], capsys, "--no-compile means --compile off")
        assert trained == []
    assert main(["train", "--out", str(tmp_path), "--no-compile"]) == 0
    assert main(["train", "--out", str(tmp_path), "--compile", "off", "--no-compile"]) == 0
    assert main(["reproduce", "mnist", "--models", "bnsm", "--out", str(tmp_path), "--no-compile"]) == 0
    assert [trained[0].compile, trained[1].compile, trained[2]["overrides"]["compile"]] == ["off"] * 3


def test_an_option_of_the_schedule_the_run_does_not_use_is_refused(tmp_path, trained, capsys):
    base = ["train", "--out", tmp_path]
    _fails([*base, "--lr-schedule", "linear", "--lr-step", "10"], capsys, "--lr-step belongs to the step schedule")
    _fails([*base, "--lr-decay-start", "5"], capsys, "--lr-decay-start belongs to the linear schedule", "mnist's")
    _fails([*base, "--dataset", "cifar10", "--lr-step", "10"], capsys, "the run's is linear (cifar10's protocol)")
    assert trained == []
    assert main([*map(str, base), "--lr-schedule", "linear", "--lr-decay-start", "5", "--epochs", "10"]) == 0
    assert main([*map(str, base), "--dataset", "dvs-gesture", "--lr-step", "10"]) == 0
    assert [(c.lr_schedule, c.lr_decay_start, c.lr_step) for c in trained] == [("linear", 5, 50), ("step", 100, 10)]


def test_record_draws_without_compare_grad_is_refused_even_at_its_default(tmp_path, trained, capsys):
    """TrainConfig can only refuse a value other than the default (4); the command knows what
    was given: --record-draws 4 alone was accepted and did nothing."""
    base = ["train", "--out", tmp_path, "--record"]
    for draws in ("4", "8"):
        _fails(
            [*base, "--record-draws", draws], capsys, "--record-draws sets the passes per gradient of --compare-grad"
        )
    assert trained == []
    assert main([*map(str, base), "--record-draws", "4", "--compare-grad", "sigmoid"]) == 0
    assert [(c.record_draws, c.record_compare) for c in trained] == [(4, ["sigmoid"])]


def test_fetch_refuses_a_split_for_a_dataset_without_splits(tmp_path, monkeypatch, capsys):
    import nsm.data
    import nsm.data.emnist

    fetched = []
    monkeypatch.setattr(nsm.data, "fetch_mnist", lambda d: fetched.append(("mnist", d)) or tmp_path)
    monkeypatch.setattr(nsm.data.emnist, "fetch_emnist", lambda d, s: fetched.append(("emnist", s)) or tmp_path)
    _fails(["fetch", "mnist", "--split", "digits", "--data-dir", tmp_path], capsys, "--split chooses an EMNIST split")
    assert fetched == []
    for args in (["emnist"], ["emnist", "--split", "digits"], ["mnist"]):
        assert main(["fetch", *args, "--data-dir", str(tmp_path)]) == 0
    assert fetched == [("emnist", "letters"), ("emnist", "digits"), ("mnist", str(tmp_path))]


def _commands() -> dict:
    """The sub-parsers of `nsm`, by command."""
    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices


def _help(command: str) -> str:
    return " ".join(_commands()[command].format_help().split())  # one line: argparse wraps


def _option_help(command: str, flag: str) -> str:
    (action,) = [a for a in _commands()[command]._actions if flag in a.option_strings]
    return action.help


def test_help_gives_no_fixed_default_where_the_dataset_protocol_sets_it():
    # `nsm train --help` said "default 100" for --samples, which is 101 on CIFAR and DVS Gesture
    defaults = TrainConfig().to_dict()
    varying = {f for protocol in PROTOCOLS.values() for f, v in protocol.items() if v != defaults[f]}
    for command in ("train", "reproduce"):
        for action in _commands()[command]._actions:
            if action.dest in varying and action.option_strings:
                assert "the dataset's protocol" in action.help, (command, action.option_strings)
    for dataset, protocol in PROTOCOLS.items():
        if "samples" in protocol:
            assert str(protocol["samples"]) in _option_help("train", "--samples"), dataset
    assert "MNIST: 3e-4; CIFAR: 1e-3" in _option_help("train", "--lr")
    assert "MNIST: 50; DVS Gesture: 100" in _option_help("train", "--lr-step")
    TrainConfig(device="mps")  # the configuration takes it, so the help names it
    assert "mps" in _option_help("train", "--device")


def test_the_reproduce_help_says_the_last_5_are_at_the_full_s():
    assert "last 5 evaluations at the full S" in _help("reproduce")


def _synopsis() -> dict[str, str]:
    """docs/cli.md's opening code block, by command (a command's continuation lines joined)."""
    text = (ROOT / "docs" / "cli.md").read_text()
    block = re.search(r"```\n(.*?)```", text, re.S).group(1)
    by_command: dict[str, str] = {}
    command = None
    for line in block.splitlines():
        if line.startswith("nsm "):
            command = line.split()[1]
        by_command[command] = by_command.get(command, "") + " " + line
    return by_command


def test_the_synopsis_of_docs_cli_names_every_option():
    synopsis, commands = _synopsis(), _commands()
    assert set(synopsis) == set(commands)
    for command, parser in commands.items():
        named = set(re.findall(r"--[\w-]+", synopsis[command]))
        options = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        assert options <= named, f"nsm {command}: docs/cli.md's synopsis lacks {sorted(options - named)}"
        assert named <= options, f"nsm {command}: docs/cli.md's synopsis names {sorted(named - options)}"
    # `--threads 1` read as the default of nsm online, which is torch's choice
    (threads,) = [a for a in commands["online"]._actions if "--threads" in a.option_strings]
    assert threads.default is None and "--threads 1" not in synopsis["online"]


def test_evaluate_names_a_bad_angles_list_before_any_work(tmp_path, monkeypatch, capsys):
    import nsm.studies.evaluate

    called = []
    monkeypatch.setattr(nsm.studies.evaluate, "evaluate_runs", lambda *a, **k: called.append(k) or {})
    for value in ("0,x", "15;30", "ninety"):
        _fails(["evaluate", tmp_path, "--out", tmp_path / "ev", "--angles", value], capsys, "--angles", repr(value))
    assert called == [] and list(tmp_path.iterdir()) == []
    # a good list reaches evaluate_runs as numbers, empty items dropped
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "ev"), "--angles", "0, 45,,90"]) == 0
    assert called[0]["angles"] == [0.0, 45.0, 90.0]


def test_online_hands_its_options_to_run_online(tmp_path, monkeypatch, capsys):
    import nsm.studies.online

    calls = []
    monkeypatch.setattr(
        nsm.studies.online, "run_online", lambda models, dataset, **k: calls.append((models, dataset, k))
    )
    args = ["online", " bnsm, dcnn ,", "--examples", "123", "--eval-at", "0,50", "--out", tmp_path]
    assert main([*map(str, args), "--samples", "3", "--seed", "7", "--threads", "1", "--no-progress"]) == 0
    ((models, dataset, k),) = calls
    assert models == ["bnsm", "dcnn"] and dataset == "mnist"
    assert (k["examples"], k["eval_at"], k["samples"], k["seed"], k["threads"]) == (123, [0, 50], 3, 7, 1)
    assert k["out"] == str(tmp_path) and k["progress"] is False
