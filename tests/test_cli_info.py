import json

from alexnet.cli import main
from conftest import run_here


def test_info_text(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "96x55x55" in out and "60,965,224" in out


def test_info_json(capsys):
    assert main(["info", "--variant", "torchvision", "--input-size", "227", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "torchvision" and info["params"] == 61_100_840
    assert info["macs"] > 0
    assert all("name" in r and "output_shape" in r for r in info["layers"])


def test_bad_variant_one_line_exit_2():
    r = run_here("info", "--variant", "resnet")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "invalid choice" in r.stderr
    assert "Traceback" not in r.stderr


def test_too_small_input_one_line_exit_2():
    r = run_here("info", "--input-size", "32")
    assert r.returncode == 2 and "too small" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_version():
    r = run_here("--version")
    assert r.returncode == 0 and r.stdout.startswith("alexnet ")
