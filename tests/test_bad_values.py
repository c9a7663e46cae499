"""Every bad value is refused before work starts: one `error:` line naming the key or file,
exit code 2, no traceback, nothing written.

Three kinds: numbers beyond what a method means or a machine holds (every number has an upper
bound; combinations are estimated against memory and disk), trainer settings Lightning or this
machine cannot run, and params files that leave sections or keys to hidden defaults. Most cases
are checked in-process; a few of each kind go through real stage processes against one
workspace. The entry points that run stages end the same way (tests/test_bad_entry_points.py).
"""

from __future__ import annotations

import copy
import shutil
import typing
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tasks.core.errors import ParamsError
from tasks.core.params import Params, load_params, validate
from tests.conftest import ROOT, make_workspace, run, stage_command

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
HUGE_INT, HUGE_FLOAT = 10**12, 1e12


def changed(raw: dict, **changes) -> dict:
    """A copy of params data with dotted keys set (`...` deletes the key)."""
    raw = copy.deepcopy(raw)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return raw


def refusal(raw: dict) -> str:
    """The one-line message of params data refused by validation or by this machine."""
    with pytest.raises(ParamsError) as err:
        validate(raw).check_this_machine()
    message = str(err.value)
    assert "\n" not in message
    return message


# --- 1. every number bounded -------------------------------------------------------------

def numeric_leaves(raw: dict, model: type[BaseModel], path: tuple = ()):
    """(dotted key, value) of every number (or list of numbers) in params data, by its schema."""
    for name, field in model.model_fields.items():
        if name not in raw:   # a table row states only the keys it changes
            continue
        value, annotation = raw[name], field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from numeric_leaves(value, annotation, path + (name,))
        elif isinstance(value, dict):
            row = typing.get_args(annotation)[1]
            for key, entry in value.items():
                yield from numeric_leaves(entry, row, path + (name, key))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield ".".join(path + (name,)), value
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            yield ".".join(path + (name,)), value


def huge(value):
    if isinstance(value, list):
        return [huge(v) for v in value]
    return HUGE_INT if isinstance(value, int) else HUGE_FLOAT


def test_every_number_of_the_schema_has_an_upper_bound():
    unbounded = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number") and not {"maximum", "exclusiveMaximum"} & set(node):
                unbounded.append(where)
            for key, child in node.items():
                walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}/{i}")

    walk(Params.model_json_schema(), "")
    assert not unbounded


LEAVES = dict(numeric_leaves(RAW, Params))


def test_the_walk_finds_the_numbers_of_every_section():
    assert len(LEAVES) > 90
    assert {"seed", "augment.augmentations_per_subject", "zoo.text_width", "zoo.max_length", "trainer.devices",
            "finetune.adam_betas", "reid.image_size", "train_reid.max_epochs"} <= set(LEAVES)


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_a_huge_number_is_refused_naming_its_key(key):
    message = refusal(changed(RAW, **{key: huge(LEAVES[key])}))
    assert message.startswith("params.yaml: ") and key in message


