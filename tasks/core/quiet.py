"""A console that shows the project's own progress and real warnings, not library noise.

Each entry below is a message a library prints on every run that asks nothing of the user:
Lightning's hardware inventory and product tips, transformers' weight-loading bar, its note that a frozen sub-module (a VAE,
a teacher) is in eval mode, which this project does on purpose, MLflow's database set-up
lines, diffusers' note that a UNet-only LoRA has no text-encoder weights, and a torch deprecation raised inside Lightning's own code. Each is silenced at its
source by its exact text; every other warning and log line still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LIGHTNING_INFO_NOISE = (
    "GPU available:", "TPU available:", "HPU available:",   # the hardware comes from params.trainer
    "💡 Tip:",                                              # product tips
    "was configured so 100% of the batches",                # restates the limit_*_batches we passed
    "Loading `train_dataloader` to estimate number of stepping batches",
)
QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration",   # "Creating initial MLflow database tables..."
                 "lightning.pytorch.trainer.connectors.signal_connector",  # "Received SIGTERM": the stage says it
                 "mlflow.system_metrics")   # "Started monitoring system metrics", at every training stage
# diffusers notes, on loading a LoRA that adapts the UNet alone (the default fine-tuning), that the
# text encoder has no LoRA weights: what was intended.
# Loading an identifier's embedding grows the vocabulary, and transformers explains how it
# initialises the new rows: the loaded embedding overwrites them at once.
DIFFUSERS_NOISE = {
    "diffusers.loaders.lora_base": ("No LoRA keys associated to CLIPTextModel",),
    "diffusers.loaders.peft": ("No LoRA keys associated to CLIPTextModel",),
    "transformers.modeling_utils": ("The new embeddings will be initialized from a multivariate normal",),
}
# Loggers whose errors repeat, as a traceback, an exception the stage itself reports in one line.
SILENT_LOGGERS = ("mlflow.store.db.utils",)
WARNING_NOISE = (
    # torch deprecates LeafSpec; Lightning's own pytree helper still checks for it
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # Lightning's own all_gather (generation gathers images across ranks) calls a torch function
    # torch has deprecated
    (r"torch\.distributed\.nn\.functional\.all_gather is deprecated", Warning),
    # frozen VAEs and teachers are in eval mode on purpose
    (r"Found \d+ module\(s\) in eval mode at the start of training", Warning),
    # a GAN's manual optimization (train_stylegan) is checkpointed at the end of the whole step,
    # after both optimizers: the state a resume needs, not the "pre-optimization" one
    (r"Using ModelCheckpoint with manual optimization and every_n_train_steps", Warning),
)


class _DropLines(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence_known_noise() -> None:
    # transformers draws a "Loading weights" bar for every from_pretrained of a few-MB model;
    # the stages' own bars (training, generation) are what shows progress.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "diffusers" in sys.modules:   # its "Loading pipeline components" bar, likewise
        sys.modules["diffusers"].utils.logging.disable_progress_bar()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(LIGHTNING_INFO_NOISE))
    for name, fragments in DIFFUSERS_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(fragments))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SILENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for message, category in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
