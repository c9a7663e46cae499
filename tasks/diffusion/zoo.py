"""Stage `zoo`: the base models, by path.

For every model that params.zoo names `tiny` this builds the small diffusers / transformers
version (lightning_modules/diffusion/tiny.py) and saves it with `save_pretrained` under
paths.data/zoo/<name>/; a model given as a local directory is loaded once to check it, and
recorded where it is (never copied). Later stages read the record (tasks/zoo_paths.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import mlflow

from lightning_modules.diffusion.pipeline import load_text_to_image, save_pipeline
from lightning_modules.diffusion.tiny import TinySizes, tiny_clip, tiny_dino, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, save_rare_tokens, synthworld_words
from tasks.core.params import TINY, Params
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import stage_params
from tasks.core.tracking import stage_run
from tasks.core.models import write_record, zoo_dir

STAGE = "zoo"


def tiny_sizes(params: Params) -> TinySizes:
    cfg = params.zoo
    return TinySizes(resolution=cfg.resolution, unet_channels=tuple(cfg.unet_channels),
                     vae_channels=tuple(cfg.vae_channels), text_width=cfg.text_width,
                     text_layers=cfg.text_layers, vision_width=cfg.vision_width, vision_layers=cfg.vision_layers,
                     patch_size=cfg.patch_size, projection_dim=cfg.text_width)


def tiny_tokenizer(params: Params):
    rare = rare_token_pool(params.zoo.rare_tokens)
    return build_word_tokenizer(synthworld_words() + list(params.zoo.extra_words), rare, params.zoo.max_length), rare


def check_external(name: str, path: Path) -> None:
    """Load a user's model once so that a wrong directory fails here, naming the key."""
    from transformers import AutoImageProcessor, AutoModel, CLIPModel

    try:
        if name == "text_to_image":
            load_text_to_image(path)
        elif name == "clip":
            CLIPModel.from_pretrained(path)
            AutoImageProcessor.from_pretrained(path)
        else:
            AutoModel.from_pretrained(path)
            AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise InputDataError(f"zoo.{name}: {path} does not load ({first})") from None


def build_tiny(name: str, params: Params, directory: Path) -> dict:
    tokenizer, rare = tiny_tokenizer(params)
    sizes = tiny_sizes(params)
    if name == "text_to_image":
        components = tiny_text_to_image(tokenizer, sizes)
        save_pipeline(components, directory)
        save_rare_tokens(directory / "tokenizer", rare)
        count = sum(p.numel() for key in ("unet", "vae", "text_encoder") for p in components[key].parameters())
    elif name == "clip":
        model, processor = tiny_clip(tokenizer, sizes)
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        count = sum(p.numel() for p in model.parameters())
    else:
        model, processor = tiny_dino(sizes)
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        count = sum(p.numel() for p in model.parameters())
    return {"parameters": count} if name == "dino" else {"parameters": count, "vocabulary": len(tokenizer)}


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    sources = {"text_to_image": params.zoo.text_to_image, "clip": params.zoo.clip, "dino": params.zoo.dino}
    for name, source in sources.items():
        if source != TINY:
            check_external(name, Path(source))
    L.seed_everything(params.seed, verbose=False)
    target = zoo_dir(params)
    with stage_run(STAGE, params), atomic_outputs(target, params.paths.metrics / f"{STAGE}.json") as (tmp, tmp_metrics):
        summary = {}
        for name, source in sources.items():
            if source == TINY:
                info = build_tiny(name, params, tmp / name / "model")
                # The record names the final location, where the directory lands after the rename.
                write_record(tmp / name, target / name / "model", tiny=True)
            else:
                info = {}
                write_record(tmp / name, Path(source).resolve(), tiny=False)
            summary[name] = {"tiny": source == TINY, **info}
            mlflow.log_params({f"zoo.{name}.source": source})
        tmp_metrics.write_text(json.dumps(summary, indent=2) + "\n")
        for name, info in summary.items():
            if "parameters" in info:
                mlflow.log_metric(f"{name}.parameters", info["parameters"])


if __name__ == "__main__":
    run_stage_main(main)