@pytest.mark.parametrize("key, value, expected", [
    ("zoo.text_width", 100, "zoo.text_width: 100 splits into attention heads of 32 channels"),
    ("zoo.vision_width", 1000, "zoo.vision_width: 1000 splits into attention heads"),
    ("zoo.unet_channels", [32, 60], "zoo.unet_channels: every level is normalised in 8 groups"),
    ("zoo.extra_words", ["word"] * 10_001, "zoo.extra_words: List should have at most 10000 items"),
    ("finetune.warmup_steps", 1000, f"finetune.warmup_steps: 1000 is more than max_steps ({RAW['finetune']['max_steps']})"),
    ("finetune.adam_betas", [0.9, 1.0], "finetune.adam_betas.1: Input should be less than 1"),
    ("finetune.adam_betas", [-0.1, 0.999], "finetune.adam_betas.0: Input should be greater than or equal to 0"),
    ("finetune.weight_decay", -0.01, "finetune.weight_decay: Input should be greater than or equal to 0"),
    ("reid.lr", 2.0, "reid.lr: Input should be less than or equal to 1"),
    ("reid.image_size", [8, 4], "reid.image_size.0: Input should be greater than or equal to 16"),
    ("reid.face_size", 8, "reid.face_size: Input should be greater than or equal to 16"),
    ("augment.mix_sizes", [2, 12], "augment.mix_sizes.1: Input should be less than or equal to 8"),
    ("class_images.inference_steps", 5000, "class_images.inference_steps: Input should be less than or equal to 1000"),
    ("pretrain_base.guidance_scale", 500.0, "pretrain_base.guidance_scale: Input should be less than or equal to 100"),
    ("pretrain_dino.warmup_steps", 1000, f"pretrain_dino.warmup_steps: 1000 is more than steps ({RAW['pretrain_dino']['steps']})"),
    ("pretrain_dino.global_crop_scale", [0.9, 0.4], "pretrain_dino.global_crop_scale: expected [min, max]"),
    ("pretrain_dino.local_crop_scale", [0.0, 0.4], "pretrain_dino.local_crop_scale.0: Input should be greater than 0"),
    ("pretrain_dino.teacher_temperature", 0.0, "pretrain_dino.teacher_temperature: Input should be greater than 0"),
    ("pretrain_dino.momentum", 1.5, "pretrain_dino.momentum: Input should be less than or equal to 1"),
    ("pretrain_dino.batch_size", 1, "pretrain_dino.batch_size: Input should be greater than or equal to 2"),
    ("seed", 2**32, "seed: Input should be less than or equal to 4294967295"),
    ("train_classifier.image_size", 8, "train_classifier.image_size: Input should be greater than or equal to 16"),
    ("train_classifier.width", 0, "train_classifier.width: Input should be greater than or equal to 2"),
    ("schedule.timezone", "Mars/Olympus", "schedule.timezone: expected an IANA time zone"),
])
def test_values_beyond_what_the_method_means_are_named(key, value, expected):
    assert expected in refusal(changed(RAW, **{key: value}))


@pytest.mark.parametrize("changes, expected", [
    ({"train_segmenter.batch_size": 4096, "train_segmenter.image_size": 4096},
     "a batch of train_segmenter.batch_size 4096 x train_segmenter.image_size 4096^2 needs at least"),
    ({"train_segmenter.batch_size": 4096, "train_segmenter.image_size": None, "augment.canvas_size": 4096},
     "a batch of train_segmenter.batch_size 4096 x augment.canvas_size 4096^2 needs at least"),
    ({"reid.identities_per_batch": 1024, "reid.images_per_identity": 256, "reid.image_size": [1024, 1024]},
     "a batch of reid.identities_per_batch 1024 x reid.images_per_identity 256 x reid.image_size 1024x1024"),
    ({"evaluate_reid.batch_size": 4096, "reid.image_size": [1024, 1024], "reid.face_size": 256},
     "a batch of evaluate_reid.batch_size 4096 x reid.image_size 1024x1024"),
    ({"pretrain_base.vae_batch_size": 4096, "zoo.resolution": 1024},
     "a batch of pretrain_base.vae_batch_size 4096 x zoo.resolution 1024^2 needs at least"),
    ({"finetune.batch_size": 4096, "zoo.resolution": 1024}, "finetune.batch_size 4096 x zoo.resolution 1024^2 x 2"),
    ({"train_classifier.batch_size": 4096, "train_classifier.image_size": 512, "train_classifier.width": 512},
     "a batch of train_classifier.batch_size 4096 x train_classifier.image_size 512^2 needs at least"),
])
def test_a_batch_this_machine_cannot_hold_is_refused_with_the_estimate(changes, expected):
    message = refusal(changed(RAW, **changes))
    assert expected in message and "of memory; this machine has" in message


def test_bounded_values_that_fit_are_accepted():
    validate(changed(RAW, **{"train_segmenter.batch_size": 64, "augment.canvas_size": 512})).check_this_machine()


# --- 2. trainer settings against Lightning and this machine ------------------------------

def test_the_trainer_names_are_lightnings_own():
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    from tasks.core.hardware import ACCELERATORS, PRECISIONS

    assert set(ACCELERATORS) == {"auto", "gpu"} | set(AcceleratorRegistry.available_accelerators())
    assert set(PRECISIONS) == {value for literal in typing.get_args(_PRECISION_INPUT)
                               for value in typing.get_args(literal)}


def no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


