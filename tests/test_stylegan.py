"""eCLIPsed's generator: the StyleGAN2 network, its rosinality checkpoints, its training and FID,
and the train_stylegan stage (training on a faces folder, importing a checkpoint, bad input)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from lightning_modules.core.metrics.fid import FrechetDistance, frechet_distance, gaussian_statistics
from lightning_modules.eclipsed.diffaugment import diff_augment
from lightning_modules.eclipsed.discriminator import Discriminator
from lightning_modules.eclipsed.gan import GanConfig, StyleGAN2, noise_strengths, sample_images
from lightning_modules.eclipsed.layers import ModulatedConv2d, upfirdn2d
from lightning_modules.eclipsed.rosinality import (
    NotAGeneratorError,
    generator_from_rosinality,
    load_rosinality,
    to_rosinality,
)
from lightning_modules.eclipsed.stylegan import StyleGenerator
from lightning_modules.judges.faces import FaceAttributeClassifier
from lightning_modules.synthworld import FACE_ATTRIBUTES
from tests.conftest import edit_params, make_workspace
from tests.face_folder import write_faces_folder

SMALL = {4: 16, 8: 16, 16: 8}                   # 16 px: 6 styles
WIDER = {4: 32, 8: 16, 16: 16, 32: 8}           # 32 px: 8 styles


def generator(channels=SMALL, seed: int = 0, **kwargs) -> StyleGenerator:
    torch.manual_seed(seed)
    return StyleGenerator(channels, style_dim=kwargs.pop("style_dim", 16), n_mlp=kwargs.pop("n_mlp", 2), **kwargs)


# --- the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("channels, size, num_ws", [(SMALL, 16, 6), (WIDER, 32, 8)])
def test_shapes_num_ws_and_one_feature_map_per_style(channels, size, num_ws):
    g = generator(channels)
    assert (g.size, g.num_ws, g.w_dim, g.num_layers) == (size, num_ws, 16, num_ws - 1)
    w = g.mapping(torch.randn(3, 16))
    assert w.shape == (3, 16)
    images, features = g.synthesis(g.broadcast(w), noise="const", return_features=True)
    assert images.shape == (3, 3, size, size) and len(features) == num_ws
    # index 0: the 4x4 conv; then two convs per resolution; the last index: the final ToRGB alone
    sides = [4] + [r for r in sorted(channels) if r > 4 for _ in range(2)]
    assert [f.shape[-1] for f in features] == sides + [size]
    assert [f.shape[1] for f in features[:-1]] == [channels[s] for s in sides] and features[-1].shape[1] == 3
    assert torch.equal(features[-1], images)
    assert g(torch.randn(2, 16)).shape == (2, 3, size, size)
    with pytest.raises(ValueError, match="ws: expected"):
        g.synthesis(torch.zeros(1, num_ws + 1, 16))


def test_a_change_of_one_style_changes_only_its_layer_and_those_after_it():
    g = generator(WIDER)
    ws = g.broadcast(g.mapping(torch.randn(2, 16)))
    _, before = g.synthesis(ws, noise="const", return_features=True)
    for i in range(g.num_ws):
        changed = ws.clone()
        changed[:, i] += torch.randn(2, 16)
        _, after = g.synthesis(changed, noise="const", return_features=True)
        assert all(torch.equal(before[j], after[j]) for j in range(i)), i
        assert not torch.allclose(before[i], after[i]), i
        assert not torch.allclose(before[-1], after[-1]), i


def test_random_noise_differs_and_const_noise_repeats():
    g = generator()
    ws = g.broadcast(g.mapping(torch.randn(1, 16)))
    for layer in [g.conv1, *g.convs]:
        layer.noise.weight.data.fill_(0.5)
    assert torch.equal(g.synthesis(ws, noise="const"), g.synthesis(ws, noise="const"))
    assert not torch.equal(g.synthesis(ws), g.synthesis(ws))


def test_demodulation_keeps_unit_variance():
    """With unit-variance inputs, a demodulated conv gives unit-variance outputs whatever the
    style's scale (StyleGAN2, eq. 3); without demodulation the style's scale goes through."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(128, 64, 3, style_dim=16)
    x = torch.randn(8, 128, 24, 24)
    for scale in (0.1, 1.0, 10.0):
        style = torch.randn(8, 16) * scale
        inner = conv(x, style)[:, :, 1:-1, 1:-1]      # the border sees zero padding
        assert 0.9 < inner.std().item() < 1.1, scale
    conv.demodulate = False
    assert conv(x, torch.randn(8, 16) * 10)[:, :, 1:-1, 1:-1].std() > 2


