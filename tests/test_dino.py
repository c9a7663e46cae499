"""DINO self-distillation of the tiny ViT (stage `pretrain_dino`): the loss, the teacher's EMA and
the centre on tiny tensors, the multi-crop views, the retrieval measure, and the stage as the
smoke `dvc repro` runs it (trained, or a real model recorded and skipped)."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml

from lightning_modules.core.losses import NonFiniteLossError
from lightning_modules.diffusion.dino import DinoPretrainer, DinoSettings, dino_loss, teacher_momentum
from lightning_modules.diffusion.multicrop import MultiCrop, MultiCropSettings, random_backgrounds
from lightning_modules.diffusion.subject_retrieval import subject_retrieval
from lightning_modules.diffusion.tiny import TinySizes, tiny_dino
from tests.conftest import edit_params

SETTINGS = DinoSettings(steps=10, lr=1e-3, weight_decay=0.04, warmup_steps=2, out_dim=16, head_hidden_dim=32,
                        bottleneck_dim=8, teacher_temperature=0.04, student_temperature=0.1, momentum=0.9,
                        center_momentum=0.8)


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def module(one_thread) -> DinoPretrainer:
    torch.manual_seed(0)
    backbone, _ = tiny_dino(TinySizes(resolution=16, vision_width=32, vision_layers=1, patch_size=4))
    crops = MultiCrop(MultiCropSettings(global_size=16, local_size=8, local_crops=2, background_swap=0.5),
                      backgrounds=torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    return DinoPretrainer(backbone, crops, SETTINGS)


def batch(size: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"pixels": torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=generator),
            "mask": (torch.rand(size, 1, 32, 32, generator=generator) > 0.5).to(torch.uint8) * 255}


def test_the_loss_is_the_mean_cross_entropy_over_pairs_of_different_views():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, 7, generator=generator), torch.randn(2, 3, 7, generator=generator)
    center = torch.randn(7, generator=generator)
    terms = []
    for t, s in itertools.product(range(2), range(5)):
        if t == s:   # a view is never its own target
            continue
        for b in range(3):
            target = [math.exp((teacher[t, b, k] - center[k]) / 0.04) for k in range(7)]
            target = [p / sum(target) for p in target]
            log_norm = math.log(sum(math.exp(student[s, b, k] / 0.1) for k in range(7)))
            terms.append(-sum(target[k] * (student[s, b, k] / 0.1 - log_norm) for k in range(7)))
    expected = sum(terms) / len(terms)
    assert dino_loss(student, teacher, center, 0.1, 0.04).item() == pytest.approx(float(expected), rel=1e-4)


def test_the_teacher_gets_no_gradient_and_follows_the_student_by_ema(module):
    loss = module.compute_loss(batch()).loss
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.student.parameters())
    with torch.no_grad():   # a student step
        for p in module.student.parameters():
            p.add_(0.1 * p.grad)
    teacher = [p.clone() for p in module.teacher.parameters()]
    module.update_teacher(0.9)
    for old, new, student in zip(teacher, module.teacher.parameters(), module.student.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * student)
    assert teacher_momentum(0, 10, 0.9) == pytest.approx(0.9) and teacher_momentum(10, 10, 0.9) == 1.0
    assert teacher_momentum(5, 10, 0.9) == pytest.approx(0.95)   # halfway up the cosine


def test_the_centre_is_an_ema_of_the_teachers_batch_mean(module):
    output = module.compute_loss(batch()).teacher_output
    assert output.shape == (2, 4, SETTINGS.out_dim)
    module.center.fill_(1.0)
    module.update_center(output)
    torch.testing.assert_close(module.center, 0.8 * torch.ones(SETTINGS.out_dim) + 0.2 * output.mean((0, 1)))


# training_step outside a Trainer: its self.log calls have nowhere to go
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_optimises_compute_loss_and_refuses_a_non_finite_one(module):
    torch.manual_seed(3)
    computed = module.compute_loss(batch()).loss
    torch.manual_seed(3)   # the same views: training_step adds the check, the centre and logging
    assert torch.equal(module.training_step(batch(), 0), computed)
    module.center.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="DINO loss became nan"):
        module.training_step(batch(), 0)


def test_views_have_the_model_sizes_and_the_teacher_sees_the_subject_alone(one_thread):
    crops = MultiCrop(MultiCropSettings(global_size=16, local_size=8, local_crops=3))
    views = crops(batch()["pixels"])   # no masks: DINO's own views, the same for both networks
    assert [v.shape[-1] for v in views.student] == [16, 16, 8, 8, 8] and all(v.shape[:2] == (4, 3) for v in views.student)
    assert views.teacher[0] is views.student[0] and views.teacher[1] is views.student[1]

    scene = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    scene[:, 0] = 255   # a red scene
    crops = MultiCrop(MultiCropSettings(global_size=16, local_size=8, local_crops=1, color_jitter=0.0,
                                        background_swap=1.0), backgrounds=scene)
    pixels = batch()["pixels"]
    nothing = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    everything = torch.full((4, 1, 32, 32), 255, dtype=torch.uint8)
    views = crops(pixels, nothing)   # no subject: the student sees the scene, the teacher a blank
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    assert all(torch.allclose(v, red.expand_as(v), atol=1e-5) for v in views.student)
    assert all(torch.allclose(v, torch.zeros_like(v), atol=1e-5) for v in views.teacher)
    views = crops(pixels, everything)   # all subject: nothing to swap, both see the picture
    assert all(torch.allclose(s, t, atol=1e-5) for s, t in zip(views.student, views.teacher))


def test_background_swaps_draw_scenes_by_probability():
    images, scenes = torch.rand(4, 3, 8, 8), torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    scene = scenes[0].float() / 255
    for picked in random_backgrounds(images, scenes, probability=1.0):   # the scene, flipped or not
        assert torch.allclose(picked, scene) or torch.allclose(picked, scene.flip(-1))
    assert torch.equal(random_backgrounds(images, scenes, probability=0.0), images)


def test_subject_retrieval_on_known_embeddings():
    embeddings = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]]), dim=-1)
    result = subject_retrieval(embeddings, ["a", "a", "b", "b", "c"])
    # a, a, b, b find their twin; c has no other image of itself and is no query
    assert result["top1"] == 1.0
    similarity = embeddings @ embeddings.T
    same = (similarity[0, 1] + similarity[2, 3]) / 2
    different = similarity[[0, 0, 1, 1, 0, 1, 2, 3], [2, 3, 2, 3, 4, 4, 4, 4]].mean()
    assert result["cosine_gap"] == pytest.approx(float(same - different), abs=1e-6)


@pytest.mark.slow
def test_the_smoke_repro_trains_the_tiny_vit_and_measures_it(smoke_repo):
    from transformers import ViTModel

    from tests.test_reid_pipeline import runs_by_stage

    workspace, _ = smoke_repo
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    metrics = json.loads((workspace / "metrics" / "pretrain_dino.json").read_text())
    assert metrics["steps"] == params["pretrain_dino"]["steps"]
    assert metrics["views_per_image"] == 2 + params["pretrain_dino"]["local_crops"]
    # every image of every subject (the renders, with their masks), on the synthesized scenes
    assert metrics["training_images"] == params["synthesize"]["num_subjects"] * params["synthesize"]["images_per_subject"]
    assert metrics["scenes"] == params["synthesize"]["num_scenes"]
    retrieval = metrics["heldout_subject_retrieval"]   # the augment stage's val and test images
    assert retrieval["splits"] == ["val", "test"]
    assert retrieval["images"] == params["augment"]["val_count"] + params["augment"]["test_count"]
    assert all(0 <= retrieval["top1"][when] <= 1 for when in ("before", "after"))
    record = json.loads((workspace / "data" / "models" / "dino" / "model.json").read_text())
    assert record["pretrained"] and record["path"].endswith("data/models/dino/model")
    vit = ViTModel.from_pretrained(workspace / "data" / "models" / "dino" / "model")
    assert vit.config.image_size == params["zoo"]["resolution"]
    assert (workspace / "plots" / "pretrain_dino" / "train_loss.csv").is_file()
    assert not (workspace / "checkpoints" / "pretrain_dino").exists() or \
        not any((workspace / "checkpoints" / "pretrain_dino").iterdir())
    (run,) = runs_by_stage(workspace)["pretrain_dino"]
    assert "heldout_subject_retrieval.top1.after" in run.data.metrics and "steps_per_second" in run.data.metrics


@pytest.mark.slow
def test_a_real_dino_is_recorded_and_not_trained(smoke_repo, augmented_copy, in_process):
    workspace, _ = smoke_repo
    real = augmented_copy / "real_dino"   # stands in for facebook/dino-vits16
    shutil.copytree(workspace / "data" / "models" / "dino" / "model", real)
    edit_params(augmented_copy / "params.yaml", **{"zoo.dino": str(real)})
    in_process("zoo", augmented_copy)
    in_process("pretrain_dino", augmented_copy)
    record = json.loads((augmented_copy / "data" / "models" / "dino" / "model.json").read_text())
    assert record == {"path": str(real.resolve()), "pretrained": False}
    assert json.loads((augmented_copy / "metrics" / "pretrain_dino.json").read_text()) == {"skipped": True}
    assert not (augmented_copy / "checkpoints" / "pretrain_dino").exists()
