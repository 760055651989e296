"""The plain nets fit any input the data describes, with sizes derived from it, and ignore padding."""

from __future__ import annotations

import itertools

import pytest
import torch

from experiments.core.errors import UserError
from experiments.models.nets import build_net
from experiments.models.nets.cnn import CNN
from experiments.models.nets.rnn import CELLS
from experiments.models.optim import build_optimizer, build_scheduler

IMAGE_SPECS = {
    "digits": {"kind": "image", "shape": [1, 8, 8], "num_classes": 10},
    "mnist": {"kind": "image", "shape": [1, 28, 28], "num_classes": 10},
    "cifar10": {"kind": "image", "shape": [3, 32, 32], "num_classes": 10},
}
NETS = {name: f"experiments.models.nets.{name.upper()}" for name in ("mlp", "cnn", "rnn")}
NETS["speedrun"] = "experiments.models.nets.SpeedrunNet"
TEXT_SPEC = {"kind": "text", "vocab_size": 50, "pad_index": 0, "seq_len": 12, "num_classes": 2}
SPECS = {**IMAGE_SPECS, "text": TEXT_SPEC}


def randomized(net: torch.nn.Module) -> torch.nn.Module:
    """Random values in every parameter (the bag's table starts at zero, which would hide differences)."""
    with torch.no_grad():
        for param in net.parameters():
            param.normal_()
    return net


def example_batch(spec: dict, batch: int = 4) -> torch.Tensor:
    if spec["kind"] == "image":
        return torch.randn(batch, *spec["shape"])
    tokens = torch.randint(1, spec["vocab_size"], (batch, spec["seq_len"]))
    tokens[0, 5:] = spec["pad_index"]  # one short review, padded on the right
    return tokens


# Every net on every input, except the CIFAR-10 speedrun net on text: it refuses it (tests/test_speedrun.py).
@pytest.mark.parametrize(
    ("net_name", "spec_name"),
    [(net, spec) for net in NETS for spec in SPECS if (net, spec) != ("speedrun", "text")],
)
def test_every_net_fits_every_input(net_name, spec_name):
    spec = SPECS[spec_name]
    net = build_net({"_target_": NETS[net_name]}, spec)
    logits = net(example_batch(spec))
    assert logits.shape == (4, spec["num_classes"])
    logits.sum().backward()  # and gradients reach every parameter
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_cnn_head_width_is_derived_from_the_image():
    # Three poolings of 28x28 leave 3x3 (not the 4x4 a hand-written head assumes).
    net = CNN(IMAGE_SPECS["mnist"], channels=[8, 16, 32])
    assert net.head[-1].in_features == 32 * 3 * 3
    # More stages than an 8x8 image can halve: the later stages keep their 1x1 map.
    net = CNN(IMAGE_SPECS["digits"], channels=[4, 4, 4, 4, 4])
    assert net.head[-1].in_features == 4
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    "config",
    [
        {"_target_": "experiments.models.nets.RNN"},
        {"_target_": "experiments.models.nets.RNN", "cell": "lstm"},
        {"_target_": "experiments.models.nets.MLP"},
        {"_target_": "experiments.models.nets.MLP", "ngrams": 3, "ngram_buckets": 97},
        {"_target_": "experiments.models.nets.MLP", "ngrams": 2, "ngram_buckets": 97, "binary": True},
    ],
)
def test_padding_does_not_change_text_predictions(config):
    spec = {**TEXT_SPEC, "seq_len": 20}
    net = randomized(build_net(config, spec).eval())
    tokens = torch.randint(1, spec["vocab_size"], (3, 6))
    padded = torch.cat([tokens, torch.zeros(3, 14, dtype=torch.long)], dim=1)
    torch.testing.assert_close(net(tokens), net(padded))


def test_weight_decay_spares_biases_and_norms():
    net = build_net({"_target_": "experiments.models.nets.CNN"}, IMAGE_SPECS["digits"])
    optimizer = build_optimizer(net, {"_target_": "experiments.models.optim.AdamW", "lr": 0.1, "weight_decay": 0.05})
    decayed, *spared = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and all(p.ndim > 1 for p in decayed["params"])
    assert all(group["weight_decay"] == 0.0 and all(p.ndim == 1 for p in group["params"]) for group in spared)
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(net.parameters()))


