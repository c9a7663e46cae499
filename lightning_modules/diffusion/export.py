"""Writing fine-tuned weights in the formats stock diffusers loads, and loading them back.

    mode               files                                            stock diffusers call
    full               pipeline/ (a whole StableDiffusionPipeline)      StableDiffusionPipeline.from_pretrained
    lora               pytorch_lora_weights.safetensors                 pipe.load_lora_weights(dir)
    textual_inversion  embeddings/<identifier>.safetensors              pipe.load_textual_inversion(file)
    custom_diffusion   pytorch_custom_diffusion_weights.safetensors     `load_custom_diffusion` (below)

LoRA and Custom Diffusion runs also write embeddings/: their identifiers are new tokens,
which the base tokenizer does not have until `load_textual_inversion` adds them.
`finetune.json` records the mode, base model and identifiers; `load_finetuned` reads it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import CustomDiffusionAttnProcessor
from diffusers.utils import convert_state_dict_to_diffusers
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

from lightning_modules.diffusion.adapters import CUSTOM_DIFFUSION_WEIGHTS
from lightning_modules.diffusion.identifiers import IdentifierToken
from lightning_modules.diffusion.pipeline import make_pipeline, save_pipeline

MANIFEST = "finetune.json"
EMBEDDINGS = "embeddings"
PIPELINE = "pipeline"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def save_identifier_embeddings(text_encoder: CLIPTextModel, tokens: Sequence[IdentifierToken], directory: Path) -> list[str]:
    """One diffusers textual-inversion file per identifier: {identifier: embedding row}."""
    table = text_encoder.get_input_embeddings().weight.detach().float().cpu()
    (directory / EMBEDDINGS).mkdir(parents=True, exist_ok=True)
    files = []
    for token in tokens:
        name = f"{EMBEDDINGS}/{token.identifier}.safetensors"
        save_file({token.identifier: table[token.token_id].clone().contiguous()}, str(directory / name))
        files.append(name)
    return files


def save_lora(unet: UNet2DConditionModel, text_encoder: CLIPTextModel | None, directory: Path) -> None:
    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    text_layers = None
    if text_encoder is not None and getattr(text_encoder, "peft_config", None):
        text_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
    StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=unet_layers,
                                              text_encoder_lora_layers=text_layers, weight_name=LORA_WEIGHTS,
                                              safe_serialization=True)


def export_finetuned(components: dict, mode: str, tokens: Sequence[IdentifierToken], directory: Path,
                     manifest: dict) -> dict:
    """Write the trained weights of `mode` into `directory` (created), return the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, object] = {}
    if mode == "full":
        save_pipeline(components, directory / PIPELINE)
        files["pipeline"] = PIPELINE
    else:
        files["embeddings"] = save_identifier_embeddings(components["text_encoder"], tokens, directory)
        if mode == "lora":
            save_lora(components["unet"], components["text_encoder"], directory)
            files["lora"] = LORA_WEIGHTS
        elif mode == "custom_diffusion":
            components["unet"].save_attn_procs(directory, weight_name=CUSTOM_DIFFUSION_WEIGHTS, safe_serialization=True)
            files["custom_diffusion"] = CUSTOM_DIFFUSION_WEIGHTS
    manifest = {**manifest, "mode": mode, "files": files,
                "identifiers": {t.identifier: {"initializer": t.initializer} for t in tokens}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_custom_diffusion(unet: UNet2DConditionModel, path: Path) -> None:
    """Install the trained cross-attention K/V of a Custom Diffusion file (diffusers' key
    layout). diffusers' own `unet.load_attn_procs` reads this file but installs the
    processors only when it is handed the pipeline, and then insists on an entry for every
    attention layer, which safetensors cannot store for the untouched self-attentions."""
    grouped: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in load_file(str(path)).items():
        processor, _, weight = key.partition(".processor.")
        grouped[f"{processor}.processor"][weight] = value
    processors = dict(unet.attn_processors)
    for name, weights in grouped.items():
        if name not in processors:
            raise ValueError(f"{path}: {name} is no attention layer of this UNet")
        key = weights["to_k_custom_diffusion.weight"]
        processor = CustomDiffusionAttnProcessor(train_kv=True, train_q_out="to_q_custom_diffusion.weight" in weights,
                                                 hidden_size=key.shape[0], cross_attention_dim=key.shape[1])
        processor.load_state_dict(weights)
        processors[name] = processor.to(unet.device, unet.dtype)
    unet.set_attn_processor(processors)


def load_finetuned(directory: Path, base: Path | None = None) -> StableDiffusionPipeline:
    """A stock pipeline with a fine-tuning run's weights applied (base defaults to the one
    the run recorded)."""
    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    files = manifest["files"]
    if manifest["mode"] == "full":
        pipe = StableDiffusionPipeline.from_pretrained(directory / files["pipeline"], safety_checker=None,
                                                       requires_safety_checker=False)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(base or manifest["base_model"], safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.load_textual_inversion([str(directory / f) for f in files["embeddings"]])
        if "lora" in files:
            pipe.load_lora_weights(directory, weight_name=files["lora"])
        if "custom_diffusion" in files:
            load_custom_diffusion(pipe.unet, directory / files["custom_diffusion"])
    components = {name: getattr(pipe, name) for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
    return make_pipeline(components)
