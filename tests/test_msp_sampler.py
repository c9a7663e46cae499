"""The MSP sampler and its compositions on a tiny, randomly initialised model (MSP 2(ii)-(iv), A.3, A.4).

A random model draws noise-like pictures, but everything these tests assert is a property of the
algorithm: shapes, determinism by seed, the global diffuser's effect, that a segment's noise
prediction comes from its own prompt alone, that SAL descends its entropy loss, and that every
layout mistake is refused before sampling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lightning_modules.diffusion.tiny import TinySizes, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.msp import CompositeSampler, LayoutError, MSPSettings, load_composition, segment_entropy
from lightning_modules.msp.controlnet import ControlNetTraining, build_controlnet
from lightning_modules.msp.sampler import composite_noise, latent_masks

SIZE = 32
RARE = rare_token_pool(4)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(synthworld_words(), RARE, max_length=16)
    components = tiny_text_to_image(tokenizer, TinySizes(resolution=SIZE, unet_channels=(16, 32), vae_channels=(16, 32),
                                                          text_width=32, text_layers=1))
    for name in ("unet", "vae", "text_encoder"):
        components[name].eval()
    # SAL needs a segmenter whose entropy depends on the image: a random ResNet-34 U-Net is
    # almost uniform everywhere (entropy ~1), a random colour classifier per pixel is not.
    segmenter = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    with torch.no_grad():
        segmenter.weight.mul_(20.0)
    return components, segmenter


def two_subjects() -> torch.Tensor:
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    masks[1, 6:28, 2:15] = True
    masks[2, 6:28, 17:30] = True
    masks[0] = ~(masks[1] | masks[2])
    return masks


PROMPTS = ["on a beach", f"a {RARE[0]} cartoon", f"a {RARE[1]} dog"]


def sample(parts, settings: MSPSettings, prompts=PROMPTS, seeds=(0, 1), **kwargs) -> torch.Tensor:
    components, segmenter = parts
    sampler = CompositeSampler(components["unet"], components["vae"], components["text_encoder"],
                               components["tokenizer"], components["scheduler"], settings, segmenter=segmenter,
                               segmenter_size=SIZE)
    images = sampler(two_subjects(), prompts, "a cartoon and a dog on a beach",
                     [torch.Generator().manual_seed(s) for s in seeds], subject_segments=[1, 2], **kwargs)
    return images, sampler


FAST = dict(steps=6, guidance_scale=7.5, scaffolding_fraction=0.5, global_steps=2)


def test_output_shape_range_and_determinism_by_seed(parts):
    images, _ = sample(parts, MSPSettings(**FAST))
    assert images.shape == (2, 3, SIZE, SIZE)
    assert 0 <= images.min() and images.max() <= 1
    again, _ = sample(parts, MSPSettings(**FAST))
    torch.testing.assert_close(images, again, rtol=0, atol=0)
    # An image depends on its own seed only, not on the other images of the batch.
    alone, _ = sample(parts, MSPSettings(**FAST), seeds=(1,))
    torch.testing.assert_close(alone[0], images[1], rtol=0, atol=1e-5)
    assert (images[0] - images[1]).abs().mean() > 1e-3


def test_the_global_diffuser_changes_the_image(parts):
    with_gd, _ = sample(parts, MSPSettings(**FAST, global_diffuser=True))
    without, _ = sample(parts, MSPSettings(**FAST, global_diffuser=False))
    assert (with_gd - without).abs().mean() > 1e-4


def test_a_scaffolding_image_changes_the_image_and_the_stages_differ(parts):
    plain, _ = sample(parts, MSPSettings(**FAST))
    scaffold = torch.zeros(3, SIZE, SIZE)
    scaffold[1] = 1.0   # a green scaffolding image
    scaffolded, _ = sample(parts, MSPSettings(**FAST), scaffolding=scaffold)
    assert (plain - scaffolded).abs().mean() > 1e-4
    only_harmonization, _ = sample(parts, MSPSettings(**{**FAST, "scaffolding_fraction": 0.0}))
    assert (plain - only_harmonization).abs().mean() > 1e-4


def test_each_segment_is_driven_by_its_own_prompt(parts):
    """Inside segment j the mixed prediction is segment j's own: changing another segment's
    prompt leaves it as it was, and swapping two prompts swaps the two regions' predictions."""
    components, _ = parts
    sampler = CompositeSampler(components["unet"], components["vae"], components["text_encoder"],
                               components["tokenizer"], components["scheduler"], MSPSettings(**FAST))
    latent = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(3))
    masks = latent_masks(two_subjects(), SIZE // 2)
    t = torch.tensor(500)

    def mixed(prompts):
        context = sampler.embed(prompts)
        predictions = sampler.unet_batch(latent.repeat(len(prompts), 1, 1, 1), t, context).unsqueeze(1)
        return composite_noise(predictions, masks)[0]

    base = mixed(PROMPTS)
    changed = mixed([PROMPTS[0], PROMPTS[1], f"a {RARE[2]} robot"])
    inside_1 = masks[1, 0] == 1
    inside_2 = masks[2, 0] == 1
    torch.testing.assert_close(changed[:, inside_1], base[:, inside_1])
    assert (changed[:, inside_2] - base[:, inside_2]).abs().mean() > 1e-4
    swapped = mixed([PROMPTS[0], PROMPTS[2], PROMPTS[1]])
    own = sampler.unet_batch(latent.repeat(3, 1, 1, 1), t, sampler.embed(PROMPTS))
    torch.testing.assert_close(swapped[:, inside_1], own[2][:, inside_1])
    torch.testing.assert_close(swapped[:, inside_2], own[1][:, inside_2])


def test_the_segment_prompts_of_a_step_go_through_the_unet_in_one_call(parts):
    calls = []
    images, sampler = sample(parts, MSPSettings(**FAST))
    original = sampler.unet_batch
    sampler.unet_batch = lambda latents, t, context: calls.append(latents.shape[0]) or original(latents, t, context)
    sampler(two_subjects(), PROMPTS, "a cartoon and a dog on a beach", [torch.Generator().manual_seed(0)])
    settings = MSPSettings(**FAST)
    k = settings.scaffolding_steps
    assert len(calls) == settings.steps
    assert calls[:k] == [2 * 3] * k                              # 3 segment tracks, conditional + unconditional
    assert calls[k:k + 2] == [3 + 1 + 1] * 2                      # segments, global prompt, unconditional
    assert calls[k + 2:] == [3 + 1] * (settings.steps - k - 2)


def test_sal_lowers_the_entropy_loss_against_the_same_run_without_it(parts):
    _, segmenter = parts
    settings = dict(FAST, sal_range=(0.0, 1.0), global_diffuser=False)
    plain, _ = sample(parts, MSPSettings(**settings, sal=False), seeds=(0, 1, 2, 3))
    guided, sampler = sample(parts, MSPSettings(**settings, sal=True, sal_scale=2000.0), seeds=(0, 1, 2, 3))
    assert len(sampler.trace.sal_loss) == 6 + 3   # 3 scaffolding steps x 2 segments + 3 harmonization steps
    with torch.no_grad():
        before = segment_entropy(segmenter, plain, two_subjects()[1:], SIZE).mean()
        after = segment_entropy(segmenter, guided, two_subjects()[1:], SIZE).mean()
    assert after < before - 1e-3, (float(before), float(after))


def test_sal_lowers_the_entropy_loss_of_a_v_prediction_model_too(parts):
    """x0-hat and the guided move follow the model's prediction type (v: Stable Diffusion 2)."""
    from diffusers import DDPMScheduler

    components, segmenter = parts
    velocity = dict(components, scheduler=DDPMScheduler.from_config(components["scheduler"].config,
                                                                    prediction_type="v_prediction"))
    settings = dict(FAST, sal_range=(0.0, 1.0), global_diffuser=False)
    plain, _ = sample((velocity, segmenter), MSPSettings(**settings, sal=False), seeds=(0, 1, 2, 3))
    guided, _ = sample((velocity, segmenter), MSPSettings(**settings, sal=True, sal_scale=2000.0), seeds=(0, 1, 2, 3))
    with torch.no_grad():
        before = segment_entropy(segmenter, plain, two_subjects()[1:], SIZE).mean()
        after = segment_entropy(segmenter, guided, two_subjects()[1:], SIZE).mean()
    assert after < before - 1e-3, (float(before), float(after))


def test_masks_must_match_the_prompts_and_partition_the_picture(parts):
    with pytest.raises(ValueError, match="3 segment masks for 2 prompts"):
        sample(parts, MSPSettings(**FAST), prompts=PROMPTS[:2])
    components, segmenter = parts
    sampler = CompositeSampler(components["unet"], components["vae"], components["text_encoder"],
                               components["tokenizer"], components["scheduler"], MSPSettings(**FAST))
    gap = two_subjects()
    gap[0, 0, 0] = False
    with pytest.raises(ValueError, match="partition"):
        sampler(gap, PROMPTS, "a cartoon", [torch.Generator().manual_seed(0)])


def test_sal_needs_the_segmenter(parts):
    components, _ = parts
    with pytest.raises(ValueError, match="segmenter"):
        CompositeSampler(components["unet"], components["vae"], components["text_encoder"], components["tokenizer"],
                         components["scheduler"], MSPSettings(sal=True))


# --- ControlNet ----------------------------------------------------------------------------------


def pose_image(column: slice) -> torch.Tensor:
    """A stick figure in OpenPose colours, standing in `column` of the picture."""
    pose = torch.zeros(3, SIZE, SIZE)
    pose[0, 4:28, column] = 1.0
    pose[1, 20:28, column] = 0.6
    return pose


def controlnet_for(parts, perturbed: bool):
    components, _ = parts
    torch.manual_seed(1)
    controlnet = build_controlnet(components["unet"], SIZE).eval()
    if perturbed:   # as if trained: the zero convolutions that start it at "no effect" now pass features
        with torch.no_grad():
            for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                          controlnet.controlnet_cond_embedding.conv_out]:
                block.weight.normal_(0, 0.5)
    return controlnet


