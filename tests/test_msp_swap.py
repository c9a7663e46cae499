"""MSP's composite sampler, judged on pictures: each segment's region is drawn by its own prompt,
so swapping two segments' prompts swaps the subjects a judge sees in them (MSP 2(ii)-(iii)).

tests/test_msp_sampler.py checks this property on the mixed noise prediction of a random model.
Here it is checked end to end, on the sampler's output images: a tiny text-to-image model (the
project's builders and pretraining losses) is trained in the test, in seconds of CPU, to draw two
subjects: "a <A> vase" is a red picture, "a <B> vase" a blue one. The judge is not the
generator: it names, per segment, the subject whose colour is nearer the mean colour of the
segment's pixels, with a margin (how much nearer). Two left/right segments prompted [A, B] must be
judged [A, B], and prompted [B, A] judged [B, A], with the global diffuser off and on. The
control shows that the judge can fail: the same prompt in both segments is judged the same in
both (the answer comes from the picture, not from the segment's position). A precondition is
checked too: the VAE alone keeps each half of a half-red, half-blue picture where it was.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from lightning_modules.diffusion.data import tokenize
from lightning_modules.diffusion.pretrain import TextToImagePretrainer, VaePretrainer, latent_scaling_factor
from lightning_modules.diffusion.tiny import TinySizes, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.msp import CompositeSampler, MSPSettings

# 8 px pictures under a one-level VAE (latents 8 x 8 too). A VAE that downsamples needs many
# more steps before it decodes a half-red, half-blue picture as such: at 16 px with two levels,
# after 200 steps on the mosaics below the blue half still came back nearly grey, and the test
# would have judged the VAE, not the sampler.
SIZE = 8
A, B = rare_token_pool(2)                        # the two subjects' identifiers
PROMPT = {A: f"a {A} vase", B: f"a {B} vase"}
GLOBAL_PROMPT = f"a {A} vase and a {B} vase"
COLOUR = {A: torch.tensor([0.9, 0.1, 0.1]), B: torch.tensor([0.1, 0.2, 0.9])}   # red, blue
SEEDS = (0, 1, 2, 3)

VAE_STEPS, UNET_STEPS, BATCH = 200, 300, 16
CAPTION_DROPOUT = 0.1                            # unconditional examples, for classifier-free guidance
SAMPLING = {"steps": 20, "guidance_scale": 4.0}
# The judge's margins, measured (the two reference colours are 1.14 apart): with this training
# seed every segment of every test was nearer its subject's colour by 0.75 to 1.06; with training
# seeds 1 to 3 by 0.23 to 1.12. A segment of half one colour, half the other scores about 0.
MIN_MARGIN = 0.15


# --- training data ----------------------------------------------------------------------------

def mosaics(count: int, generator: torch.Generator) -> torch.Tensor:
    """Random rectangles of random colours over a random background, in [-1, 1]: the VAE learns
    to keep every colour where it is, and never sees a subject."""
    pictures = torch.rand(count, 3, 1, 1, generator=generator).repeat(1, 1, SIZE, SIZE)
    for picture in pictures:
        for _ in range(4):
            top, left = torch.randint(0, SIZE - 1, (2,), generator=generator).tolist()
            height, width = torch.randint(1, SIZE, (2,), generator=generator).tolist()
            picture[:, top:top + height, left:left + width] = torch.rand(3, 1, 1, generator=generator)
    return pictures * 2 - 1


def subject_pictures(subject: str, count: int, generator: torch.Generator) -> torch.Tensor:
    """A subject's training pictures, in [-1, 1]: its colour at a random brightness, with pixel noise."""
    brightness = 0.8 + 0.2 * torch.rand(count, 1, 1, 1, generator=generator)
    noise = 0.05 * torch.randn(count, 3, SIZE, SIZE, generator=generator)
    return (COLOUR[subject].view(1, 3, 1, 1) * brightness + noise).clamp(0, 1) * 2 - 1


def pair_pictures(count: int, generator: torch.Generator) -> torch.Tensor:
    """Both subjects in one picture, in [-1, 1]: split at a random row or column, either way round.
    The global prompt's pictures: without them the global diffuser's prediction is whatever the
    model makes of a caption it never saw, and it overrode a segment's prompt."""
    first, second = subject_pictures(A, count, generator), subject_pictures(B, count, generator)
    cut = torch.randint(2, SIZE - 1, (count, 1, 1, 1), generator=generator)
    position = torch.arange(SIZE)
    across = torch.rand(count, 1, 1, 1, generator=generator) < 0.5
    before_cut = torch.where(across, position.view(1, 1, 1, SIZE) < cut, position.view(1, 1, SIZE, 1) < cut)
    swapped = torch.rand(count, 1, 1, 1, generator=generator) < 0.5
    return torch.where(before_cut ^ swapped, first, second)


def train_vae(vae, generator: torch.Generator) -> None:
    module = VaePretrainer(vae, lr=3e-3, kl_weight=1e-3)
    module.on_fit_start()
    optimizer = module.configure_optimizers()
    for _ in range(VAE_STEPS):
        loss, _ = module.compute_loss({"pixel_values": mosaics(32, generator)})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval()


