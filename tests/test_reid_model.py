"""DeSKPro's parts on tiny inputs: OSNet split, CSA, MBN outputs, eq. 3-7, P x K sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.core.losses import NonFiniteLossError
from lightning_modules.deskpro import (
    DeSKProModule,
    DeSKProNet,
    DeSKProWeights,
    FaceTeacherModule,
    IdentityBatchSampler,
    ReidStream,
)
from lightning_modules.deskpro.backbone import build_osnet, split_osnet
from lightning_modules.deskpro.deskpro import two_stream_distance
from lightning_modules.deskpro.losses import (
    cloth_irrelevant_target,
    facial_knowledge_propagation_loss,
    mask_guided_attention_loss,
)
from lightning_modules.deskpro.mbn import BRANCH_VECTORS, TRIPLET_VECTORS


def test_osnet_is_cut_after_the_first_layer_of_conv3():
    osnet = build_osnet("osnet_x0_25")
    stem, tail = split_osnet(osnet)
    assert stem[-1] is osnet.conv3[0]
    assert tail[0] is osnet.conv3[1] and tail[-1] is osnet.conv5
    x = torch.rand(2, 3, 64, 32)
    osnet.eval()
    with torch.no_grad():  # stem + tail is the original trunk, layer for layer
        assert torch.allclose(tail(stem(x)), osnet.conv5(osnet.conv4(osnet.conv3(osnet.conv2(osnet.maxpool(osnet.conv1(x)))))))


def test_stream_outputs_follow_lightmbn():
    stream = ReidStream(num_classes=7, embedding_dim=16, csa=True).train()
    out = stream(torch.rand(4, 3, 64, 32))
    assert len(out.mbn.logits) == len(BRANCH_VECTORS) and all(l.shape == (4, 7) for l in out.mbn.logits)
    assert len(out.mbn.triplet_features) == len(TRIPLET_VECTORS)
    assert out.mbn.embedding.shape == (4, 7 * 16) == (4, stream.embedding_size)
    # CSA: one sigmoid score per position of F, and F_att = F * Psi (eq. 1-2)
    assert out.attention.shape == (4, 1, *out.feature_map.shape[-2:])
    assert 0 < out.attention.min() and out.attention.max() < 1
    assert torch.allclose(out.attended, out.feature_map * out.attention)
    plain = ReidStream(num_classes=7, embedding_dim=16, csa=False)(torch.rand(2, 3, 64, 32))
    assert plain.attention is None and plain.attended is plain.feature_map


def test_cloth_irrelevant_target_and_attention_loss():
    cloth = torch.zeros(1, 8, 4)
    cloth[:, :4] = 1  # upper half is clothes
    target = cloth_irrelevant_target(cloth, (2, 1), epsilon=0.1)
    assert torch.allclose(target.flatten(), torch.tensor([0.1, 1.0]))
    perfect = target.clone()
    assert mask_guided_attention_loss(perfect, cloth, 0.1).item() == 0
    assert math.isclose(mask_guided_attention_loss(torch.ones(1, 1, 2, 1), cloth, 0.1).item(), 0.81 / 2, rel_tol=1e-6)


def test_knowledge_propagation_loss_is_scaled_kl():
    torch.manual_seed(0)
    teacher, student = [torch.randn(5, 9)], [torch.randn(5, 9)]
    for tau in (1.0, 5.0):
        expected = tau ** 2 * F.kl_div(F.log_softmax(student[0] / tau, 1), F.softmax(teacher[0] / tau, 1),
                                       reduction="batchmean")
        assert torch.allclose(facial_knowledge_propagation_loss(teacher, student, tau), expected, atol=1e-6)
    assert facial_knowledge_propagation_loss(teacher, teacher, 5.0).abs().item() < 1e-6


def _batch(n: int = 8, faces: int = 6) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    has_face = torch.zeros(n, dtype=torch.bool)
    has_face[:faces] = True
    return {"image": torch.rand(n, 3, 64, 32), "cloth_mask": (torch.rand(n, 64, 32) > 0.5).float(),
            "has_parsing": torch.ones(n, dtype=torch.bool), "face": torch.rand(n, 3, 24, 24),
            "restored_face": torch.rand(n, 3, 24, 24), "has_face": has_face, "label": torch.arange(n) // 2}


def test_total_loss_is_eq_7():
    weights = DeSKProWeights(cloth_mask_epsilon=0.1, attention_loss_weight=7.0, temperature=5.0, alpha=0.7)
    make = lambda csa=False: ReidStream(4, embedding_dim=8, csa=csa)  # noqa: E731
    module = DeSKProModule(4, make(True), make(), make(), weights, attention_loss=True)
    terms = module.loss_terms(_batch())
    assert all(v.item() > 0 for v in vars(terms).values())
    total = terms.total(7.0, 0.7)
    expected = 7 * terms.attention + terms.triplet + 0.7 * terms.fkp + 0.3 * terms.ce_student + terms.ce_global
    assert torch.allclose(total, expected)
    # the teacher is frozen: no gradient reaches it
    total.backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.student.parameters())


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no Trainer: logging is a no-op
def test_compute_loss_is_what_training_step_returns():
    # compute_loss is what benchmarks call: it must be training_step's loss, logging apart.
    make = lambda csa=False: ReidStream(4, embedding_dim=8, csa=csa)  # noqa: E731
    module = DeSKProModule(4, make(True), make(), make(), DeSKProWeights(alpha=0.7), attention_loss=True)
    torch.manual_seed(0)
    loss, terms = module.compute_loss(_batch())
    assert set(terms) == {"attention", "triplet", "fkp", "ce_student", "ce_global"}
    expected = 7 * terms["attention"] + terms["triplet"] + 0.7 * terms["fkp"] + 0.3 * terms["ce_student"] \
        + terms["ce_global"]
    assert torch.allclose(loss, expected)
    torch.manual_seed(0)
    assert torch.allclose(module.training_step(_batch(), 0), loss)
    # without a teacher there is no L_fkp, and alpha does not shrink the student's CE
    no_teacher = DeSKProModule(4, None, make(), None, DeSKProWeights(alpha=0.0), attention_loss=False)
    loss, terms = no_teacher.compute_loss(_batch())
    assert terms["fkp"].item() == 0 and torch.allclose(loss, terms["triplet"] + terms["ce_student"])


def test_face_teacher_loss_is_ce_plus_triplet_and_must_be_finite():
    module = FaceTeacherModule(ReidStream(4, embedding_dim=8), num_classes=4)
    loss, terms = module.compute_loss(_batch())
    assert set(terms) == {"ce", "triplet"} and all(v.item() > 0 for v in terms.values())
    assert torch.allclose(loss, terms["ce"] + terms["triplet"])
    batch = _batch()
    batch["restored_face"][0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="train_reid_teacher loss became nan at step 0"):
        module.training_step(batch, 0)


def test_images_without_a_face_stay_out_of_the_face_terms():
    module = DeSKProModule(4, None, ReidStream(4, embedding_dim=8), None,
                           DeSKProWeights(alpha=0.0), attention_loss=False)
    batch = _batch(faces=1)  # one face is not enough for batch norm: no face terms at all
    terms = module.loss_terms(batch)
    assert terms.ce_student.item() == 0 and terms.triplet.item() == 0
    batch = _batch(faces=4)
    with_faces = module.loss_terms(batch).ce_student
    batch["face"][4:] = 0.5  # images without a face do not change the loss
    assert torch.allclose(module.eval().loss_terms(batch).ce_student, module.loss_terms(_batch(faces=4)).ce_student)
    assert with_faces.item() > 0


def test_knowledge_propagation_needs_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        DeSKProModule(4, None, ReidStream(4, embedding_dim=8), None, DeSKProWeights(alpha=0.7), False)


def test_two_stream_distance_falls_back_to_the_global_stream():
    g = F.normalize(torch.randn(3, 5), dim=1)
    f = F.normalize(torch.randn(3, 4), dim=1)
    has = torch.tensor([True, False, True])
    d = two_stream_distance((g, f, has), (g, f, has))
    body, face = 1 - g @ g.T, 1 - f @ f.T
    assert torch.allclose(d[0, 2], (body[0, 2] + face[0, 2]) / 2)
    assert torch.allclose(d[1], body[1]) and torch.allclose(d[:, 1], body[:, 1])  # no face: global alone
    face_only = two_stream_distance((None, f, has), (None, f, has))
    assert torch.allclose(face_only[0, 2], face[0, 2]) and face_only[1, 0].item() == 1.0
    assert torch.allclose(two_stream_distance((g, None, has), (g, None, has)), body)


def test_identity_batches_hold_k_images_of_p_identities():
    pids = [i // 5 for i in range(50)]  # 10 identities x 5 images
    sampler = IdentityBatchSampler(pids, identities_per_batch=3, images_per_identity=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    for batch in batches:
        ids = [pids[i] for i in batch]
        assert len(batch) == 12 and len(set(ids)) == 3 and all(ids.count(p) == 4 for p in set(ids))
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new deal every epoch
    sampler.set_epoch(0)
    assert list(sampler) == batches  # ... and the same deal for the same epoch


def test_identity_batches_split_whole_identities_across_ranks(monkeypatch):
    import lightning_modules.deskpro.sampler as sampler_module

    pids = [i // 4 for i in range(48)]  # 12 identities
    per_rank = {}
    for rank in (0, 1):
        monkeypatch.setattr(sampler_module, "_rank_and_world", lambda rank=rank: (rank, 2))
        per_rank[rank] = list(IdentityBatchSampler(pids, 3, 2, seed=5))
    assert len(per_rank[0]) == len(per_rank[1]) == 2  # equal step counts: no rank waits forever
    for b0, b1 in zip(per_rank[0], per_rank[1]):
        assert not {pids[i] for i in b0} & {pids[i] for i in b1}  # each identity on one rank only


def test_model_round_trip(tmp_path):
    net = DeSKProNet(ReidStream(5, embedding_dim=8, csa=True), ReidStream(5, embedding_dim=8), "student",
                     (64, 32), 24).eval()
    net.save_pretrained(tmp_path / "m")
    loaded = DeSKProNet.from_pretrained(tmp_path / "m").eval()
    batch = _batch()
    a, b = net.embed(batch["image"], batch["face"], batch["has_face"]), \
        loaded.embed(batch["image"], batch["face"], batch["has_face"])
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert (a[1][~batch["has_face"]] == 0).all()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["deskpro.json", "face", "global"]


def test_a_file_that_is_no_exported_model_is_a_clear_error(tmp_path):
    from tasks.core.errors import InputDataError
    from tasks.deskpro.setup import load_restorer_model

    for name in ("gpen.pt2", "gpen.pt"):
        (tmp_path / name).write_bytes(b"not a model")
        with pytest.raises(InputDataError, match=f"models.face_restorer: .*{name}: not a torch.export"):
            load_restorer_model(tmp_path / name)