@pytest.mark.parametrize("changes, expected", [
    ({"trainer.strategy": "dpp"}, "trainer.strategy: not a Lightning strategy; one of auto, ddp,"),
    ({"trainer.strategy": "ddp_sharded"}, "trainer.strategy: not a Lightning strategy"),
    ({"trainer.precision": "fp8"}, "trainer.precision: Input should be"),
    ({"trainer.precision": "16-mixed"}, "trainer.precision: 16-mixed: fp16 mixed precision needs a GPU"),
    ({"trainer.accelerator": "npu"}, "trainer.accelerator: Input should be"),
    ({"trainer.devices": 0}, "trainer.devices: Input should be greater than or equal to 1"),
    ({"trainer.devices": 64}, "trainer.devices: 64 CPU processes, but this machine has"),
    ({"trainer.devices": [0, 1]}, "trainer.devices: [0, 1]: device indices are for GPUs"),
    ({"trainer.devices": []}, "trainer.devices"),
    ({"trainer.num_workers": 512}, "trainer.num_workers: 512 data-loading processes, but this machine has"),
    ({"trainer.num_nodes": 4, "trainer.strategy": "ddp"}, "trainer.num_nodes: 4 nodes, but no cluster is configured"),
    ({"trainer.strategy": "fsdp"}, "trainer: Lightning refuses accelerator cpu, devices 1, strategy fsdp"),
    ({"trainer.log_every_n_steps": 0}, "trainer.log_every_n_steps: Input should be greater than or equal to 1"),
])
def test_trainer_settings_are_checked_before_any_work(changes, expected, monkeypatch):
    for name in ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "NODE_RANK", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert expected in refusal(changed(RAW, **changes))


@pytest.mark.skipif("not no_gpu()")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "mps"])
def test_an_accelerator_this_machine_lacks_is_named(accelerator):
    assert f"trainer.accelerator: {accelerator}: this machine has no" in refusal(
        changed(RAW, **{"trainer.accelerator": accelerator}))


def test_ddp_on_this_machines_cpus_is_accepted():
    validate(changed(RAW, **{"trainer.strategy": "ddp", "trainer.devices": 2})).check_this_machine()


# --- 3. a params file states every value ---------------------------------------------------

@pytest.mark.parametrize("changes, expected", [
    ({"synthesize": ...}, "params.yaml: missing section synthesize; compose a complete params file: subjectlab params"),
    ({"seed": ...}, "params.yaml: missing key seed;"),
    ({"trainer.accelerator": ...}, "params.yaml: missing key trainer.accelerator;"),
    ({"train_reid.variant.csa": ...}, "params.yaml: missing key train_reid.variant.csa;"),
    ({"reid_ablation.rows.teacher.face_stream": ...}, "params.yaml: missing key reid_ablation.rows.teacher.face_stream;"),
    ({"finetune.rare_tokens": ...}, "params.yaml: missing key finetune.rare_tokens;"),
])
def test_an_incomplete_params_file_is_refused(changes, expected):
    assert expected in refusal(changed(RAW, **changes))


@pytest.mark.parametrize("text, expected", [
    ("", "empty; compose a complete params file: subjectlab params"),
    ("# nothing but a comment\n", "empty; compose"),
    ("seed: 1\n", "missing key profile"),
    ("- seed\n", "expected a mapping of sections at the top level"),
])
def test_an_empty_or_partial_file_names_itself(tmp_path, text, expected):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)


# --- stages refuse bad params files in one line, before any output -----------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("bad_values") / "ws", git=False)


def write_params(workspace: Path, name: str, raw: dict | None) -> str:
    (workspace / name).write_text("" if raw is None else yaml.safe_dump(raw, sort_keys=False))
    return name


def refused_stage(stage: str, workspace: Path, params_file: str):
    """A stage run that must stop before any work: a short timeout, should it not."""
    return run([*stage_command(stage), "--params", params_file], workspace, check=False, timeout=300)