def train_text_to_image(components: dict, generator: torch.Generator) -> None:
    """The UNet and the text encoder on captioned pictures of each subject and of both, the VAE frozen."""
    vae = components["vae"]
    pictures = torch.cat([subject_pictures(A, 64, generator), subject_pictures(B, 64, generator),
                          pair_pictures(64, generator)])
    caption_of = torch.tensor([0] * 64 + [1] * 64 + [2] * 64)           # index into `captions`
    with torch.no_grad():
        posterior = vae.encode(pictures).latent_dist          # encoded once, sampled per step
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, pictures))
    module = TextToImagePretrainer(components["unet"], vae, components["text_encoder"], components["scheduler"],
                                   lr=2e-3, weight_decay=0.0)
    module.on_fit_start()
    optimizer = module.configure_optimizers()
    captions = tokenize(components["tokenizer"], [PROMPT[A], PROMPT[B], GLOBAL_PROMPT, ""])
    for _ in range(UNET_STEPS):
        index = torch.randint(0, len(pictures), (BATCH,), generator=generator)
        dropped = torch.rand(BATCH, generator=generator) < CAPTION_DROPOUT
        caption = torch.where(dropped, 3, caption_of[index])
        loss = module.compute_loss({"latent_mean": posterior.mean[index], "latent_std": posterior.std[index],
                                    "input_ids": captions[caption]})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    components["unet"].eval()
    components["text_encoder"].eval()


@pytest.fixture(scope="module")
def model():
    # One thread, for training and for the tests' sampling: the model's operations are too small
    # to share out, and with the other core busy two threads took about 300 s to train, one about 30 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)                             # the losses draw noise and timesteps globally
        generator = torch.Generator().manual_seed(0)
        tokenizer = build_word_tokenizer(synthworld_words(), [A, B], max_length=8)
        components = tiny_text_to_image(tokenizer, TinySizes(resolution=SIZE, vae_channels=(16,),
                                                             unet_channels=(16, 32), text_width=32, text_layers=1))
        # v-prediction (as Stable Diffusion 2's 768 px model): with the noise as target, what the
        # caption says is a small part of the loss at the high noise levels where a picture's
        # colour is decided, and 300 steps left the blue prompt drawing red pictures for a third
        # or more of the seeds. The velocity target carries the clean picture at every noise level.
        components["scheduler"] = DDPMScheduler.from_config(components["scheduler"].config,
                                                            prediction_type="v_prediction")
        train_vae(components["vae"], generator)
        train_text_to_image(components, generator)
        yield components
    finally:
        torch.set_num_threads(threads)


# --- the judge ----------------------------------------------------------------------------------

def judge(images: torch.Tensor, masks: torch.Tensor) -> tuple[list[list[str]], torch.Tensor]:
    """Per image and segment, the subject whose colour is nearer the segment's mean colour, and
    the margin: how much nearer it is than the other subject's (B x S)."""
    share = masks.float() / masks.float().sum((1, 2), keepdim=True)          # S x H x W, each sums to 1
    means = torch.einsum("bchw,shw->bsc", images, share)                        # B x S x 3
    references = torch.stack([COLOUR[A], COLOUR[B]])
    distances = torch.cdist(means, references.expand(len(images), -1, -1))     # B x S x 2
    nearest = distances.argmin(-1)
    names = [[(A, B)[int(k)] for k in row] for row in nearest]
    return names, (distances[..., 0] - distances[..., 1]).abs()


def halves() -> torch.Tensor:
    """The layout: left and right half, a partition of the picture."""
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[0, :, :SIZE // 2] = True
    masks[1] = ~masks[0]
    return masks


def draw(model: dict, subjects: list[str], global_diffuser: bool = True) -> torch.Tensor:
    """One picture per seed of the halves layout, segment j prompted with subjects[j]."""
    sampler = CompositeSampler(model["unet"], model["vae"], model["text_encoder"], model["tokenizer"],
                               model["scheduler"], MSPSettings(**SAMPLING, global_diffuser=global_diffuser))
    generators = [torch.Generator().manual_seed(seed) for seed in SEEDS]
    return sampler(halves(), [PROMPT[s] for s in subjects], GLOBAL_PROMPT, generators)


def report(judged: list[list[str]], margins: torch.Tensor) -> str:
    return f"judged {judged}, margins {[[round(float(m), 2) for m in row] for row in margins]}"


# --- the tests ----------------------------------------------------------------------------------

def test_the_vae_keeps_each_halfs_colour_where_it_is(model):
    """Else a right answer below could come from the VAE smearing one colour over the picture."""
    vae = model["vae"]
    picture = torch.zeros(2, 3, SIZE, SIZE)
    picture[0, :, :, :SIZE // 2] = COLOUR[A].view(3, 1, 1)
    picture[0, :, :, SIZE // 2:] = COLOUR[B].view(3, 1, 1)
    picture[1] = picture[0].flip(-1)
    with torch.no_grad():
        decoded = (vae.decode(vae.encode(picture * 2 - 1).latent_dist.mean).sample / 2 + 0.5).clamp(0, 1)
    judged, margins = judge(decoded, halves())
    assert judged == [[A, B], [B, A]] and margins.min() > MIN_MARGIN, report(judged, margins)


@pytest.mark.parametrize("subject", [A, B])
def test_the_same_prompt_in_both_segments_is_judged_the_same_in_both(model, subject):
    """The control: the judge answers from the picture, not from the segment's position."""
    judged, margins = judge(draw(model, [subject, subject]), halves())
    assert judged == [[subject, subject]] * len(SEEDS) and margins.min() > MIN_MARGIN, report(judged, margins)


@pytest.mark.parametrize("global_diffuser", [False, True], ids=["local_only", "global_diffuser"])
def test_swapping_two_segments_prompts_swaps_their_judged_subjects(model, global_diffuser):
    for subjects in ([A, B], [B, A]):
        judged, margins = judge(draw(model, subjects, global_diffuser), halves())
        assert judged == [subjects] * len(SEEDS) and margins.min() > MIN_MARGIN, \
            f"prompts {subjects}: {report(judged, margins)}"
