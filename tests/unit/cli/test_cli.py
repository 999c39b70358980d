"""The `lookups` command's parser, without running anything: help for every subcommand and option, and run config
from flags and a settings file (the command run for real: tests/integration/cli/test_cli.py)."""

from lookups.pipeline.cli import build_parser, run_config_from_args


def test_help_lists_the_commands():
    text = build_parser().format_help()
    for command in ("run", "summary", "ui", "paths"):
        assert command in text


def test_flags_become_run_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("ops:\n  neuron_exemplars: {config: {keep: 5}}\n  prompt_set: {config: {max_documents: 10}}\n")
    args = build_parser().parse_args(["run", "--config", str(config), "--model", "gpt2", "--max-documents", "0", "--neurons-per-layer", "3"])
    ops = run_config_from_args(args)["ops"]
    assert ops["model"]["config"]["name"] == "gpt2"
    assert ops["prompt_set"]["config"]["max_documents"] is None  # 0 means all
    assert ops["neuron_catalog"]["config"]["neurons_per_layer"] == 3
    assert ops["neuron_exemplars"]["config"]["keep"] == 5


def test_every_subcommand_has_complete_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {"run", "summary", "query", "ui", "worker", "keys", "paths", "views-sql", "verify"}
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            if action.dest != "help":
                assert action.help, f"`lookups {name}` option {action.option_strings or action.dest} has no help"
