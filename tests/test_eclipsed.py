"""eCLIPsed's direction learning, editing and measures on tiny random-init models, and its stage's
refusals of bad input (in-process, nothing written)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.diffusion.tiny import TinySizes, tiny_clip
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, synthworld_words
from lightning_modules.eclipsed.clip import ClipEmbedder
from lightning_modules.eclipsed.directions import DirectionSettings, LatentDirections
from lightning_modules.eclipsed.editing import apply_edits, render, seeded_latents, style_codes, to_uint8
from lightning_modules.eclipsed.localization import correlation_penalty, localization_scores
from lightning_modules.eclipsed.metrics import EditAccuracy, EditLocality, prompted_attribute
from lightning_modules.eclipsed.parts import choose_part, extend_prompt
from lightning_modules.eclipsed.stylegan import StyleGenerator

PARTS = ["background", "skin", "neck", "hair", "eyes", "brows", "nose", "mouth", "glasses", "beard"]
ATTRIBUTES = {"hair_style": ["straight", "curly", "short", "ponytail"],
              "hair_color": ["black", "brown", "blond", "red", "gray"],
              "glasses": ["no", "yes"], "beard": ["no", "yes"], "mouth": ["closed", "open", "smiling"]}
SIDE = 32


def tiny_generator(seed: int = 0) -> StyleGenerator:
    torch.manual_seed(seed)
    return StyleGenerator({4: 16, 8: 16, 16: 16, 32: 8}, style_dim=32, n_mlp=2).eval()


def tiny_embedder(seed: int = 0) -> ClipEmbedder:
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(synthworld_words() + ["curly", "hair", "mouth", "open"], [], max_length=16)
    clip, processor = tiny_clip(tokenizer, TinySizes(resolution=SIDE, text_width=32, vision_width=32,
                                                     projection_dim=32))
    return ClipEmbedder.from_processor(clip.eval(), tokenizer, processor)


def top_half(images: torch.Tensor) -> torch.Tensor:
    """A fixed synthetic part: the upper half of the picture (where hair would be)."""
    mask = torch.zeros(images.shape[0], 1, *images.shape[-2:])
    mask[:, :, : images.shape[-2] // 2] = 1.0
    return mask


def module(localization_weight: float = 0.0, **changes) -> LatentDirections:
    embedder = tiny_embedder()
    settings = DirectionSettings(**{"localization_weight": localization_weight, "steps": 20, "lr": 0.05,
                                    "alpha_range": (1.0, 3.0), "layers": (3, 4), **changes})
    neutral = embedder.texts(["a person"])[0] if settings.clip_loss == "directional" else None
    return LatentDirections(tiny_generator(), embedder, embedder.texts(["a person with curly hair"])[0], settings,
                            top_half, neutral)


def train(m: LatentDirections, steps: int, batch: int = 4) -> LatentDirections:
    seeds = torch.arange(steps * batch)
    loader = torch.utils.data.DataLoader(seeds, batch_size=batch)
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(m, loader)
    return m


def test_directions_train_a_few_steps_and_stay_unit():
    m = module(localization_weight=0.05, num_directions=2)
    before = m.full_directions().detach().clone()
    terms = m.loss_terms(torch.arange(4))
    assert set(terms) >= {"loss", "clip", "localization", "decorrelation"}
    assert all(torch.isfinite(v) for v in terms.values())
    train(m, 3)
    after = m.full_directions().detach()
    assert not torch.allclose(before, after)
    norms = after[:, [3, 4]].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)   # W+: unit per layer


def text_alignment(m: LatentDirections, seeds, text_change: torch.Tensor) -> float:
    """Mean cosine between the CLIP change of the edits (alpha 2) and the text change."""
    with torch.no_grad():
        ws = m.style_codes(torch.tensor(seeds))
        change = m.clip.images(render(m.generator, ws, [(m.full_directions()[0], 2.0)])) - \
            m.clip.images(render(m.generator, ws))
        return float((F.normalize(change, dim=-1) @ text_change).mean())


def test_directional_loss_moves_the_image_along_the_text_change():
    """Held-out seeds, same start: after training, the edit's CLIP change points along
    E_T(prompt) - E_T(neutral) more than the random start's did, and more than the global loss's
    edit does; the loss is refused without the neutral text."""
    m = module(clip_loss="directional")
    text_change, seeds = m.text_change, list(range(1000, 1008))
    start = text_alignment(m, seeds, text_change)
    terms = m.loss_terms(torch.arange(4))
    assert 0.0 <= float(terms["clip"]) <= 2.0
    train(m, 25)
    directional = text_alignment(m, seeds, text_change)
    assert directional > start + 0.1
    assert directional > text_alignment(train(module(), 25), seeds, text_change) + 0.1
    with pytest.raises(ValueError, match="neutral prompt"):
        LatentDirections(m.generator, m.clip, m.text_embedding, DirectionSettings(clip_loss="directional"), top_half)


def test_w_directions_repeat_on_the_chosen_layers_and_are_zero_elsewhere():
    m = module(latent_space="w", layers=(2, 3, 5), num_directions=3)
    full = m.full_directions().detach()
    assert full.shape == (3, m.generator.num_ws, m.generator.w_dim)
    for layer in (3, 5):
        assert torch.equal(full[:, layer], full[:, 2])
    others = [i for i in range(m.generator.num_ws) if i not in (2, 3, 5)]
    assert torch.count_nonzero(full[:, others]) == 0


def test_decorrelation_is_zero_for_orthogonal_directions_and_not_otherwise():
    eye = torch.eye(4)
    assert float(correlation_penalty(eye)) == pytest.approx(0.0, abs=1e-7)
    assert float(correlation_penalty(eye[:, None].repeat(1, 3, 1))) == pytest.approx(0.0, abs=1e-7)   # W+
    assert float(correlation_penalty(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))) > 0.1
    assert float(correlation_penalty(torch.randn(1, 8))) == 0.0


def test_localization_score_counts_change_inside_the_mask():
    before = [torch.zeros(2, 4, 8, 8)]
    inside, outside = torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    inside[:, :, :4] = 1.0
    outside[:, :, 4:] = 1.0
    mask = top_half(torch.zeros(2, 3, 32, 32))    # resized to the 8 x 8 maps inside
    assert localization_scores(before, [inside], mask).min() > 0.95
    assert localization_scores(before, [outside], mask).max() < 0.05


def locality(m: LatentDirections, seeds) -> float:
    g = m.generator
    ws = style_codes(g, seeded_latents(seeds, g.w_dim), 0.7)
    metric = EditLocality()
    original = render(g, ws)
    metric.update(original, render(g, ws, [(m.full_directions().detach()[0], 2.0)]), top_half(original))
    return float(metric.compute()["locality"])


def test_localization_keeps_the_change_inside_the_part():
    """Same seeds, same start: the localization loss moves less outside the part's mask."""
    seeds = list(range(1000, 1008))
    free = train(module(localization_weight=0.0), 25)
    localized = train(module(localization_weight=1.0), 25)
    assert locality(localized, seeds) < locality(free, seeds)


