"""Prompt sets: expansion into items with their own seeds, and every bad set refused by entry."""

from __future__ import annotations

import pytest

from lightning_modules.diffusion.prompt_sets import PromptSetError, SubjectEntry, load_prompt_set, parse_prompt_set

SUBJECTS = [SubjectEntry("dog_1", "sks", "dog"), SubjectEntry("dog_2", "zwx", "dog"),
            SubjectEntry("vase_1", "qlo", "vase")]


def test_subjects_times_templates_times_scenes_times_seeds():
    items = parse_prompt_set({"templates": ["a {identifier} {class_noun}", "a {identifier} {class_noun} {scene}"],
                              "scenes": ["on a beach", "at night"], "seeds": [0, 7]}).expand(SUBJECTS)
    assert len(items) == 3 * (1 + 2) * 2
    assert [i.index for i in items] == list(range(len(items)))
    assert len({i.stem for i in items}) == len(items)
    first = items[0]
    assert (first.prompt, first.seed, first.subject, first.scene) == ("a sks dog", 0, "dog_1", None)
    beach = [i for i in items if i.subject == "vase_1" and i.scene == "on a beach"]
    assert {i.prompt for i in beach} == {"a qlo vase on a beach"} and {i.seed for i in beach} == {0, 7}


def test_class_templates_draw_each_prompt_and_seed_once():
    items = parse_prompt_set({"templates": ["a {class_noun} {scene}"], "scenes": ["in a city"],
                              "seeds": [3]}).expand(SUBJECTS)
    assert [(i.prompt, i.subject) for i in items] == [("a dog in a city", None), ("a vase in a city", None)]


def test_subjects_by_name_or_identifier():
    items = parse_prompt_set({"subjects": ["zwx", "vase_1"], "templates": ["a {identifier} {class_noun}"],
                              "seeds": [1]}).expand(SUBJECTS)
    assert [i.subject for i in items] == ["dog_2", "vase_1"]


@pytest.mark.parametrize("data, fault", [
    ({"templates": [], "seeds": [0]}, "templates: empty"),
    ({"seeds": [0]}, "templates: expected a list"),
    ({"templates": ["a {identifier} {class_noun}"], "seeds": []}, "seeds: expected a non-empty list"),
    ({"templates": ["a {identifier} {class_noun}"], "seeds": [0, 1, 0]}, "seeds: 0 is listed twice"),
    ({"templates": ["a {identifier} {class_noun}"], "seeds": [-1]}, "seeds: expected"),
    ({"templates": ["a {identifier} {class_noun}"], "seeds": [1.5]}, "seeds: expected"),
    ({"templates": ["a {identifier}"], "seeds": [0]}, "has no {class_noun}"),
    ({"templates": ["a {who} {class_noun}"], "seeds": [0]}, "has {who}"),
    ({"templates": ["a {class_noun} {scene}"], "seeds": [0]}, "has {scene} but scenes is empty"),
    ({"templates": ["a {class_noun}", "a {class_noun}"], "seeds": [0]}, "'a {class_noun}' is listed twice"),
    ({"templates": ["a {class_noun}"], "seeds": [0], "prompts": []}, "unknown key 'prompts'"),
    (["a dog"], "expected a mapping"),
])
def test_bad_sets_name_the_entry(data, fault):
    with pytest.raises(PromptSetError, match=None) as err:
        parse_prompt_set(data)
    assert fault in str(err.value)


def test_a_subject_that_was_not_fine_tuned_is_named():
    prompt_set = parse_prompt_set({"subjects": ["sks", "xyz"], "templates": ["a {identifier} {class_noun}"],
                                   "seeds": [0]})
    with pytest.raises(PromptSetError, match="subjects: 'xyz' is no fine-tuned subject or identifier"):
        prompt_set.expand(SUBJECTS)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "set.yaml"
    bad.write_text("templates: [\n")
    with pytest.raises(PromptSetError, match=f"{bad}: not YAML"):
        load_prompt_set(bad)
    with pytest.raises(PromptSetError, match="not readable"):
        load_prompt_set(tmp_path / "missing.yaml")
    bad.write_text("templates: ['a {class_noun}']\nseeds: [2, 2]\n")
    with pytest.raises(PromptSetError, match=f"{bad}: seeds: 2 is listed twice"):
        load_prompt_set(bad)
