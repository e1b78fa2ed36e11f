"""How much the LRN normalises in a net (alexnet.studies.lrn_terms)."""

import json

import numpy as np
import pytest
import torch

from alexnet import create_model
from alexnet.model.lrn import local_response_norm, window_sum
from alexnet.runtime.errors import UsageError
from alexnet.studies import lrn_terms
from conftest import prepare_store


def test_the_window_sums_each_maps_neighbours_within_its_group():
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    got = window_sum(x.square(), size=5, groups=2)
    for c in range(8):
        group = range(4 * (c // 4), 4 * (c // 4) + 4)
        near = [j for j in group if abs(j - c) <= 2]
        assert torch.allclose(got[:, c], sum(x[:, j].square() for j in near))
    k, alpha, beta = 2.0, 1e-4 / 5, 0.75
    formula = x * (k + alpha * got).pow(-beta)
    assert torch.allclose(local_response_norm(x, 5, alpha, beta, k, groups=2), formula)


def _paper_net(**options):
    torch.manual_seed(0)
    return create_model("paper", num_classes=4, **options).eval()


def test_the_terms_are_those_of_the_lrn_inputs_and_the_other_alpha_is_n_times():
    net = _paper_net()
    inputs = {}
    net.features.norm1.register_forward_hook(lambda m, i, o: inputs.setdefault("x", i[0]))
    batch = torch.randn(2, 3, 224, 224) * 60
    result = lrn_terms.lrn_terms(net, [batch], alpha_over_n=True)
    assert list(result) == ["features.norm1", "features.norm2"]
    r = result["features.norm1"]
    m = net.features.norm1
    s_over_k = m.alpha / m.k * window_sum(inputs["x"].square(), m.size, m.groups)
    assert r["as_built"]["s_over_k"]["max"] == pytest.approx(float(s_over_k.max()), rel=1e-5)
    assert r["as_built"]["factor_min"] == pytest.approx(
        float((1 + s_over_k.max()) ** -m.beta), rel=1e-5
    )
    assert r["other_alpha"] == pytest.approx(m.alpha * 5)
    assert r["other"]["s_over_k"]["max"] == pytest.approx(5 * r["as_built"]["s_over_k"]["max"])
    # a larger alpha damps more units, never fewer
    assert r["other"]["share_damped"] >= r["as_built"]["share_damped"]
    assert r["other"]["factor_mean"] <= r["as_built"]["factor_mean"] <= 1.0


def test_pixels_scaled_down_by_64_shrink_conv1s_term_4096_fold():
    net = _paper_net()
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            p.data.zero_()  # without biases conv1's maps scale with the pixels exactly
    batch = torch.randn(2, 3, 224, 224) * 60
    raw = lrn_terms.lrn_terms(net, [batch], True)["features.norm1"]["as_built"]
    small = lrn_terms.lrn_terms(net, [batch / 64], True)["features.norm1"]["as_built"]
    for q in ("q0.5", "q0.99", "max"):
        assert small["s_over_k"][q] * 4096 == pytest.approx(raw["s_over_k"][q], rel=1e-3)
    assert small["share_damped"] < raw["share_damped"]


def test_a_net_without_lrn_is_refused():
    with pytest.raises(UsageError, match="no LRN"):
        lrn_terms.lrn_terms(_paper_net(lrn=False), [torch.zeros(1, 3, 224, 224)], True)


def test_the_command_on_a_checkpoint_and_a_store(image_folder, tmp_path, capsys):
    from alexnet.weights.checkpoint import Checkpoint, save_atomic

    store = tmp_path / "store"
    prepare_store(image_folder, store)
    net = _paper_net(lrn_alpha_over_n=False)
    ckpt = Checkpoint(
        model=net.state_dict(),
        variant="paper",
        classes=[{"index": i, "id": str(i), "name": str(i)} for i in range(4)],
        normalization={"kind": "mean-image", "mean": torch.zeros(256, 256, 3), "scale": 1.0},
        model_options={"lrn": True, "lrn_alpha_over_n": False},
    )
    save_atomic(ckpt.to_dict(), tmp_path / "net.pt")
    args = [str(tmp_path / "net.pt"), "--data", str(store), "--split", "train", "--images", "3"]
    assert lrn_terms.main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    norm1 = result["features.norm1"]
    assert norm1["alpha"] == pytest.approx(1e-4) and norm1["other_alpha"] == pytest.approx(2e-5)
    assert 0.0 <= norm1["as_built"]["share_damped"] <= 1.0
    assert lrn_terms.main(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| LRN |") and len(table) == 2 + 4
    assert lrn_terms.main([str(tmp_path / "net.pt"), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lrn_terms: error:") and "\n" not in err


def test_the_images_are_a_seeded_draw(image_folder, tmp_path):
    store = tmp_path / "store"
    prepare_store(image_folder, store)

    class Identity:
        def transforms(self):
            return lambda image: torch.from_numpy(np.array(image)).float()

    def drawn(seed):
        return torch.cat(list(lrn_terms.store_batches(Identity(), store, "train", 3, seed, 2)))

    assert torch.equal(drawn(0), drawn(0))
    with pytest.raises(UsageError):
        list(lrn_terms.store_batches(Identity(), store, "train", 0, 0, 2))