@pytest.mark.parametrize(
    "config",
    [
        {"_target_": "experiments.models.optim.AdamW", "betas": [0.9, 0.99]},
        {"_target_": "experiments.models.optim.Adam"},
        {"_target_": "torch.optim.SGD", "momentum": 0.9, "nesterov": True},
        {"_target_": "torch.optim.RAdam", "_partial_": True},  # as checkpoints written before this carry it
        {"_target_": "torch.optim.Adagrad"},  # any torch optimiser, fused kernels or not
    ],
    ids=lambda config: config["_target_"],
)
def test_each_optimizer_takes_a_step(config):
    net = build_net({"_target_": "experiments.models.nets.MLP", "width": 8}, IMAGE_SPECS["digits"])
    optimizer = build_optimizer(net, {**config, "lr": 0.1, "weight_decay": 0.01})
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0]
    before = [p.detach().clone() for p in net.parameters()]
    net(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def learning_rates(scheduler_config: dict, steps: int = 100) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler(optimizer, scheduler_config, total_steps=steps)
    scheduler = schedule["scheduler"] if schedule is not None else None
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_cosine_warms_up_then_decays_to_zero():
    rates = learning_rates({"_target_": "experiments.models.optim.warmup_cosine", "warmup_fraction": 0.1})
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[-1] < 0.001
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_onecycle_peaks_at_the_configured_rate_and_constant_stays():
    rates = learning_rates({"_target_": "experiments.models.optim.one_cycle", "pct_start": 0.25})
    assert max(rates) == pytest.approx(1.0, rel=0.02) and rates[0] < 0.1 and rates[-1] < 0.01
    assert set(learning_rates({})) == {1.0}


def test_onecycle_linear_from_start_to_end_fraction_keeps_the_momentum():
    config = {
        "_target_": "experiments.models.optim.one_cycle",
        "pct_start": 0.25,
        "anneal": "linear",
        "start_fraction": 0.2,
        "end_fraction": 0.07,
    }
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0, momentum=0.85)
    scheduler = build_scheduler(optimizer, {**config, "cycle_momentum": False}, total_steps=100)["scheduler"]
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        assert optimizer.param_groups[0]["momentum"] == 0.85
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.4) and rates[-1] == pytest.approx(0.14) and max(rates) == pytest.approx(2.0)
    up, down = rates[: rates.index(max(rates)) + 1], rates[rates.index(max(rates)) :]
    assert all(b - a == pytest.approx(up[1] - up[0]) for a, b in itertools.pairwise(up))  # straight lines
    assert all(b - a == pytest.approx(down[1] - down[0]) for a, b in itertools.pairwise(down))