def sample_steered(parts, controlnet, pose, seeds=(0, 1)):
    components, _ = parts
    sampler = CompositeSampler(components["unet"], components["vae"], components["text_encoder"],
                               components["tokenizer"], components["scheduler"], MSPSettings(**FAST),
                               controlnet=controlnet)
    return sampler(two_subjects(), PROMPTS, "a cartoon and a dog on a beach",
                   [torch.Generator().manual_seed(s) for s in seeds], pose=pose), sampler


def test_a_fresh_controlnet_changes_nothing_and_a_trained_one_follows_the_pose(parts):
    plain, _ = sample(parts, MSPSettings(**FAST))
    fresh, _ = sample_steered(parts, controlnet_for(parts, perturbed=False), pose_image(slice(4, 8)))
    torch.testing.assert_close(fresh, plain, rtol=0, atol=1e-5)       # zero convolutions: no effect yet
    steered = controlnet_for(parts, perturbed=True)
    left, _ = sample_steered(parts, steered, pose_image(slice(4, 8)))
    right, _ = sample_steered(parts, steered, pose_image(slice(24, 28)))
    assert (left - plain).abs().mean() > 1e-3 and (left - right).abs().mean() > 1e-3
    again, _ = sample_steered(parts, steered, pose_image(slice(4, 8)))
    torch.testing.assert_close(left, again, rtol=0, atol=0)