def test_sequential_edits_compose():
    g = tiny_generator()
    ws = style_codes(g, seeded_latents([1, 2], g.w_dim), 0.7)
    d1, d2 = torch.randn(2, g.num_ws, g.w_dim).unbind(0)
    both = apply_edits(ws, [(d1, 1.5), (d2, -0.5)])
    assert torch.allclose(both, ws + 1.5 * d1 - 0.5 * d2)
    assert torch.allclose(apply_edits(apply_edits(ws, [(d1, 1.5)]), [(d2, -0.5)]), both)
    assert torch.allclose(apply_edits(ws, [(d2, -0.5), (d1, 1.5)]), both, atol=1e-6)   # order-free
    assert torch.allclose(render(g, ws, [(d1, 1.5), (d1, -1.5)]), render(g, ws), atol=1e-5)   # undone


def bag_of_words(texts):
    """A text encoder that recognises words: counts of a fixed vocabulary, normalised."""
    vocabulary = sorted({w for t in ["a person with curly hair mouth open glasses beard eyes nose skin neck "
                                     "brows background photo of the"] for w in t.split()})
    rows = [[t.lower().replace("'s", "").split().count(w) for w in vocabulary] for t in texts]
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_choose_part_picks_hair_for_a_hair_prompt():
    assert choose_part("a person with curly hair", PARTS, bag_of_words) == "hair"
    assert choose_part("a person with the mouth open", PARTS, bag_of_words) == "mouth"
    assert choose_part("a person with curly hair", PARTS, bag_of_words, named="mouth") == "mouth"
    with pytest.raises(ValueError, match="hat.*background, skin"):
        choose_part("a person with a hat", PARTS, bag_of_words, named="hat")
    # a CLIP's text tower (random here): the prompt's word "hair" is closest to the part "hair"
    clip = tiny_embedder()
    assert choose_part("a person with curly hair", PARTS, clip.texts) == "hair"
    assert choose_part("a person with the mouth open", PARTS, clip.texts) == "mouth"


def test_prompt_extension_and_prompted_attribute():
    assert extend_prompt("a person with curly hair", "hair") == "person curly hair curly hair curly hair"
    assert prompted_attribute("a person with curly hair", ATTRIBUTES) == ("hair_style", "curly")
    assert prompted_attribute("a person with the mouth open", ATTRIBUTES) == ("mouth", "open")
    assert prompted_attribute("a person with glasses", ATTRIBUTES) == ("glasses", "yes")
    assert prompted_attribute("a person with blonde hair", ATTRIBUTES) == ("hair_color", "blond")
    assert prompted_attribute("a happy person", ATTRIBUTES) is None