def fused_reference(conv: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's fused form: a weight per sample (modulated, demodulated), one grouped conv."""
    batch, cin, h, w = x.shape
    weight = conv.scale * conv.weight * conv.modulation(style).view(batch, 1, cin, 1, 1)
    if conv.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, -1, 1, 1, 1)
    k = conv.kernel_size
    if conv.upsample:
        weight = weight.transpose(1, 2).reshape(batch * cin, conv.out_channels, k, k)
        out = F.conv_transpose2d(x.reshape(1, batch * cin, h, w), weight, stride=2, groups=batch)
        return conv.blur(out.view(batch, conv.out_channels, *out.shape[2:]))
    out = F.conv2d(x.reshape(1, batch * cin, h, w), weight.view(-1, cin, k, k), padding=conv.padding, groups=batch)
    return out.view(batch, conv.out_channels, h, w)


@pytest.mark.parametrize("upsample", [False, True])
def test_the_batched_modulated_conv_equals_the_fused_per_sample_form(upsample):
    torch.manual_seed(1)
    conv = ModulatedConv2d(8, 6, 3, style_dim=16, upsample=upsample)
    x, style = torch.randn(3, 8, 8, 8), torch.randn(3, 16)
    out = conv(x, style)
    assert out.shape == (3, 6, 16 if upsample else 8, 16 if upsample else 8)
    torch.testing.assert_close(out, fused_reference(conv, x, style), rtol=1e-4, atol=1e-5)


def test_upsampling_keeps_a_constant_image_constant():
    kernel = torch.tensor([[1.0, 3, 3, 1]]).t() @ torch.tensor([[1.0, 3, 3, 1]]) / 64 * 4
    out = upfirdn2d(torch.ones(1, 2, 8, 8), kernel, up=2, pad=(2, 1))
    assert out.shape == (1, 2, 16, 16)
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], torch.ones(1, 2, 12, 12))


def test_truncation_pulls_towards_the_mean_w():
    g = generator()
    g.update_latent_avg(generator=torch.Generator().manual_seed(0))
    z = torch.randn(4, 16)
    w, half = g.mapping(z), g.mapping(z, truncation=0.5)
    torch.testing.assert_close(half, g.latent_avg + 0.5 * (w - g.latent_avg))
    torch.testing.assert_close(g.mapping(z, truncation=0.0), g.latent_avg.expand(4, -1))


def test_discriminator_keys_and_minibatch_groups():
    torch.manual_seed(0)
    d = Discriminator(WIDER)
    keys = set(d.state_dict())
    assert {"convs.0.0.weight", "convs.0.1.bias", "convs.1.conv1.0.weight", "convs.1.conv2.0.kernel",
            "convs.1.conv2.1.weight", "convs.1.skip.1.weight", "final_conv.0.weight", "final_linear.0.weight",
            "final_linear.1.bias"} <= keys
    for batch in (1, 3, 4, 6):
        assert d(torch.randn(batch, 3, 32, 32)).shape == (batch, 1)


# --- rosinality checkpoints ------------------------------------------------------------------

