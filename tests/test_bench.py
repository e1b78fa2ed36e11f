"""`alexnet bench`: what it reports (never how fast: speed is for docs/benchmarks.md)."""

import json

from conftest import run_cli, run_here


def test_bench_train_reports_every_model_and_the_ratios():
    r = run_here(
        "bench",
        "train",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in (
        "ours_img_s",
        "naive_img_s",
        "torchvision_img_s",
        "ratio_vs_naive",
        "ours_infer_img_s",
        "no_lrn_img_s",
    ):
        assert out[key] > 0, key
    # the fp32 baselines are timed exactly when the run is in a low precision (auto: bf16
    # on a CPU with AMX); fp32 is its own baseline
    assert (out["fp32"] == {}) == (out["precision"] == "fp32")


def test_a_rate_is_images_over_the_time_of_the_timed_steps_only(monkeypatch):
    """Runner.rate against a clock that moves 0.25 s per step (and 10 s between calls,
    which must not count): 4 images a step is 16 img/s."""
    import alexnet.bench.common as common

    now = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: now[0])
    runner = common.Runner.__new__(common.Runner)
    runner.batch, runner.device = 4, __import__("torch").device("cpu")

    def step():
        now[0] += 0.25

    runner.step = step
    now[0] += 10.0
    assert runner.rate(8) == 16.0


def test_interleaved_keeps_each_models_best_pass_of_a_drifting_machine():
    """Round-robin passes on a machine whose speed drifts: each model keeps its best
    pass, whichever round it came in, and each model is timed once per round."""
    from alexnet.bench.common import interleaved

    class Fake:
        def __init__(self, rates):
            self.rates, self.calls, self.warm = list(rates), 0, False

        def step(self):
            self.warm = True

        def rate(self, steps):
            assert self.warm  # warmed up before the first timed pass
            self.calls += 1
            return self.rates.pop(0)

    fast, slow = Fake([200.0, 150.0, 100.0]), Fake([90.0, 100.0, 80.0])
    best = interleaved({"fast": fast, "slow": slow}, steps=1, rounds=3)
    assert best == {"fast": 200.0, "slow": 100.0} and fast.calls == slow.calls == 3


def test_bench_train_ratios_divide_ours_by_each_baseline(monkeypatch):
    """With the measured rates fixed, every ratio in the result is ours over its baseline."""
    import alexnet.bench.step as step

    train = {"ours": 30.0, "plain": 24.0, "naive": 10.0, "torchvision": 60.0, "no_lrn": 45.0}
    infer = {"ours": 100.0, "plain": 80.0, "naive": 40.0, "torchvision": 200.0, "no_lrn": 125.0}
    runners = []

    def fake_runner(model, plan, batch, training, *rest):
        runners.append(training)
        return training

    def rates(named, s, r):
        return {k: (train if t else infer)[k] for k, t in named.items()}

    monkeypatch.setattr(step, "interleaved", rates)
    monkeypatch.setattr(step, "Runner", fake_runner)
    out = step.bench_step("cpu", batch_size=2, steps=1, precision="fp32", rounds=1)
    assert (out.ratio_vs_naive, out.ratio_vs_torchvision, out.lrn_overhead) == (3.0, 0.5, 0.5)
    assert (out.ratio_vs_plain, out.ratio_vs_plain_infer) == (1.25, 1.25)
    assert out.lrn_overhead_infer == 0.25 and True in runners and False in runners
    assert "LRN overhead 50.0% of the no-LRN net (25.0% at inference)" in "\n".join(out.lines())


def test_bench_train_in_bf16_times_fp32_in_the_same_rounds_and_names_the_cpu():
    from alexnet.bench.step import bench_step

    # batch 1: bf16 is emulated (slow) on a CPU without bf16 units
    r = bench_step("cpu", batch_size=1, steps=1, precision="bf16", rounds=1)
    out = r.to_dict()
    assert out["precision"] == "bfloat16"
    fp32 = out["fp32"]
    for key in ("ours_fp32_img_s", "ours_fp32_infer_img_s", "no_lrn_fp32_img_s"):
        assert fp32[key] > 0, key
    assert {"cpu_model", "cpu_capability", "amx_bf16", "avx512_bf16"} <= out["cpu"].keys()
    text = "\n".join(r.lines())
    assert "ours in bfloat16 / ours in fp32" in text and "cpu: " in text


def test_bench_model_parallel_counts_the_bytes_the_towers_exchange():
    r = run_cli(
        "bench",
        "train",
        "--model-parallel",
        "2",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--precision",
        "fp32",
        "--json",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # forward, per image: rank 0 sends its pool2 (128x13x13), pool5 (128x6x6), fc6 and
    # fc7 halves (2048 each) and its 500 logits; backward all-reduces the gathered
    # conv3/fc6/fc7/fc8 inputs, whose full size a two-rank ring sends once; fp32
    forward = (128 * 13 * 13 + 128 * 6 * 6 + 2048 + 2048 + 500) * 4 * 2
    backward = (256 * 13 * 13 + 256 * 6 * 6 + 4096 + 4096) * 4 * 2
    assert out["forward_bytes_sent_per_rank"] == forward
    assert out["bytes_sent_per_rank_per_step"] == forward + backward
    assert out["model_parallel_img_s"] > 0 and out["single_img_s"] > 0
    r = run_here("bench", "train", "--model-parallel", "3")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_bench_end_to_end_times_the_store_path_against_its_bounds_and_torchvision(
    image_folder, tmp_path
):
    r = run_here("prepare", image_folder, tmp_path / "store", "--format", "jpeg", "--json")
    assert r.returncode == 0, r.stderr
    args = (
        "bench",
        "train",
        "--data",
        tmp_path / "store",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--workers",
        "1",
        "--json",
    )
    r = run_here(*args, "--source", image_folder)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["store_format"] == "jpeg" and out["decode"] == "workers"  # auto, on a CPU
    for key in ("feed_img_s", "step_img_s", "ours_img_s", "torchvision_img_s"):
        assert out[key] > 0, key
    bound = min(out["feed_img_s"], out["step_img_s"])
    assert out["bound"] == ("data" if out["feed_img_s"] < out["step_img_s"] else "compute")
    assert out["fraction_of_bound"] == round(out["ours_img_s"] / bound, 3)
    assert out["ratio_vs_torchvision"] == round(out["ours_img_s"] / out["torchvision_img_s"], 3)
    r = run_here(*args, "--decode", "device")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["decode"] == "device" and "torchvision_img_s" not in out
    r = run_here("bench", "train", "--source", image_folder)
    assert r.returncode == 2 and "--source needs --data" in r.stderr


def test_bench_data_compares_our_feed_with_torchvisions_and_counts_what_it_timed(
    image_folder, tmp_path
):
    r = run_here("prepare", image_folder, tmp_path / "store", "--json")
    assert r.returncode == 0, r.stderr
    r = run_here(
        "bench",
        "data",
        "--data",
        tmp_path / "store",
        "--source",
        image_folder,
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--batches",
        "1000",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ours_img_s"] > 0 and out["baseline_img_s"] > 0
    assert out["ratio"] == round(out["ours_img_s"] / out["baseline_img_s"], 2)
    # 1000 batches are more than a few passes over 24 images: the count is clipped,
    # and what is reported is what was timed (plus the 3 warm-up batches)
    assert 1 <= out["batches"] < 1000
    assert out["total_batches_each"] == out["batches"] + 3
