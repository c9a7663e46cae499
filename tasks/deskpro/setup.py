"""What the DeSKPro stages share: params -> dataset, restorer, loaders, models, training, evaluation."""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader

from lightning_modules.core.resumable import ResumableBatches, ResumableLoader
from lightning_modules.deskpro import (
    DeSKProModule,
    DeSKProNet,
    DeSKProWeights,
    IdentityBatchSampler,
    Optimization,
    PersonDataset,
    PersonRecord,
    ReidStream,
    clean_face_restorer,
    identity_restorer,
    module_restorer,
)
from lightning_modules.deskpro.data import Restorer
from lightning_modules.deskpro.evaluation import Embeddings, extract
from tasks.core.params import Params, Variant
from tasks.core.errors import InputDataError
from lightning_modules.data.market1501 import ReidFolder, read_reid_folder

TEACHER_DIR = Path("models") / "reid_teacher"


def teacher_dir(params: Params) -> Path:
    return params.paths.data / TEACHER_DIR


def load_folder(params: Params) -> ReidFolder:
    return read_reid_folder(params.reid.dataset_dir)


def folder_digest(folder: ReidFolder) -> str:
    """Names of every image: a resumable checkpoint must belong to the same data."""
    names = [str(r.image) for r in folder.train] + [str(r.image) for q, g in folder.protocols.values() for r in q + g]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def restorer(params: Params, records: Sequence[PersonRecord]) -> Restorer:
    """The face restoration the teacher sees (the paper's GPEN), chosen by models.face_restorer."""
    choice, size = params.models.face_restorer, params.reid.face_size
    if choice == "bicubic":
        return identity_restorer
    if choice == "clean":
        missing = next((r for r in records if r.face_box is not None and r.hr_face is None), None)
        if missing is not None:
            raise InputDataError(f"models.face_restorer: clean needs a clean face for every face, none for "
                                 f"{missing.image} (faces/<image>.png); use bicubic or a restorer model")
        return clean_face_restorer(size)
    return module_restorer(load_restorer_model(Path(choice)), size)


def load_restorer_model(path: Path) -> torch.nn.Module:
    """An exported face-restoration network: torch.export's .pt2 (input (1, 3, face_size, face_size)),
    or a TorchScript file. Neither format runs pickled Python code."""
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        with warnings.catch_warnings():  # TorchScript still loads; its deprecation is not the user's doing
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError, zipfile.BadZipFile) as err:
        raise InputDataError(f"models.face_restorer: {path}: not a torch.export (.pt2) or TorchScript model "
                             f"({str(err).splitlines()[0]})") from None


def person_dataset(params: Params, folder: ReidFolder, records: Sequence[PersonRecord], *, train: bool,
                   restore: Optional[Restorer]) -> PersonDataset:
    return PersonDataset(records, params.reid.image_size, params.reid.face_size, folder.cloth_classes,
                         labels=folder.train_labels, flip=train, restorer=restore, seed=params.seed)


def train_loader(params: Params, dataset: PersonDataset) -> DataLoader:
    cfg = params.reid
    sampler = IdentityBatchSampler([r.pid for r in dataset.records], cfg.identities_per_batch,
                                   cfg.images_per_identity, seed=params.seed)
    # Resumable mid-epoch; workers are re-created each epoch so that they see the dataset's new epoch.
    return ResumableLoader(dataset, ResumableBatches(sampler, epoch_listeners=[dataset.set_epoch]),
                           num_workers=params.trainer.num_workers)


def eval_loader(params: Params, dataset: PersonDataset) -> DataLoader:
    return DataLoader(dataset, batch_size=params.evaluate_reid.batch_size, shuffle=False,
                      num_workers=params.trainer.num_workers)


def optimization(params: Params) -> Optimization:
    cfg = params.reid
    return Optimization(cfg.lr, cfg.weight_decay, cfg.label_smoothing, cfg.triplet_margin)


def new_stream(params: Params, num_classes: int, csa: bool = False) -> ReidStream:
    try:
        return ReidStream(num_classes, params.models.reid_backbone, params.reid.embedding_dim, csa=csa,
                          backbone_weights=params.models.reid_backbone_weights)
    except (KeyError, RuntimeError, OSError) as err:
        raise InputDataError(f"models.reid_backbone_weights: {err}") from None


def load_teacher(params: Params) -> ReidStream:
    directory = teacher_dir(params)
    if not directory.is_dir():
        raise InputDataError(f"{directory}: missing; run the teacher stage first (dvc repro train_reid_teacher)")
    return ReidStream.from_pretrained(directory)


def deskpro_module(params: Params, variant: Variant, num_classes: int) -> tuple[DeSKProModule, DeSKProNet]:
    """The training module of a Table 3 row and the inference network that shares its streams."""
    cfg = params.reid
    global_stream = new_stream(params, num_classes, csa=variant.csa) if variant.global_stream else None
    student = new_stream(params, num_classes) if variant.face_stream == "student" else None
    teacher = load_teacher(params) if variant.face_stream == "teacher" or variant.knowledge_propagation else None
    weights = DeSKProWeights(cfg.cloth_mask_epsilon, cfg.attention_loss_weight, cfg.temperature,
                             cfg.alpha if variant.knowledge_propagation else 0.0)
    module = DeSKProModule(num_classes, global_stream, student,
                           teacher if variant.knowledge_propagation else None, weights,
                           variant.attention_loss, optimization(params))
    face = student if variant.face_stream == "student" else teacher
    net = DeSKProNet(global_stream, face, variant.face_stream, cfg.image_size, cfg.face_size)
    return module, net


def needs_restored_faces(variant: Variant) -> bool:
    return variant.face_stream == "teacher" or variant.knowledge_propagation


# models.face_restorer's oracle: the clean face renders themselves, a perfect restoration.
def embed_protocols(params: Params, folder: ReidFolder, net: DeSKProNet
                    ) -> dict[str, tuple[Embeddings, Embeddings, PersonDataset, PersonDataset]]:
    """Query and gallery embeddings of every protocol (restored faces only for DeSKPro*)."""
    restore = restorer(params, [r for q, g in folder.protocols.values() for r in q + g]) \
        if net.needs_restorer else None
    out = {}
    for name, (query, gallery) in folder.protocols.items():
        q_set = person_dataset(params, folder, query, train=False, restore=restore)
        g_set = person_dataset(params, folder, gallery, train=False, restore=restore)
        out[name] = (extract(net, eval_loader(params, q_set)), extract(net, eval_loader(params, g_set)), q_set, g_set)
    return out