def test_the_state_dict_round_trips_through_the_rosinality_layout(tmp_path):
    g = generator(WIDER, seed=3)
    g.update_latent_avg(generator=torch.Generator().manual_seed(0))
    checkpoint = to_rosinality(g)
    assert set(checkpoint) == {"g_ema", "latent_avg"} and "latent_avg" not in checkpoint["g_ema"]
    torch.save(checkpoint, tmp_path / "g.pt")
    state, latent_avg, config = load_rosinality(tmp_path / "g.pt")
    assert config == {"channels": {"4": 32, "8": 16, "16": 16, "32": 8}, "style_dim": 16, "n_mlp": 2}
    loaded = StyleGenerator.from_config(config)
    loaded.load_state_dict({**state, "latent_avg": latent_avg}, strict=True)
    ws = g.broadcast(g.mapping(torch.randn(2, 16), truncation=0.7))
    assert torch.equal(loaded.synthesis(ws, noise="const"), g.synthesis(ws, noise="const"))
    # safetensors, and save_pretrained / from_pretrained: the same weights
    save_file({**checkpoint["g_ema"], "latent_avg": checkpoint["latent_avg"]}, str(tmp_path / "g.safetensors"))
    again, had_average = generator_from_rosinality(tmp_path / "g.safetensors")
    g.save_pretrained(tmp_path / "model")
    reloaded = StyleGenerator.from_pretrained(tmp_path / "model")
    assert had_average and set(load_file(str(tmp_path / "model" / "model.safetensors"))) == set(g.state_dict())
    for other in (again, reloaded):
        assert torch.equal(other.synthesis(ws, noise="const"), g.synthesis(ws, noise="const"))


def test_a_bare_g_ema_without_latent_avg_gets_the_mean_of_mapped_z(tmp_path):
    g = generator(seed=4)
    torch.save(to_rosinality(g)["g_ema"], tmp_path / "bare.pth")
    loaded, had_average = generator_from_rosinality(tmp_path / "bare.pth")
    assert not had_average
    torch.testing.assert_close(loaded.latent_avg, g.mean_latent(generator=torch.Generator().manual_seed(0)))


