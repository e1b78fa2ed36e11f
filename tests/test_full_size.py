"""The time-to-accuracy record (alexnet.studies.full_size) of a run directory."""

import json

from alexnet.studies import full_size
from conftest import prepare_store

LSCPU = """Architecture:            x86_64
CPU(s):                  2
Model name:              AMD EPYC
CPU family:              25
Model:                   17
Flags:                   fpu sse avx2 avx512f avx512_bf16 sha_ni
"""


def fake_run(root, store, epochs):
    """A run directory as train writes it: config, environment, metrics (with a partial
    epoch line, which the record skips)."""
    root.mkdir()
    (root / "config.json").write_text(
        json.dumps(
            {
                "data": str(store),
                "recipe": "fast",
                "variant": "paper",
                "seed": 0,
                "dropout": 0.5,
                "schedule": "plateau",
                "patience": 1,
                "milestones": None,
            }
        )
    )
    (root / "environment.json").write_text(json.dumps({"precision": "bf16", "torch": "2"}))
    lines = [
        {
            "epoch": i + 1,
            "train_loss": 1.0 / (i + 1),
            "val_top1_error": err,
            "val_top5_error": err / 10,
            "epoch_seconds": 100.0,
            "val_seconds": 20.0,
            "time": 1000.0 + 500 * i,
        }
        for i, err in enumerate(epochs)
    ]
    lines.append({"epoch": len(epochs) + 1, "partial": True, "train_loss": 0.1})
    (root / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def test_the_record_of_a_run(image_folder, tmp_path):
    store = tmp_path / "store"
    prepare_store(image_folder, store)
    run = fake_run(tmp_path / "fast-s0", store, [0.2, 0.11, 0.095, 0.08])
    ten = {"top1_error": 0.07, "top5_error": 0.001, "checkpoint": "last.pt"}
    out, fig = tmp_path / "record.json", tmp_path / "record.png"
    args = [str(run), "--command", "alexnet train ...", "--commit", "abc1234"]
    lscpu = tmp_path / "lscpu.txt"
    lscpu.write_text(LSCPU)
    (tmp_path / "ten.json").write_text(json.dumps(ten))
    more = ["--lscpu", str(lscpu), "--ten-crop", str(tmp_path / "ten.json")]
    assert full_size.main([*args, *more, "--out", str(out), "--figure", str(fig)]) == 0
    (r,) = json.loads(out.read_text())["runs"]
    assert r["commit"] == "abc1234" and r["precision"] == "bf16" and r["recipe"] == "fast"
    assert r["switches"] == {"dropout": 0.5, "variant": "paper"}  # those its config holds
    assert r["schedule"] == {"schedule": "plateau", "patience": 1}  # how its rate moved
    assert r["cpu"] == {
        "model_name": "AMD EPYC",
        "family": "25",
        "model": "17",
        "cpus": "2",
        "flags": ["avx2", "avx512f", "avx512_bf16"],
    }
    assert r["train_images"] == 18 and r["test_images"] == 6  # the store's splits
    assert [e["epoch"] for e in r["epochs"]] == [1, 2, 3, 4]
    assert [e["test_top1_accuracy"] for e in r["epochs"]] == [0.8, 0.89, 0.905, 0.92]
    # training plus validation, summed: not the 500 s between the epochs' ends
    assert [e["hours_since_start"] for e in r["epochs"]] == [
        round(120 * k / 3600, 3) for k in (1, 2, 3, 4)
    ]
    assert r["first_reached"] == {
        "0.88": {"epoch": 2, "hours": round(240 / 3600, 3)},
        "0.90": {"epoch": 3, "hours": round(360 / 3600, 3)},
        "0.93": None,
    }
    assert r["ten_crops"]["top1_accuracy"] == 0.93
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same run again replaces its entry; another is added beside it
    assert full_size.main([*args, "--out", str(out)]) == 0
    other = fake_run(tmp_path / "seed0", store, [0.5])  # an ablate arm's directory
    more = ["--command", "c", "--commit", "d", "--name", "no-dropout-s0"]
    assert full_size.main([str(other), *more, "--out", str(out)]) == 0
    assert [r["name"] for r in json.loads(out.read_text())["runs"]] == ["fast-s0", "no-dropout-s0"]


def test_a_folder_without_epochs_is_one_line(tmp_path, capsys):
    out = tmp_path / "record.json"
    code = full_size.main([str(tmp_path), "--command", "c", "--commit", "d", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "no metrics.jsonl" in capsys.readouterr().err
