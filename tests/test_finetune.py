"""Diffusion personalization as it really runs: the zoo and pretraining stages of the smoke
`dvc repro`, each fine-tuning mode on the pretrained tiny model, stock diffusers loading
the outputs, DDP with 2 CPU processes, kill and resume, and the bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from diffusers import StableDiffusionPipeline
from torch.utils.data import DataLoader

from lightning_modules.diffusion.data import CaptionedImage, DreamBoothPairs, load_pixels
from lightning_modules.diffusion.export import export_finetuned, load_finetuned
from lightning_modules.diffusion.finetune import FinetuneSettings, SubjectFinetuner
from lightning_modules.diffusion.identifiers import add_identifier_tokens
from lightning_modules.diffusion.pipeline import generate, load_text_to_image, make_pipeline
from lightning_modules.diffusion.specificity import guidance_directions, probe_latents, prompt_shift, specificity
from lightning_modules.diffusion.tokenizer import load_rare_tokens
from tests.conftest import python_stage, stopped, workspace_with_data, write_params
from tests.test_reid_pipeline import runs_by_stage

pytestmark = pytest.mark.slow

DIFFUSION_DATA = ("augmented", "zoo", "models/base", "models/clip", "class_images")


def draw(pipe, prompts):
    return generate(pipe, prompts, seed=7, steps=5, guidance_scale=3.0, progress=False).astype(np.float64)


def test_zoo_pretraining_and_finetune_run_in_the_smoke_repro(smoke_repo):
    workspace, _ = smoke_repo
    zoo = json.loads((workspace / "metrics" / "zoo.json").read_text())
    assert all(zoo[name]["tiny"] for name in ("text_to_image", "clip", "dino"))
    for name in ("text_to_image", "clip", "dino"):
        assert (workspace / "data" / "zoo" / name / "model" / "config.json").is_file() or \
            (workspace / "data" / "zoo" / name / "model" / "model_index.json").is_file()
    base = json.loads((workspace / "metrics" / "pretrain_base.json").read_text())
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert base["denoiser"]["steps"] == params["pretrain_base"]["steps"]
    assert base["vae"]["steps"] == params["pretrain_base"]["vae_steps"]
    clip = json.loads((workspace / "metrics" / "pretrain_clip.json").read_text())
    retrieval = clip["heldout_caption_retrieval_top1"]   # measured on the augment stage's val images
    with (workspace / "data" / "augmented" / "manifest.csv").open() as f:
        splits = [row["split"] for row in csv.DictReader(f)]
    assert retrieval["split"] == "val" and retrieval["images"] == splits.count("val") > 0
    assert clip["training_images"] == splits.count("train")
    assert retrieval["after"] > retrieval["before"]
    finetune = json.loads((workspace / "metrics" / "finetune.json").read_text())
    assert finetune["mode"] == "lora" and finetune["steps"] == params["finetune"]["max_steps"]
    drift = finetune["language_drift"]   # every identifier prompt, every class prompt, scene prompts
    assert {"a sks cartoon", "a cartoon", "a dog", "a robot", "a vase"} <= set(drift["prompts"])
    assert drift["identifier_shift"] > 0 and drift["specificity"] > 0
    out = workspace / "data" / "models" / "finetuned"
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    with (workspace / "data" / "class_images" / "prompts.csv").open() as f:
        assert {row["prompt"] for row in csv.DictReader(f)} == {"a cartoon", "a dog", "a robot", "a vase"}
    for picture in ("pretrain_base/samples.png", "class_images/class_images.png", "finetune/validation.png"):
        assert (workspace / "plots" / picture).is_file()
    runs = runs_by_stage(workspace)
    (run,) = runs["finetune"]
    artifacts = {a.path for a in __import__("mlflow").MlflowClient(
        f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}").list_artifacts(run.info.run_id, "finetune/validation")}
    # validation every 4 steps over 8 steps: at step 4 and step 8
    assert artifacts == {"finetune/validation/step_000004.png", "finetune/validation/step_000008.png"}


def test_lora_output_loads_in_a_stock_diffusers_pipeline(smoke_repo):
    workspace, _ = smoke_repo
    out = workspace / "data" / "models" / "finetuned"
    manifest = json.loads((out / "finetune.json").read_text())
    base = workspace / manifest["base_model"]
    prompts = [manifest["prompts"][name] for name in sorted(manifest["prompts"])][:1] + ["a dog in a forest"]

    stock = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    plain = draw(make_pipeline({k: getattr(stock, k) for k in ("unet", "vae", "text_encoder", "tokenizer",
                                                                 "scheduler")}), prompts[1:])
    stock.load_textual_inversion([str(out / f) for f in manifest["files"]["embeddings"]])
    stock.load_lora_weights(out, weight_name="pytorch_lora_weights.safetensors")
    components = {k: getattr(stock, k) for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
    loaded = draw(make_pipeline(components), prompts)
    ours = draw(load_finetuned(out, base=base), prompts)
    np.testing.assert_array_equal(loaded, ours)
    assert np.abs(loaded[1] - plain[0]).mean() > 0  # the adapters are really applied


# Per mode: the learning rate of what it trains (the identifier rows always learn at 5e-2);
# Custom Diffusion keeps its K/V steps small, as its paper does (1e-5 x batch size).
MODE_LR = {"full": 1e-4, "lora": 5e-3, "textual_inversion": 1e-3, "custom_diffusion": 1e-4}


def finetune_setup(workspace: Path, prior_preservation: bool):
    """The smoke base with identifier tokens added, and the subjects' training pairs (with the
    class images when prior_preservation), from seed 0."""
    base = workspace / "data" / "models" / "base" / "pipeline"
    with (workspace / "data" / "augmented" / "manifest.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    L.seed_everything(0, verbose=False)
    components = load_text_to_image(base)
    tokens = add_identifier_tokens(components["tokenizer"], components["text_encoder"],
                                   sorted({r["identifier"] for r in rows}), load_rare_tokens(base / "tokenizer"))
    class_images = {}
    if prior_preservation:
        class_images = {p.name: [CaptionedImage(i, f"a {p.name}") for i in sorted(p.glob("*.png"))]
                        for p in (workspace / "data" / "class_images").iterdir() if p.is_dir()}
    dataset = DreamBoothPairs([CaptionedImage(workspace / "data" / "augmented" / r["image"],
                                              f"a {r['identifier']} {r['class_noun']}") for r in rows],
                              [r["class_noun"] for r in rows], class_images, components["tokenizer"], 32)
    return base, rows, components, tokens, dataset


def finetuner(components: dict, tokens, mode: str, lr: float, **options) -> SubjectFinetuner:
    settings = FinetuneSettings(mode=mode, prior_preservation_weight=1.0, lr=lr, text_encoder_lr=1e-4,
                                embedding_lr=5e-2, weight_decay=1e-2, train_identifier_embeddings=True, **options)
    return SubjectFinetuner(components["unet"], components["vae"], components["text_encoder"],
                            components["scheduler"], settings, identifier_ids=[t.token_id for t in tokens])


@pytest.mark.parametrize("mode", ["full", "lora", "textual_inversion", "custom_diffusion"])
def test_each_mode_learns_the_identifier_prompt_and_not_other_prompts(smoke_repo, tmp_path, mode):
    workspace, _ = smoke_repo
    base, rows, components, tokens, dataset = finetune_setup(workspace, prior_preservation=True)
    first = rows[0]
    identifier_prompt = f"a {first['identifier']} {first['class_noun']}"
    # other prompts: every class prompt (prior preservation's target) and scene-only prompts
    others = sorted({f"a {r['class_noun']}" for r in rows}) + sorted({r["scene_caption"] for r in rows})
    before = draw(make_pipeline(components), [identifier_prompt, others[-1]])
    subject_pixels = torch.stack([load_pixels(workspace / "data" / "augmented" / r["image"], 32)
                                  for r in rows if r["subject"] == first["subject"]][:8])
    noisy, timesteps = probe_latents(components["vae"], components["scheduler"], subject_pixels, seed=0)

    def directions():
        return guidance_directions(components["unet"], components["text_encoder"], components["tokenizer"], noisy,
                                   timesteps, [identifier_prompt, *others])

    directions_before = directions()
    module = finetuner(components, tokens, mode, MODE_LR[mode])
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    L.Trainer(max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, DataLoader(dataset, batch_size=4, shuffle=True))
    for name, p in module.named_parameters():   # what the mode freezes stays exactly as it was
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    after = draw(make_pipeline(components), [identifier_prompt, others[-1]])
    assert np.abs(after[0] - before[0]).mean() > 0.1, "the identifier prompt's picture did not change"

    # What the identifier prompt steers towards moved; what the other prompts steer towards
    # moved far less (no language drift), with the prompt-agnostic unconditional drift left out.
    shift = prompt_shift(directions_before, directions())
    result = specificity(shift, [identifier_prompt], others)
    if mode == "textual_inversion":   # only identifier rows trained: other prompts are untouched
        assert result["largest_other_shift"] == 0.0
        np.testing.assert_array_equal(after[1], before[1])
    else:
        assert result["specificity"] > 1.5, shift
    export_finetuned(components, mode, tokens, tmp_path / mode, {"base_model": str(base)})
    reloaded = draw(load_finetuned(tmp_path / mode), [identifier_prompt, others[-1]])
    # The same pictures; a reloaded pipeline may round a float-level difference to the other
    # grey level in a rare pixel (seen: 1 of 6144 values, custom_diffusion), never more.
    assert np.abs(reloaded.astype(int) - after.astype(int)).max() <= 1
    assert (reloaded != after).mean() < 1e-3


def test_bf16_mixed_precision_accumulation_and_gradient_checkpointing(smoke_repo):
    """The memory/precision knobs of the finetune params: bf16 autocast really runs the UNet in
    bf16, two batches make one optimizer step, and checkpointed blocks still train."""
    workspace, _ = smoke_repo
    _, _, components, tokens, dataset = finetune_setup(workspace, prior_preservation=False)
    module = finetuner(components, tokens, "lora", 1e-3, gradient_checkpointing=True)
    assert components["unet"].is_gradient_checkpointing
    dtypes = set()
    components["unet"].conv_in.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    lora = {n: p.detach().clone() for n, p in module.named_parameters() if "lora" in n}
    batches = []
    trainer = L.Trainer(max_steps=2, accumulate_grad_batches=2, precision="bf16-mixed", accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[L.pytorch.callbacks.LambdaCallback(
                            on_train_batch_end=lambda *a: batches.append(a[0].global_step))])
    trainer.fit(module, DataLoader(dataset, batch_size=4, shuffle=True))
    assert dtypes == {torch.bfloat16}
    assert batches == [0, 1, 1, 2]   # an optimizer step every second batch
    assert all(p.dtype == torch.float32 for p in module.parameters())   # master weights stay fp32
    assert all(not torch.equal(p, lora[n]) for n, p in module.named_parameters() if n in lora)


@pytest.fixture()
def diffusion_copy(smoke_repo, tmp_path) -> Path:
    return workspace_with_data(smoke_repo[0], tmp_path / "ws", DIFFUSION_DATA)


def test_lora_finetune_runs_ddp_on_cpu_with_two_processes(diffusion_copy):
    def ddp(params):
        params["trainer"].update(strategy="ddp", devices=2, accelerator="cpu")
        params["finetune"].update(max_steps=3, validation_every_n_steps=0)
    result = python_stage("finetune", diffusion_copy, "--params", write_params(diffusion_copy, "ddp.yaml", ddp))
    log = result.stdout + result.stderr
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    metrics = json.loads((diffusion_copy / "metrics" / "finetune.json").read_text())
    assert metrics["steps"] == 3 and metrics["mode"] == "lora"
    assert (diffusion_copy / "data" / "models" / "finetuned" / "pytorch_lora_weights.safetensors").is_file()
    assert [len(v) for v in runs_by_stage(diffusion_copy).values()] == [1]  # rank 1 opened no run


def _collide(workspace: Path) -> None:
    manifest = workspace / "data" / "augmented" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",sks,", ",dog,"))


def _drop_subject(workspace: Path) -> None:
    manifest = workspace / "data" / "augmented" / "manifest.csv"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join([lines[0]] + [line for line in lines[1:] if ",sks," not in line]))


@pytest.mark.parametrize("case, expected", [
    ("collision", "identifier 'dog' collides with a word the tokenizer already has"),
    ("no_images", "has no training images"),
    # a weight that would overflow the loss is refused by its bound before any work (the loss
    # guard itself: tests/test_diffusion_models.py)
    ("overflowing_weight", "finetune.prior_preservation_weight: Input should be less than or equal to 1000"),
])
def test_bad_input_is_one_line_and_writes_nothing(diffusion_copy, in_process, capsys, case, expected):
    params = "params.yaml"
    if case == "collision":
        _collide(diffusion_copy)
    elif case == "no_images":
        _drop_subject(diffusion_copy)
    else:
        params = write_params(diffusion_copy, "inf.yaml",
                              lambda p: p["finetune"].update(prior_preservation_weight=1e39))
    assert expected in stopped(in_process, capsys, "finetune", diffusion_copy, "--params", params)
    assert not (diffusion_copy / "data" / "models" / "finetuned").exists()
    assert not (diffusion_copy / "metrics" / "finetune.json").exists()
