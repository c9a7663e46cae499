"""Generation and evaluation throughput on the tiny model: images per second.

Generation, two sides in the same run on the same tiny Stable Diffusion (built from the zoo's
builders, the speed of a trained and an untrained one is the same), the same prompts, seeds,
steps and guidance:

- plain: the stock diffusers pipeline called once per prompt, the way a notebook loops
  (`lightning_modules.diffusion.pipeline.generate`, what class_images and validation use);
- predict: Lightning `predict` over fixed chunks of the prompt set with a generator per item
  (`TextToImageGenerator`, what evaluate_base and personalization use).

Evaluation: `tasks.diffusion.evaluation.evaluate` on the predicted images with judges of the
tiny sizes (CLIP, DINO ViT, the ResNet-34 U-Net segmenter, the classifier), untrained: the
arithmetic, not the verdicts, is what costs.

Run: python benchmarks/generation_throughput.py [--images 64 --steps 20 --batch-size 16 --repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import lightning as L
import numpy as np
import torch

from lightning_modules.diffusion.generation import GatheredImages, TextToImageGenerator, prompt_loader
from lightning_modules.diffusion.pipeline import generate, make_pipeline
from lightning_modules.diffusion.prompt_sets import SubjectEntry, parse_prompt_set
from lightning_modules.diffusion.tiny import TinySizes, tiny_clip, tiny_dino, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.judges import ClassSceneClassifier
from lightning_modules.segmentation import ResNet34UNet
from tasks.core.judges import Judges
from tasks.diffusion.evaluation import evaluate

SCENES = ["on a beach", "in a forest", "at night", "in a city"]


def build(seed: int):
    torch.manual_seed(seed)
    rare = rare_token_pool(64)
    tokenizer = build_word_tokenizer(synthworld_words(), rare, 32)
    pipe = make_pipeline(tiny_text_to_image(tokenizer, TinySizes()))
    subjects = [SubjectEntry(f"{noun}_1", rare[i], noun) for i, noun in enumerate(("cartoon", "dog", "robot", "vase"))]
    clip, clip_processor = tiny_clip(tokenizer, TinySizes())
    dino, dino_processor = tiny_dino(TinySizes())
    names = ["background"] + [s.name for s in subjects]
    judges = Judges(clip.eval(), clip_processor, tokenizer, dino.eval(), dino_processor,
                    ResNet34UNet(len(names), class_names=names, image_size=32).eval(), 32,
                    ClassSceneClassifier(["cartoon", "dog", "robot", "vase"], SCENES).eval())
    return pipe, subjects, judges


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    pipe, subjects, judges = build(0)
    seeds = list(range(max(1, args.images // (len(subjects) * 2))))
    items = parse_prompt_set({"templates": ["a {identifier} {class_noun}", "a {identifier} {class_noun} {scene}"],
                              "scenes": SCENES[:1], "seeds": seeds}).expand(subjects)
    prompts = [item.prompt for item in items]

    def plain():
        return generate(pipe, prompts, seed=0, steps=args.steps, guidance_scale=3.0, progress=False)

    def predicted():
        gathered = GatheredImages()
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[gathered],
                            enable_model_summary=False, enable_checkpointing=False, enable_progress_bar=False,
                            use_distributed_sampler=True)
        trainer.predict(TextToImageGenerator(pipe, args.steps, 3.0), prompt_loader(items, args.batch_size))
        return np.stack([gathered.images[i.index] for i in items])

    results = {"plain": [], "predict": [], "evaluate": []}
    for repeat in range(args.repeats):
        for name, fn in ((("plain", plain), ("predict", predicted)) if repeat % 2 == 0
                         else (("predict", predicted), ("plain", plain))):
            seconds, images = timed(fn)
            results[name].append(len(items) / seconds)
            if name == "predict":
                references = {s.name: images[:4] for s in subjects}
                seconds, _ = timed(lambda: evaluate(judges, items, images, references))
                results["evaluate"].append(len(items) / seconds)
    best = {name: max(values) for name, values in results.items()}
    print(f"{len(items)} images, {args.steps} DDIM steps, guidance 3.0, torch threads {torch.get_num_threads()}")
    print(f"plain pipeline, one prompt per call : {best['plain']:7.2f} images/s")
    print(f"Lightning predict, chunks of {args.batch_size:<3}   : {best['predict']:7.2f} images/s "
          f"(x{best['predict'] / best['plain']:.2f} the plain loop)")
    print(f"evaluation (CLIP-I/T, DINO, judges)  : {best['evaluate']:7.2f} images/s")


if __name__ == "__main__":
    main()