def test_norm_lr_scale_speeds_up_normalisation_layers_only():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.LayerNorm([4, 2]), torch.nn.Linear(2, 2)
    )
    optimizer = build_optimizer(
        net, {"_target_": "torch.optim.SGD", "lr": 0.5, "weight_decay": 0.1, "norm_lr_scale": 64}
    )
    lr = {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
    assert lr[id(net[1].weight)] == lr[id(net[1].bias)] == (32.0, 0.0)
    assert lr[id(net[2].weight)] == lr[id(net[2].bias)] == (32.0, 0.0)  # 2-D, and a norm's all the same
    assert lr[id(net[0].weight)] == lr[id(net[3].weight)] == (0.5, 0.1)
    assert lr[id(net[0].bias)] == (0.5, 0.0)
    assert len(lr) == len(list(net.parameters()))
    plain = build_optimizer(net, {"_target_": "torch.optim.SGD", "lr": 0.5, "weight_decay": 0.1})
    assert len(plain.param_groups) == 2  # without the scale: the two groups earlier checkpoints hold


def test_binary_bag_counts_each_token_once():
    spec = {**TEXT_SPEC, "seq_len": 8}
    net = randomized(build_net({"_target_": "experiments.models.nets.MLP", "binary": True, "depth": 0}, spec).eval())
    once, thrice = torch.tensor([[3, 4, 0, 0]]), torch.tensor([[3, 4, 4, 4]])
    torch.testing.assert_close(net(once), net(thrice))
    counting = build_net({"_target_": "experiments.models.nets.MLP", "depth": 0}, spec).eval()
    counting.load_state_dict(net.state_dict())  # the same weights, without `binary`
    assert not torch.allclose(counting(once), counting(thrice))


def test_l2_pooling_is_the_mean_times_the_square_root_of_the_count():
    spec = {**TEXT_SPEC, "seq_len": 8}
    mean = randomized(
        build_net({"_target_": "experiments.models.nets.MLP", "depth": 0, "embedding_dim": 3}, spec).encode
    )
    l2 = build_net(
        {"_target_": "experiments.models.nets.MLP", "depth": 0, "embedding_dim": 3, "pooling": "l2"}, spec
    ).encode
    l2.load_state_dict(mean.state_dict())
    tokens = torch.tensor([[3, 4, 5, 6, 0, 0, 0, 0]])  # four real tokens
    torch.testing.assert_close(l2(tokens), mean(tokens) * 2)


def test_naive_bayes_weights_are_smoothed_log_count_ratios():
    spec = {**TEXT_SPEC, "seq_len": 4}
    net = build_net({"_target_": "experiments.models.nets.MLP", "depth": 0, "naive_bayes": True, "binary": True}, spec)
    tokens = torch.tensor([[3, 5, 0, 0], [3, 3, 5, 0], [4, 5, 0, 0]])  # 3 twice in one review: binary counts it once
    labels = torch.tensor([1, 1, 0])
    net.fit_to_training_data(tokens, labels)
    weights = net.encode.feature_weights
    rows = spec["vocab_size"]
    positive = torch.ones(rows).index_add_(0, torch.tensor([3, 5, 3, 5]), torch.ones(4))
    negative = torch.ones(rows).index_add_(0, torch.tensor([4, 5]), torch.ones(2))
    expected = ((positive / positive.sum()) / (negative / negative.sum())).log()
    torch.testing.assert_close(weights, expected)
    assert weights[3] > 0 > weights[4]
    reloaded = build_net(
        {"_target_": "experiments.models.nets.MLP", "depth": 0, "naive_bayes": True, "binary": True}, spec
    )
    reloaded.load_state_dict(net.state_dict())  # the weights travel with the checkpoint
    torch.testing.assert_close(reloaded.encode.feature_weights, weights)


@pytest.mark.parametrize("spec", ["text", "mnist"])
def test_an_mlp_without_naive_bayes_asks_for_no_training_data(spec):
    # None tells the classifier not to ask the data for its whole training split, which streamed data lacks.
    assert build_net({"_target_": NETS["mlp"]}, SPECS[spec]).fit_to_training_data is None
    with_weights = build_net({"_target_": NETS["mlp"], "naive_bayes": True}, SPECS[spec])
    assert (with_weights.fit_to_training_data is None) == (spec != "text")


@pytest.mark.parametrize("name", ["AdamW", "Adam"])
def test_sparse_table_rows_get_torchs_sparse_adam_update(name):
    # Seeded: SparseAdam adds eps before the bias correction, we add it after (as torch's dense Adam
    # does), so rows with a gradient near eps differ by more than the tolerance; some random draws have one.
    torch.manual_seed(0)
    spec = {**TEXT_SPEC, "seq_len": 6}
    config = {
        "_target_": "experiments.models.nets.MLP",
        "depth": 0,
        "embedding_dim": 4,
        "ngrams": 2,
        "ngram_buckets": 31,
        "sparse": True,
    }
    net = randomized(build_net(config, spec))
    table = net.encode.bag.weight
    reference = torch.nn.Parameter(table.detach().clone())
    optimizer = build_optimizer(net, {"_target_": f"experiments.models.optim.{name}", "lr": 0.01, "weight_decay": 0.1})
    reference_optimizer = torch.optim.SparseAdam([reference], lr=0.01)
    head_before = net.layers[0].weight.detach().clone()
    for _ in range(3):
        tokens = example_batch(spec)
        optimizer.zero_grad()
        net(tokens).square().sum().backward()
        assert table.grad.is_sparse
        reference.grad = table.grad.clone()
        optimizer.step()
        reference_optimizer.step()
        torch.testing.assert_close(table.detach(), reference.detach())
    assert not torch.equal(net.layers[0].weight, head_before)  # the dense head got its own update


def test_sgd_takes_sparse_table_gradients():
    config = {"_target_": "experiments.models.nets.MLP", "depth": 0, "sparse": True}
    net = randomized(build_net(config, TEXT_SPEC))
    optimizer = build_optimizer(net, {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})
    before = net.encode.bag.weight.detach().clone()
    net(example_batch(TEXT_SPEC)).sum().backward()
    optimizer.step()
    assert not torch.equal(before, net.encode.bag.weight)


@pytest.mark.parametrize(("cell", "num_layers"), [("gru", 1), ("gru", 2), ("lstm", 1)])
def test_rnn_reads_padded_rows_exactly_as_packed_sequences(cell, num_layers):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    spec = {**TEXT_SPEC, "seq_len": 9}
    last = build_net(
        {"_target_": "experiments.models.nets.RNN", "cell": cell, "num_layers": num_layers, "hidden_size": 6}, spec
    ).eval()
    maximum = build_net(
        {
            "_target_": "experiments.models.nets.RNN",
            "cell": cell,
            "num_layers": num_layers,
            "hidden_size": 6,
            "pooling": "max",
        },
        spec,
    )
    maximum.eval().load_state_dict(last.state_dict())
    # The reference: torch's own bidirectional cell over packed sequences, with the same weights.
    reference = CELLS[cell](64, 6, num_layers=num_layers, bidirectional=True, batch_first=True)
    for layer, (forward, backward) in enumerate(last.layers):
        for name, value in forward.named_parameters():
            getattr(reference, name.replace("_l0", f"_l{layer}")).data.copy_(value)
        for name, value in backward.named_parameters():
            getattr(reference, name.replace("_l0", f"_l{layer}") + "_reverse").data.copy_(value)
    tokens = torch.randint(1, spec["vocab_size"], (3, 9))
    tokens[0, 4:] = 0
    tokens[2, 7:] = 0
    lengths = torch.tensor([4, 9, 7])
    packed = pack_padded_sequence(last.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
    outputs, hidden = reference(packed)
    hidden = hidden[0] if cell == "lstm" else hidden
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, padding_value=float("-inf"))
    with torch.no_grad():
        torch.testing.assert_close(last(tokens), last.head(torch.cat([hidden[-2], hidden[-1]], dim=1)))
        torch.testing.assert_close(maximum(tokens), maximum.head(outputs.amax(dim=1)))


def test_each_net_checks_its_own_arguments_in_one_line():
    rnn = {"_target_": "experiments.models.nets.RNN"}
    build_net({**rnn, "pooling": "max"}, TEXT_SPEC)
    with pytest.raises(UserError, match=r"^model.pooling='l2' is not allowed: it must be one of last, max$"):
        build_net({**rnn, "pooling": "l2"}, TEXT_SPEC)
    mlp = {"_target_": "experiments.models.nets.MLP", "ngrams": 2}
    with pytest.raises(UserError, match=r"^model.ngrams=2 needs hash buckets for the n-grams: set model.ngram_b"):
        build_net(mlp, TEXT_SPEC)
    from omegaconf import OmegaConf

    cnn = OmegaConf.create({"_target_": "experiments.models.nets.CNN", "channels": [4, 8]})
    assert type(build_net(dict(cnn), TEXT_SPEC)).__name__ == "CNN"  # a config's own lists pass the checks too


def test_text_cnn_reads_the_max_and_mean_of_real_positions_only():
    spec = {**TEXT_SPEC, "seq_len": 8}
    net = randomized(
        build_net(
            {"_target_": "experiments.models.nets.CNN", "channels": [4], "batch_norm": False, "dropout": 0.0}, spec
        )
    ).eval()
    captured = {}
    net.head.register_forward_hook(lambda module, inputs, output: captured.update(pooled=inputs[0]))
    tokens = torch.tensor([[5, 6, 7, 8, 0, 0, 0, 0], [0] * 8])
    assert torch.isfinite(net(tokens)).all()  # an empty review too
    features = net.features(net.embed(tokens[:1]).transpose(1, 2))  # 4 positions after one halving
    strongest, average = captured["pooled"][0].split(4)
    # The features are recomputed for the first review alone, whose convolution may round differently from
    # the batch's (and the mean is a masked sum there): float32 rounding of values of a few units.
    close = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(strongest, features[0, :, :2].amax(dim=1), **close)  # tokens 1-4: positions 0-1
    torch.testing.assert_close(average, features[0, :, :2].mean(dim=1), **close)