def test_a_checkpoint_that_is_not_a_generator_is_refused_by_name(tmp_path):
    path = tmp_path / "classifier.pt"
    torch.save({"model": nn.Linear(4, 2).state_dict()}, path)
    with pytest.raises(NotAGeneratorError, match=r"classifier.pt: not a StyleGAN2 generator state dict") as err:
        load_rosinality(path)
    assert isinstance(err.value, ValueError) and "style.1.weight" in str(err.value)
    state = to_rosinality(generator())["g_ema"]
    state["to_rgbs.0.conv.weight"] = state["to_rgbs.0.conv.weight"][:, :2]
    torch.save({"g_ema": state}, tmp_path / "cut.pt")
    with pytest.raises(NotAGeneratorError, match=r"cut.pt: g_ema to_rgbs.0.conv.weight has shape \[1, 2, 16, 1, 1\], "
                                                 r"expected \[1, 3, 16, 1, 1\]"):
        load_rosinality(tmp_path / "cut.pt")
    del state["noises.noise_0"]
    torch.save({"g_ema": state}, tmp_path / "less.pt")
    with pytest.raises(NotAGeneratorError, match=r"less.pt: g_ema does not match a StyleGAN2 generator of size 16 \(missing noises.noise_0\)"):
        load_rosinality(tmp_path / "less.pt")
    (tmp_path / "torn.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(NotAGeneratorError, match=r"torn.pt: not a readable torch checkpoint"):
        load_rosinality(tmp_path / "torn.pt")


class Trap:
    """Unpickling this would write a file: weights_only must refuse it, never run it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_with_objects_is_refused_and_never_run(tmp_path):
    g = to_rosinality(generator())
    torch.save({**g, "args": argparse.Namespace(size=16)}, tmp_path / "training.pt")
    with pytest.raises(NotAGeneratorError, match=r"training.pt: holds objects other than tensors.*argparse"):
        load_rosinality(tmp_path / "training.pt")
    trap = tmp_path / "pwned"
    torch.save({**g, "trap": Trap(str(trap))}, tmp_path / "trap.pt")
    with pytest.raises(NotAGeneratorError, match="never unpickled"):
        load_rosinality(tmp_path / "trap.pt")
    assert not trap.exists()


# --- training --------------------------------------------------------------------------------

def test_r1_penalty_of_known_discriminators():
    """D(x) = <a, x>: grad = a everywhere, the penalty ||a||^2. D(x) = ||x||^2 / 2: grad = x."""
    module = StyleGAN2(generator(), Discriminator(SMALL))
    a = torch.randn(3 * 16 * 16)
    module.discriminator = nn.Linear(3 * 16 * 16, 1, bias=False)
    module.discriminator.weight.data.copy_(a)
    module.discriminator = nn.Sequential(nn.Flatten(), module.discriminator)
    x = torch.randn(5, 3, 16, 16)
    penalty, logits = module.r1_penalty(x)
    torch.testing.assert_close(penalty, a.pow(2).sum())
    assert logits.shape == (5, 1) and penalty.requires_grad

    class HalfSquare(nn.Module):
        def forward(self, images):
            return images.pow(2).flatten(1).sum(1, keepdim=True) / 2

    module.discriminator = HalfSquare()
    torch.testing.assert_close(module.r1_penalty(x)[0], x.pow(2).flatten(1).sum(1).mean())


def test_losses_at_an_undecided_discriminator():
    zeros = torch.zeros(4, 1)
    torch.testing.assert_close(StyleGAN2.discriminator_loss(zeros, zeros), torch.tensor(2 * math.log(2)))
    torch.testing.assert_close(StyleGAN2.generator_loss(zeros), torch.tensor(math.log(2)))


class Losses(L.Callback):
    def __init__(self):
        self.d: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.d.append(float(outputs["loss"]))


@pytest.mark.parametrize("augment", [(), ("color", "translation", "cutout")])
def test_a_few_gan_steps_lower_the_d_loss_and_move_g_and_its_average(tmp_path, augment):
    torch.manual_seed(0)
    reals = torch.zeros(32, 3, 16, 16)
    reals[:, 0, 4:12, 4:12] = 1.0        # a red square on black: what D learns to tell apart
    module = StyleGAN2(generator(), Discriminator(SMALL),
                       GanConfig(r1_gamma=1.0, r1_every=4, path_length_weight=2.0, path_length_every=2,
                                 ema_half_life_images=16, augment=augment))
    start = {k: v.clone() for k, v in module.generator.state_dict().items()}
    start_ema = {k: v.clone() for k, v in module.g_ema.state_dict().items()}
    losses = Losses()
    trainer = L.Trainer(max_steps=2 * 12, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[losses],
                        default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(reals, batch_size=8, shuffle=True))
    assert int(module.iterations) == 12 and int(module.images_seen) == 96 and trainer.global_step == 24
    assert sum(losses.d[-3:]) / 3 < losses.d[0] - 0.3    # measured: 1.72 -> 1.08 (seed 0)
    assert module.mean_path_length > 0
    moved = [k for k, v in module.generator.state_dict().items() if not torch.equal(v, start[k])]
    assert "conv1.conv.weight" in moved and "style.1.weight" in moved
    ema = module.g_ema.state_dict()
    assert not torch.equal(ema["conv1.conv.weight"], start_ema["conv1.conv.weight"])
    assert not torch.equal(ema["conv1.conv.weight"], module.generator.state_dict()["conv1.conv.weight"])
    # sampling is seeded and leaves the caller's random state alone
    state = torch.random.get_rng_state()
    assert torch.equal(sample_images(module.g_ema, 3, seed=5), sample_images(module.g_ema, 3, seed=5))
    assert torch.equal(state, torch.random.get_rng_state())



def test_with_noise_inputs_off_the_noise_strengths_stay_zero_and_the_rest_trains(tmp_path):
    torch.manual_seed(0)
    reals = torch.zeros(16, 3, 16, 16)
    reals[:, 1, 2:10, 6:14] = 1.0
    g = generator()
    with torch.no_grad():
        for strength in noise_strengths(g):   # a generator that had learned some noise
            strength.fill_(0.3)
    module = StyleGAN2(g, Discriminator(SMALL), GanConfig(r1_gamma=1.0, r1_every=2, noise_inputs=False))
    g_opt, _ = module.configure_optimizers()
    in_optimizer = {id(p) for group in g_opt.param_groups for p in group["params"]}
    strengths = noise_strengths(module.generator)
    assert len(strengths) == g.num_layers and not in_optimizer & {id(p) for p in strengths}
    start = {k: v.clone() for k, v in module.generator.state_dict().items()}
    trainer = L.Trainer(max_steps=2 * 4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(reals, batch_size=4, shuffle=True))
    assert int(module.iterations) == 4
    for model in (module.generator, module.g_ema):
        assert all(float(s) == 0.0 for s in noise_strengths(model))
    # with the strengths at zero, the noise drawn no longer reaches the image
    z = torch.randn(2, g.style_dim)
    assert torch.equal(module.g_ema(z), module.g_ema(z, noise="const"))
    moved = [k for k, v in module.generator.state_dict().items() if not torch.equal(v, start[k])]
    assert "conv1.conv.weight" in moved and not any(k.endswith("noise.weight") for k in moved)


# --- DiffAugment ------------------------------------------------------------------------------

def test_translation_shifts_each_image_by_at_most_an_eighth_with_zeros_behind():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 16, 16) + 1.0          # no zeros of its own
    moved = diff_augment(images, ["translation"])
    shifts = set()
    for original, out in zip(images, moved):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(out, torch.roll(original, (dy, dx), (1, 2)) * shifted_mask(dy, dx, 16))]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 3                           # drawn per image


def shifted_mask(dy: int, dx: int, size: int) -> torch.Tensor:
    mask = torch.ones(1, size, size)
    if dy > 0:
        mask[:, :dy] = 0
    elif dy < 0:
        mask[:, dy:] = 0
    if dx > 0:
        mask[:, :, :dx] = 0
    elif dx < 0:
        mask[:, :, dx:] = 0
    return mask


def test_cutout_zeroes_one_square_of_at_most_half_the_size_and_nothing_else():
    torch.manual_seed(0)
    images = torch.rand(32, 3, 16, 16) + 1.0
    out = diff_augment(images, ["cutout"])
    for original, cut in zip(images, out):
        zero = (cut == 0).all(0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        assert zero.sum() == len(rows) * len(cols)       # one rectangle
        assert torch.equal(cut[:, ~zero], original[:, ~zero])


def test_augmentations_pass_the_gradient_to_the_generator_and_differ_per_image():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 16, 16, requires_grad=True)
    out = diff_augment(images * 2 - 1, ["color", "translation", "cutout"])
    out.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    same = diff_augment(torch.zeros(4, 3, 8, 8).add(0.2), ["color"])
    assert len({round(float(v), 4) for v in same.mean((1, 2, 3))}) == 4


# --- FID -------------------------------------------------------------------------------------

def test_frechet_distance_equals_the_closed_form_on_gaussians():
    # diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(s1) - sqrt(s2))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)
    expected = (mu1 - mu2).pow(2).sum() + (s1.sqrt() - s2.sqrt()).pow(2).sum()
    torch.testing.assert_close(frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)), expected)
    # full covariances: the metric's streaming sums give the statistics of all features at once
    torch.manual_seed(0)
    a, b = torch.randn(6, 6), torch.randn(6, 6)
    real, fake = torch.randn(3000, 6) @ a + 1.0, torch.randn(2000, 6) @ b
    metric = FrechetDistance(6)
    for chunk in real.split(700):
        metric.update(chunk, real=True)
    for chunk in fake.split(300):
        metric.update(chunk, real=False)
    torch.testing.assert_close(metric.compute(), frechet_distance(*gaussian_statistics(real),
                                                                  *gaussian_statistics(fake)))
    # the population values: mean shift 1 per dimension, covariances a^T a and b^T b
    cov1, cov2 = (a.t() @ a).double(), (b.t() @ b).double()
    population = frechet_distance(torch.ones(6, dtype=torch.float64), cov1, torch.zeros(6, dtype=torch.float64), cov2)
    assert abs(float(metric.compute()) - float(population)) / float(population) < 0.1


def test_fid_through_a_feature_network_is_zero_for_one_set_and_keeps_the_reference():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.rand(64, 3, 16, 16)
    metric = FrechetDistance(8, feature_fn=net, reset_real_features=False)
    metric.update(images, real=True)
    metric.update(images, real=False)
    assert abs(float(metric.compute())) < 1e-6
    metric.reset()
    metric.update(images * 0.2, real=False)      # darker: farther
    assert float(metric.compute()) > 1e-4 and int(metric.real_count) == 64


# --- the stage -------------------------------------------------------------------------------

@pytest.fixture()
def faces_ws(tmp_path) -> Path:
    """A smoke workspace with a small faces folder and an (untrained) face judge: all the stage reads."""
    ws = make_workspace(tmp_path / "ws", git=False)
    write_faces_folder(ws / "data" / "faces", identities=4, images_per_identity=5, size=32)
    torch.manual_seed(0)
    FaceAttributeClassifier(FACE_ATTRIBUTES, list(range(4)), image_size=32, width=4).save_pretrained(
        ws / "data" / "models" / "face_attributes")
    return ws


def outputs_of(ws: Path) -> list[Path]:
    return [ws / "data" / "models" / "stylegan", ws / "metrics" / "train_stylegan.json",
            ws / "plots" / "train_stylegan"]


def test_the_stage_trains_a_generator_then_imports_it_back(faces_ws, in_process):
    in_process("train_stylegan", faces_ws)
    model, metrics_file, plots = outputs_of(faces_ws)
    metrics = json.loads(metrics_file.read_text())
    assert metrics["trained"] and metrics["iterations"] == 4 and metrics["images_seen"] == 16
    assert [row["iteration"] for row in metrics["fid_curve"]] == [0, 2, 4]
    assert metrics["fid"] > 0 and metrics["fid_real_train"] >= 0 and metrics["held_out_faces"] == 8
    assert (metrics["image_size"], metrics["num_ws"]) == (32, 8)
    assert (plots / "fid.csv").read_text().splitlines()[0] == "iteration,images,fid,seconds"
    assert {"samples.png", "samples_truncated.png", "samples_000000.png", "samples_000004.png"} <= \
        {p.name for p in plots.iterdir()}
    trained = StyleGenerator.from_pretrained(model)
    assert trained.latent_avg.abs().sum() > 0
    assert not (faces_ws / "checkpoints" / "train_stylegan").exists() or \
        not any((faces_ws / "checkpoints" / "train_stylegan").iterdir())

    torch.save(to_rosinality(trained), faces_ws / "stylegan2.pt")
    edit_params(faces_ws / "params.yaml", **{"train_stylegan.checkpoint": "stylegan2.pt"})
    in_process("train_stylegan", faces_ws)
    metrics = json.loads(metrics_file.read_text())
    assert not metrics["trained"] and metrics["imported"] == "stylegan2.pt" and metrics["latent_avg"] == "checkpoint"
    assert len(metrics["sha256"]) == 64 and "fid_curve" not in metrics
    imported = load_file(str(model / "model.safetensors"))
    assert all(torch.equal(imported[k], v) for k, v in trained.state_dict().items())

    # A generator trained elsewhere (a GPU workspace) comes in as its published model.safetensors.
    (faces_ws / "generators").mkdir()
    (faces_ws / "generators" / "faces.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    edit_params(faces_ws / "params.yaml", **{"train_stylegan.checkpoint": "generators/faces.safetensors"})
    in_process("train_stylegan", faces_ws)
    metrics = json.loads(metrics_file.read_text())
    assert not metrics["trained"] and metrics["latent_avg"] == "checkpoint"
    again = StyleGenerator.from_pretrained(model)
    assert torch.equal(again.latent_avg, trained.latent_avg)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in trained.state_dict().items())


def test_a_killed_gan_run_resumes_to_the_same_generator_and_curve(faces_ws, in_process, capsys):
    """kill -9 between two checkpoints of the GAN's manual optimization (two optimizers, lazy R1
    every 2 iterations, g_ema, the FID curve in the callback's state), started again: the same
    generator, bit for bit, and the same FID curve as a run never stopped."""
    from tests.test_resume import run_stage, snapshot, unpublish

    params = yaml.safe_load((faces_ws / "params.yaml").read_text())
    params["trainer"]["checkpoint_every_n_steps"] = 4   # Lightning counts both steps: iteration 2
    (faces_ws / "resume.yaml").write_text(yaml.safe_dump(params))

    def without_times(metrics: dict) -> dict:   # a curve point's wall time is the one thing that differs
        return {**metrics, "fid_curve": [{k: v for k, v in row.items() if k != "seconds"}
                                         for row in metrics["fid_curve"]]}

    in_process("train_stylegan", faces_ws, "--params", "resume.yaml")
    reference_tensors, reference_metrics = snapshot(faces_ws, "stylegan", "train_stylegan.json")
    unpublish(faces_ws, "stylegan", "train_stylegan.json")

    killed = run_stage("train_stylegan", faces_ws, "train.batch_end@3=kill")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (faces_ws / "data" / "models" / "stylegan").exists()
    (last,) = (faces_ws / "checkpoints" / "train_stylegan").glob("*/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and int(state["state_dict"]["iterations"]) == 2
    assert len(state["optimizer_states"]) == 2

    capsys.readouterr()
    in_process("train_stylegan", faces_ws, "--params", "resume.yaml")
    assert "Resuming train_stylegan from" in capsys.readouterr().out   # not a fresh start that happens to agree
    tensors, metrics = snapshot(faces_ws, "stylegan", "train_stylegan.json")
    assert without_times(metrics) == without_times(reference_metrics)
    assert [row["iteration"] for row in metrics["fid_curve"]] == [0, 2, 4]
    assert tensors.keys() == reference_tensors.keys()
    for name, value in tensors.items():
        assert torch.equal(value, reference_tensors[name]), name


@pytest.mark.parametrize("content", ["classifier", "pickle"])
def test_a_checkpoint_that_is_not_a_generator_state_dict_is_one_line_exit_2_nothing_written(
        tmp_path, in_process, capsys, content):
    ws = make_workspace(tmp_path / "ws", git=False)
    path = ws / "checkpoint.pt"
    if content == "classifier":
        torch.save({"state_dict": nn.Linear(3, 2).state_dict()}, path)
    else:
        torch.save({"g_ema": {}, "args": argparse.Namespace(size=16)}, path)
    edit_params(ws / "params.yaml", **{"train_stylegan.checkpoint": "checkpoint.pt"})
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        in_process("train_stylegan", ws)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    assert err.startswith("error: checkpoint.pt: ")
    assert ("not a StyleGAN2 generator state dict" if content == "classifier" else "never unpickled") in err
    assert not any(p.exists() for p in outputs_of(ws))
    assert not (ws / "mlflow").exists() and not (ws / "data").exists()