def assert_refused(result, *expected: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for text in expected:
        assert text in lines[0]


def assert_nothing_written(workspace: Path, tracking: bool = False) -> None:
    """No output of any stage (dvc.yaml's outs, metrics and plots live under these), no
    training state, and no MLflow run unless a flow's own parent run was expected."""
    for folder in ("data", "metrics", "plots", "checkpoints", *(() if tracking else ("mlflow",))):
        assert not (workspace / folder).exists(), folder


# "{file}" is the params file given to the stage: errors of its validation name it first.
STAGE_CASES = [
    # 1. bounds and estimates
    ("augment", {"augment.augmentations_per_subject": HUGE_INT}, ("{file}: augment.augmentations_per_subject",)),
    ("zoo", {"zoo.text_width": 10**9}, ("{file}: zoo.text_width: Input should be less than or equal to 1024",)),
    ("synthesize", {"synthesize.num_subjects": 48, "synthesize.images_per_subject": 100_000,
                    "synthesize.image_size": 2048},
     ("error: synthesize: synthesize.num_subjects 48 x synthesize.images_per_subject 100000", "of disk;")),
    ("train_segmenter", {"train_segmenter.batch_size": 4096, "train_segmenter.image_size": 4096},
     ("{file}: a batch of train_segmenter.batch_size 4096 x train_segmenter.image_size 4096^2", "of memory")),
    ("train_classifier", {"train_classifier.batch_size": 4096, "train_classifier.image_size": 512,
                          "train_classifier.width": 512},
     ("{file}: a batch of train_classifier.batch_size 4096 x train_classifier.image_size 512^2", "of memory")),
    # 2. trainer
    ("train_reid_teacher", {"trainer.strategy": "dpp"}, ("{file}: trainer.strategy: not a Lightning strategy",)),
    ("pretrain_clip", {"trainer.devices": 64}, ("{file}: trainer.devices: 64 CPU processes",)),
    ("finetune", {"trainer.precision": "16-mixed"}, ("{file}: trainer.precision: 16-mixed",)),
    # 3. incomplete files
    ("synthesize", {"synthesize": ...}, ("{file}: missing section synthesize", "subjectlab params")),
    ("synthesize_persons", {"trainer.num_workers": ...}, ("{file}: missing key trainer.num_workers",)),
]


def case_id(case: tuple) -> str:
    return f"{case[0]}-{'-'.join(case[1])}"


def machine_has_the_disk(changes: dict, workspace: Path) -> bool:
    # 48 x 10^5 renders of 2048^2 at 0.045 bytes a pixel at least (tasks/core/machine.py)
    return "synthesize.images_per_subject" in changes and \
        shutil.disk_usage(workspace).free > 48 * 100_000 * 2048**2 * 0.045


@pytest.fixture(scope="module")
def stage_refusals(workspace) -> dict[str, tuple[str, subprocess.CompletedProcess]]:
    """Every STAGE_CASES run, two processes at a time: a refusal ends within the stage's start-up,
    which is mostly one thread importing, so two of them share the cores without slowing each
    other. Each case has its own params file; none may write anything to the shared workspace."""
    from concurrent.futures import ThreadPoolExecutor

    def refuse(case: tuple) -> tuple[str, subprocess.CompletedProcess]:
        stage, changes, _ = case
        raw = changed(yaml.safe_load((workspace / "params.yaml").read_text()), **changes)
        name = write_params(workspace, f"{case_id(case)}.bad.yaml", raw)
        return name, refused_stage(stage, workspace, name)

    runnable = [case for case in STAGE_CASES if not machine_has_the_disk(case[1], workspace)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(map(case_id, runnable), pool.map(refuse, runnable)))


@pytest.mark.parametrize("stage, changes, expected", STAGE_CASES, ids=[case_id(case) for case in STAGE_CASES])
def test_a_stage_refuses_a_bad_params_file_in_one_line(workspace, stage_refusals, stage, changes, expected):
    if machine_has_the_disk(changes, workspace):
        pytest.skip("this machine has the disk the renders need")
    name, result = stage_refusals[case_id((stage, changes, expected))]
    assert_refused(result, *(text.format(file=name) for text in expected))
    assert_nothing_written(workspace)


def test_a_stage_refuses_an_empty_params_file(workspace):
    name = write_params(workspace, "empty.yaml", None)
    assert_refused(refused_stage("synthesize", workspace, name),
                   f"{name}: empty; compose a complete params file: subjectlab params")
    assert_nothing_written(workspace)


def test_augment_refuses_more_samples_than_the_disk_holds(workspace, tmp_path):
    """Within every bound, the samples x canvas still cannot fit: refused before a file is made."""
    from tests.test_subjects_folder import make_folder

    subjects = make_folder(tmp_path / "mine")
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (subjects / "my_cartoon" / "images" / "0.jpg").replace(scenes / "0.jpg")
    raw = changed(yaml.safe_load((workspace / "params.yaml").read_text()), **{
        "augment.subjects_dir": str(subjects), "augment.scenes_dir": str(scenes),
        "augment.augmentations_per_subject": 1_000_000, "augment.canvas_size": 4096})
    name = write_params(workspace, "augment.disk.yaml", raw)
    # 2 x 10^6 canvases of 4096^2 at 0.045 bytes a pixel at least (tasks/core/machine.py)
    if shutil.disk_usage(workspace).free > 2e6 * 4096**2 * 0.045:
        pytest.skip("this machine has the 1.4 TB free that the samples need")
    assert_refused(refused_stage("augment", workspace, name),
                   "augment: 2 subjects x augment.augmentations_per_subject 1000000", "augment.canvas_size 4096^2")
    assert_nothing_written(workspace)