def test_edit_accuracy_needs_the_attribute_with_the_rest_and_the_identity_kept():
    metric = EditAccuracy("hair_style", 1, ["hair_style", "mouth"])
    original = {"hair_style": torch.tensor([0, 0, 0, 2, 1]), "mouth": torch.tensor([0, 0, 0, 0, 0]),
                "identity": torch.tensor([5, 5, 5, 5, 5])}
    edited = {"hair_style": torch.tensor([1, 1, 1, 0, 1]), "mouth": torch.tensor([0, 2, 0, 0, 0]),
              "identity": torch.tensor([5, 5, 6, 5, 5])}
    metric.update(original, edited)
    result = metric.compute()
    # the last face was curly already: left out; of the other four only the first keeps mouth and identity
    assert float(result["edit_accuracy"]) == 0.25
    assert float(result["attribute"]) == 0.75 and float(result["already_before"]) == 0.2
    assert float(result["kept_mouth"]) == 0.75 and "kept_hair_style" not in result   # which attribute gave way


# --- the stage: bad input refused before anything is written --------------------------------------

def test_bad_params_are_one_line(tmp_path):
    import yaml

    from tasks.core.errors import ParamsError
    from tasks.core.params import validate

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for key, value, says in (("prompt", "  ", "empty prompt"), ("alpha_range", [3.0, 1.0], "min 3 > max 1"),
                             ("neutral_prompt", "", "empty neutral prompt")):
        bad = json.loads(json.dumps(raw))
        bad["eclipsed"][key] = value
        with pytest.raises(ParamsError, match=says) as err:
            validate(bad)
        assert "\n" not in str(err.value) and f"eclipsed.{key}" in str(err.value)
    bad = json.loads(json.dumps(raw))
    bad["eclipsed"]["rows"]["final"] = {"alpha_range": [2.0, -2.0]}
    with pytest.raises(ParamsError, match="rows.final.*min 2 > max -2"):
        validate(bad)
    bad = json.loads(json.dumps(raw))
    bad["eclipsed"]["rows"]["final"] = {"clip_loss": "directional", "neutral_prompt": bad["eclipsed"]["prompt"]}
    with pytest.raises(ParamsError, match="rows.final.*neutral_prompt: the same as prompt") as err:
        validate(bad)
    assert "\n" not in str(err.value)


def tiny_workspace(path: Path) -> Path:
    """A workspace whose eCLIPsed models are tiny random ones, saved where the stage reads them."""
    from transformers import CLIPImageProcessor

    from lightning_modules.judges.faces import FaceAttributeClassifier
    from lightning_modules.segmentation import ResNet34UNet
    from tasks.core.models import write_record
    from tests.conftest import make_workspace

    workspace = make_workspace(path, git=False)
    models = workspace / "data" / "models"
    tiny_generator().save_pretrained(models / "stylegan")
    ResNet34UNet(len(PARTS), decoder_channels=(16, 16, 16, 16, 8), class_names=PARTS,
                 image_size=SIDE).save_pretrained(models / "face_parts")
    FaceAttributeClassifier(ATTRIBUTES, identities=[0, 1, 2], image_size=SIDE, width=8).save_pretrained(
        models / "face_attributes")
    embedder = tiny_embedder()
    clip_dir = workspace / "data" / "zoo" / "clip"
    embedder.clip.save_pretrained(clip_dir)
    embedder.tokenizer.save_pretrained(clip_dir)
    processor = CLIPImageProcessor(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE})
    processor.save_pretrained(clip_dir)
    write_record(models / "clip", clip_dir)
    return workspace


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory) -> Path:
    return tiny_workspace(tmp_path_factory.mktemp("eclipsed") / "ws")


def small(params: dict, **rows) -> None:
    section = params["eclipsed"]
    section.update(steps=2, batch_size=2, eval_seeds=2, strip_seeds=1, strip_alphas=[-1.0, 0.0, 1.0],
                   eval_alpha=3.0, curve_alphas=[0.5, 3.0], table=list(rows), sequential=[])
    section["rows"].update(rows)