def test_controlnet_steers_every_unet_call_of_a_step_in_one_batch(parts):
    controlnet = controlnet_for(parts, perturbed=True)
    batches = []
    original = controlnet.forward
    controlnet.forward = lambda latents, *a, **k: batches.append(latents.shape[0]) or original(latents, *a, **k)
    sample_steered(parts, controlnet, pose_image(slice(4, 8)), seeds=(0,))
    settings = MSPSettings(**FAST)
    k = settings.scaffolding_steps
    assert batches == [2 * 3] * k + [3 + 1 + 1] * 2 + [3 + 1] * (settings.steps - k - 2)


def test_a_pose_needs_a_controlnet_and_a_controlnet_needs_a_pose(parts):
    with pytest.raises(ValueError, match="needs a ControlNet"):
        sample(parts, MSPSettings(**FAST), pose=pose_image(slice(4, 8)))
    with pytest.raises(ValueError, match="give it the pose image"):
        sample_steered(parts, controlnet_for(parts, perturbed=False), None)


def test_the_condition_embedding_reaches_the_latent_size(parts):
    components, _ = parts
    controlnet = build_controlnet(components["unet"], SIZE)
    assert controlnet.config.conditioning_embedding_out_channels == (16, 32)   # 32 px -> 16 latents: one halving
    with pytest.raises(ValueError, match="power of two"):
        build_controlnet(components["unet"], 3 * SIZE // 2)


def test_controlnet_training_learns_to_use_the_pose(parts):
    """Real Lightning steps on pose pairs (a white square on black wherever the pose says):
    ControlNet alone learns, its held-out loss falls, and the pose now enters through the
    condition embedding, which starts at zero. Whether a trained ControlNet steers a trained
    model is the train_controlnet stage's measurement (foreground IoU with and without)."""
    import lightning as L

    components, _ = parts
    torch.manual_seed(0)
    controlnet = build_controlnet(components["unet"], SIZE)
    module = ControlNetTraining(controlnet, components["unet"], components["vae"], components["text_encoder"],
                                components["scheduler"], lr=2e-3, weight_decay=0.0)
    frozen = {k: v.clone() for k, v in components["unet"].state_dict().items()}

    def batch(seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        pixels, poses = -torch.ones(8, 3, SIZE, SIZE), torch.zeros(8, 3, SIZE, SIZE)
        for i in range(8):
            x, y = (int(v) for v in torch.randint(0, SIZE - 12, (2,), generator=g))
            pixels[i, :, y:y + 12, x:x + 12] = 1.0
            poses[i, 0, y + 2:y + 10, x + 5:x + 7] = 1.0
        ids = components["tokenizer"]([f"a {RARE[0]} cartoon"] * 8, padding="max_length",
                                      max_length=components["tokenizer"].model_max_length, return_tensors="pt").input_ids
        return {"pixel_values": pixels, "condition": poses, "input_ids": ids}

    data = [batch(k) for k in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    held = batch(99)

    def loss(use_pose: bool) -> float:
        torch.manual_seed(5)
        with torch.no_grad():
            if use_pose:
                return float(module.compute_loss(held))
            return float(module.compute_loss({**held, "condition": torch.zeros_like(held["condition"])}))

    trainer = L.Trainer(max_steps=60, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    before = loss(True)
    trainer.fit(module, train_dataloaders=loader)
    controlnet.eval()
    after, blind = loss(True), loss(False)
    for key, value in components["unet"].state_dict().items():
        assert torch.equal(value, frozen[key]), key                  # the base model never moved
    assert after < 0.9 * before, (before, after)
    assert controlnet.controlnet_cond_embedding.conv_out.weight.abs().max() > 0   # the pose's path opened
    assert after != blind


# --- compositions ---------------------------------------------------------------------------------

RED, GREEN, WHITE = "#e6194b", "#3cb44b", "#ffffff"


def write_composition(folder, layout_size=SIZE, segments=None, **extra):
    layout = np.full((layout_size, layout_size, 3), 255, np.uint8)
    layout[4:20, 2:14] = (0xe6, 0x19, 0x4b)
    layout[4:20, 18:30] = (0x3c, 0xb4, 0x4b)
    Image.fromarray(layout).save(folder / "layout.png")
    spec = {"layout": "layout.png", "global_prompt": "a cartoon and a dog on a beach",
            "segments": segments or {RED: f"a {RARE[0]} cartoon", GREEN: f"a {RARE[1]} dog", WHITE: "on a beach"},
            "subjects": {RED: "cartoon_1", GREEN: "dog_1"}, **extra}
    path = folder / "two.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def load(path, **kwargs):
    return load_composition(path, size=SIZE, identifiers=RARE[:2], rare_tokens=RARE, **kwargs)


def test_a_composition_reads_its_segments_masks_and_truth(tmp_path):
    comp = load(write_composition(tmp_path))
    assert [s.colour for s in comp.segments] == [RED, GREEN, WHITE]
    assert comp.masks.shape == (3, SIZE, SIZE)
    assert comp.masks.sum(0).min() == 1 and comp.masks.sum(0).max() == 1   # a partition
    assert comp.masks[0].sum() == 16 * 12
    assert [comp.segments[i].subject for i in comp.subject_segments] == ["cartoon_1", "dog_1"]


@pytest.mark.parametrize("change, expected", [
    (dict(segments={RED: f"a {RARE[0]} cartoon", WHITE: "on a beach"}), f"segments: the layout colour {GREEN} has no prompt"),
    (dict(segments={RED: "a cartoon", GREEN: "a dog", WHITE: "a beach", "#000000": "a vase"}),
     "segments.#000000: this colour is not in the layout"),
    (dict(segments={RED: f"a {RARE[3]} cartoon", GREEN: "a dog", WHITE: "a beach"}),
     f"segments.{RED}: '{RARE[3]}' is an identifier the model was not fine-tuned on"),
    (dict(layout_size=48), "layout: .*layout.png is 48 x 48 px; the model generates 32 x 32"),
    (dict(pose="pose.png"), "pose: given, but ControlNet is off"),
    (dict(segments={"red": "a cartoon"}), "segments: 'red' is not a colour"),
])
def test_every_layout_mistake_is_one_line_naming_the_file_and_entry(tmp_path, change, expected):
    path = write_composition(tmp_path, **change)
    with pytest.raises(LayoutError, match=expected) as err:
        load(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_an_unreadable_layout_and_a_missing_pose_are_refused(tmp_path):
    path = write_composition(tmp_path)
    with pytest.raises(LayoutError, match="pose: missing, and ControlNet is on"):
        load(path, controlnet=True)
    (tmp_path / "layout.png").write_bytes(b"not a png")
    with pytest.raises(LayoutError, match="layout: .*layout.png is not a readable image"):
        load(path)
