"""Exports to other tools: PEFT prompt-tuning adapters (round trip through PEFT) and
lm-evaluation-harness task YAMLs (loaded by lm-eval's own task loader)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from autoprompt_search.analysis.export import export_prompts
from autoprompt_search.api import run_search
from autoprompt_search.core.errors import UserError
from autoprompt_search.models import load_model
from autoprompt_search.scoring.softprompt import SoftPrompt, SoftScorer
from autoprompt_search.testing import tiny_causal_lm, tiny_masked_lm

SOFT = {"steps": 4, "batch_size": 6, "eval_every": 2, "init": "random", "lr": 0.5}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    dirs = {}
    for kind, make in (("causal", tiny_causal_lm), ("masked", tiny_masked_lm)):
        folder = tmp_path_factory.mktemp(kind)
        model, tok = make()
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        dirs[kind] = str(folder)
    return dirs


def _soft_run(toy_task, model_dir, out, template):
    backend = load_model(model_dir, device="cpu")
    run_search("soft", task=toy_task, model=model_dir, template=template, out=out, seed=0,
               options=SOFT, backend=backend, progress=False)
    return backend


def test_peft_export_round_trip_gives_the_same_predictions(toy_task, model_dirs, tmp_path):
    peft = pytest.importorskip("peft", reason="the peft extra is not installed")
    from transformers import AutoModelForCausalLM

    template = "[T] [T] {sentence} it was [P] ."
    backend = _soft_run(toy_task, model_dirs["causal"], tmp_path / "run", template)
    [adapter] = export_prompts([tmp_path / "run"], "peft", tmp_path / "adapter")
    soft = SoftPrompt.load(tmp_path / "run")
    examples = toy_task.examples("test")
    scorer = SoftScorer(backend, toy_task, template)
    ours = scorer.evaluate(examples, soft.vectors)

    base = AutoModelForCausalLM.from_pretrained(model_dirs["causal"])
    model = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
    assert model.peft_config["default"].peft_type == "PROMPT_TUNING"
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight.detach(), soft.vectors)
    word_ids = [ids[0] for ids in scorer.label_words.word_ids]  # one single-token word per class here
    k = soft.num_slots
    preds = []
    with torch.no_grad():
        for p in scorer.encode(examples):
            assert p.trigger_pos == tuple(range(k))  # the [T] slots are the prefix
            logits = model(input_ids=torch.tensor([p.ids[k:]])).logits[0]  # virtual tokens first
            preds.append(int(logits[p.predict_pos, word_ids].argmax()))
    assert preds == ours.predictions
    gold = [ex.label for ex in examples]
    assert sum(a == b for a, b in zip(preds, gold)) / len(gold) == pytest.approx(ours.metrics["accuracy"])
    meta = json.loads((adapter / "autoprompt_search.json").read_text())
    assert meta["input_template"] == "{sentence} it was [P] ."
    assert SoftPrompt.load(adapter).source == "peft"  # and it reads back as a PEFT adapter


def test_peft_export_refuses_what_prompt_tuning_cannot_express(toy_task, model_dirs, tmp_path):
    _soft_run(toy_task, model_dirs["causal"], tmp_path / "mid", "{sentence} [T] [T] it was [P] .")
    with pytest.raises(UserError, match="every \\[T\\] slot must open the template"):
        export_prompts([tmp_path / "mid"], "peft", tmp_path / "a")
    _soft_run(toy_task, model_dirs["masked"], tmp_path / "bert", "[T] [T] {sentence} it was [P] .")
    with pytest.raises(UserError, match=r"puts \[CLS\] before the \[T\] slots"):
        export_prompts([tmp_path / "bert"], "peft", tmp_path / "b")
    with pytest.raises(UserError, match="pass --out FOLDER"):
        export_prompts([tmp_path / "mid"], "peft", None)


@pytest.fixture
def toy_task_file(tmp_path, toy_task):
    """The toy task as a YAML file (a result names its task by file)."""
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({
        "name": "toy", "fields": ["sentence"], "labels": ["negative", "positive"],
        "data": {s: str(tmp_path / f"{s}.tsv") for s in ("train", "dev", "test")},
        "verbalizer": {"negative": ["bad"], "positive": ["great"]}, "prompts": ["{sentence} it was [P] ."]}))
    return path


def _gradient_run(toy_task_file, model_dir, out):
    from autoprompt_search.core.tasks import Task

    task = Task.load(toy_task_file)
    run_search("gradient", task=task, model=model_dir, template="{sentence} [T] it was [P] .", out=out,
               seed=0, options={"iterations": 1, "k": 2, "batch_size": 4, "init": "random"},
               backend=load_model(model_dir, device="cpu"), progress=False)
    return task


def test_lm_eval_yaml_loads_with_lm_eval(toy_task_file, model_dirs, tmp_path):
    task = _gradient_run(toy_task_file, model_dirs["causal"], tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    [path] = export_prompts([tmp_path / "run"], "lm-eval", tmp_path / "lm")
    config = yaml.safe_load(path.read_text())
    for key in ("task", "dataset_path", "dataset_kwargs", "output_type", "doc_to_text", "doc_to_choice",
                "doc_to_target", "test_split", "validation_split", "training_split", "metric_list"):
        assert key in config, key
    assert config["doc_to_choice"] == ["bad", "great"] and config["output_type"] == "multiple_choice"

    lm_eval = pytest.importorskip("lm_eval.tasks", reason="the lm-eval extra is not installed")
    from lm_eval.tasks import TaskManager, get_task_dict

    loaded = get_task_dict([config["task"]], TaskManager(include_path=str(tmp_path / "lm")))
    lm_task = loaded[config["task"]]
    docs = list(lm_task.test_docs())
    examples = task.examples("test")
    assert len(docs) == len(examples)
    prompt_until_p = result["prompt"].split("[P]")[0].rstrip()
    for doc, ex in zip(docs, examples):
        assert lm_task.doc_to_text(doc) == prompt_until_p.replace("{sentence}", ex.fields["sentence"])
        assert lm_task.doc_to_target(doc) == ex.label
        assert lm_task.doc_to_choice(doc) == ["bad", "great"]
    assert lm_eval is not None


def test_lm_eval_export_errors(toy_task_file, model_dirs, tmp_path):
    _gradient_run(toy_task_file, model_dirs["causal"], tmp_path / "run")
    with pytest.raises(UserError, match="writes a folder"):
        export_prompts([tmp_path / "run"], "lm-eval", tmp_path / "tasks.yaml")
    with pytest.raises(UserError, match="pass --out FOLDER"):
        export_prompts([tmp_path / "run"], "lm-eval", None)


def test_projection_masks_belong_to_their_backend():
    """A mask cached for a freed backend is never handed to a new backend (which may reuse its id())."""
    import gc

    from autoprompt_search.models import wrap_model
    from autoprompt_search.scoring.softprompt import projection_mask

    for _ in range(3):
        causal = wrap_model(*tiny_causal_lm(), name="c")
        assert projection_mask(causal).shape[0] == causal.vocab_size
        del causal
        gc.collect()
        masked = wrap_model(*tiny_masked_lm(), name="m")
        assert projection_mask(masked).shape[0] == masked.vocab_size
        del masked
        gc.collect()
