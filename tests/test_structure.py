"""The shape of the package: its import graph has no cycle, and no stage imports one
above it (scripts/import_graph.py's order: options, runtime, data, model, kernels, weights,
evaluation, results, microscope, train, studies, bench, the command line)."""

import importlib.util
from pathlib import Path


def _graph_tool():
    path = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"
    spec = importlib.util.spec_from_file_location("import_graph", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_graph_has_no_cycle_and_no_upward_edge(capsys):
    assert _graph_tool().main() == 0, capsys.readouterr().out


def test_the_tool_finds_a_cycle_and_an_upward_edge():
    tool = _graph_tool()
    graph = {"a.x": {"a.y"}, "a.y": {"a.x"}, "a.z": set()}
    assert tool.cycles(graph) == [["a.x", "a.y"]]
    assert tool.stage("alexnet.model.net") == "model" and tool.stage("alexnet.cli") == "top"
    ranks = {s: i for i, s in enumerate(tool.STAGES)}
    assert ranks["model"] < ranks["weights"] < ranks["results"] < ranks["train"]


def test_autocast_is_entered_in_one_place():
    """One helper (runtime/device.py's autocast) enters torch.autocast for every verb, so
    a change to how a precision runs is made once."""
    src = Path(__file__).resolve().parent.parent / "src" / "alexnet"
    users = sorted(
        str(p.relative_to(src)) for p in src.rglob("*.py") if "torch.autocast(" in p.read_text()
    )
    assert users == ["runtime/device.py"], users