def test_stage_writes_directions_and_refuses_an_unknown_part(tiny_ws, in_process, capsys):
    import yaml
    from safetensors.torch import load_file

    from tests.conftest import write_params

    workspace = tiny_ws
    name = write_params(workspace, "tiny.yaml", lambda p: small(p, final={}, hat={"part": "hat"},
                                                               pair={"num_directions": 2, "latent_space": "w"}))
    empty = write_params(workspace, "empty.yaml", lambda p: p["eclipsed"].update(prompt=""))
    with pytest.raises(SystemExit) as stop:
        in_process("eclipsed", workspace, "--row", "final", "--params", empty)
    assert stop.value.code == 2 and "eclipsed.prompt: empty prompt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        in_process("eclipsed", workspace, "--row", "hat", "--params", name)
    assert stop.value.code == 2
    said = capsys.readouterr().err.strip()
    assert "\n" not in said and "eclipsed.rows.hat.part: 'hat' is not a part the segmenter knows" in said
    assert "known: auto, background, skin" in said
    assert not (workspace / "data" / "eclipsed").exists() and not (workspace / "metrics" / "eclipsed").exists()
    assert not (workspace / "plots" / "eclipsed").exists()

    in_process("eclipsed", workspace, "--row", "pair", "--params", name)
    directions = load_file(str(workspace / "data/eclipsed/pair/directions.safetensors"))["directions"]
    meta = json.loads((workspace / "data/eclipsed/pair/directions.json").read_text())
    assert directions.shape == (2, 8, 32) and meta["K"] == 2 and meta["latent_space"] == "w"
    assert meta["part"] == "hair" and meta["alpha_range"] == [0.5, 4.0]
    metrics = json.loads((workspace / "metrics/eclipsed/pair.json").read_text())
    measured = {"clip_similarity", "clip_similarity_train_seed", "locality", "edit_accuracy", "clip_loss_curve"}
    assert measured <= set(metrics)
    assert metrics["prompted_attribute"] == "hair_style=curly"
    assert (workspace / "plots/eclipsed/pair/strip.png").is_file()
    assert (workspace / "plots/eclipsed/pair/sequential.png").is_file()
    # the alpha curve: at eval_alpha it is the row's own figures; its CSV and picture are published
    curve = metrics["alpha_curve"]
    assert [point["alpha"] for point in curve] == [0.5, 3.0]
    keys = ("clip_similarity", "locality", "edit_accuracy", "attribute", "others_kept", "identity_kept")
    assert {key: curve[1][key] for key in keys} == {key: metrics[key] for key in keys}
    assert all(0 <= curve[0][key] <= 1 for key in keys[2:])
    with (workspace / "plots/eclipsed/pair/alpha_curve.csv").open() as f:
        assert [float(row["alpha"]) for row in csv.DictReader(f)] == [0.5, 3.0]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id],
                                "tags.`subjectlab.stage` = 'eclipsed@pair'")
    assert "eclipsed/pair/alpha_curve.png" in {a.path for a in client.list_artifacts(run.info.run_id, "eclipsed/pair")}

    edit = yaml.safe_load((workspace / name).read_text())
    edit["eclipsed"]["table"], edit["eclipsed"]["sequential"] = ["pair"], ["pair"]
    (workspace / name).write_text(yaml.safe_dump(edit))
    in_process("eclipsed_report", workspace, "--params", name)
    table = (workspace / "plots/eclipsed_report/table.md").read_text()
    assert "Prompt (normal vs extended) | 0.192 | 0.177" in table
    assert (workspace / "plots/eclipsed_sequential/sequential.png").is_file()
    report = json.loads((workspace / "metrics/eclipsed_report.json").read_text())
    assert report["rows"]["pair"]["part"] == meta["part"]


def test_editor_renders_sequential_edits(tiny_ws, monkeypatch):
    from safetensors.torch import save_file

    from tasks.core.params import load_params
    from tasks.eclipsed.editor import load_editor

    workspace = tiny_ws
    g = tiny_generator()
    for row, seed in (("editor_a", 1), ("editor_b", 2)):
        folder = workspace / "data" / "eclipsed" / row
        folder.mkdir(parents=True)
        save_file({"directions": torch.randn(1, g.num_ws, g.w_dim, generator=torch.Generator().manual_seed(seed))},
                  str(folder / "directions.safetensors"))
        (folder / "directions.json").write_text(json.dumps({"prompt": row, "part": "hair", "alpha_range": [-2, 2],
                                                            "truncation": 0.7}))
    monkeypatch.chdir(workspace)
    editor = load_editor(load_params("params.yaml"), ["editor_a", "editor_b"])
    unedited = editor.render(3, {})
    assert unedited.shape == (SIDE, SIDE, 3) and unedited.dtype.name == "uint8"
    assert (editor.render(3, {"editor_a": 0.0, "editor_b": 0.0}) == unedited).all()
    assert not (editor.render(3, {"editor_a": 2.0}) == unedited).all()
    assert set(editor.rows) == {"editor_a", "editor_b"} and editor.rows["editor_a"]["alpha_range"] == [-2, 2]
    g = editor.generator
    ws = style_codes(g, seeded_latents([3], g.w_dim), 0.7)
    both = render(g, ws, [(editor.directions["editor_a"], 1.0), (editor.directions["editor_b"], -1.0)])
    assert (to_uint8(both)[0] == editor.render(3, {"editor_a": 1.0, "editor_b": -1.0})).all()
