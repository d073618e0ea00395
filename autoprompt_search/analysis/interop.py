"""Export found prompts to other tools: PEFT prompt-tuning adapters and lm-evaluation-harness tasks.

* :func:`export_peft` -- a soft prompt whose ``[T]`` slots open the template (nothing,
  not even a BOS or ``[CLS]`` token, before them) is exactly PEFT's prompt tuning:
  virtual tokens before the input. It is written as a ``PROMPT_TUNING`` adapter
  (``adapter_config.json`` + ``adapter_model.safetensors``) that
  ``peft.PeftModel.from_pretrained(base_model, folder)`` loads; ``autoprompt_search.json``
  beside it says which text follows the virtual tokens and which label words to read.
* :func:`export_lm_eval` -- one lm-evaluation-harness task YAML per found prompt
  (``output_type: multiple_choice``, ``doc_to_text`` up to ``[P]``, ``doc_to_choice``
  the first label word of each class, ``doc_to_target`` the gold class index), with the
  task's examples written beside it as JSON lines so the YAML runs anywhere
  (``lm_eval --include_path FOLDER --tasks NAME``). Keys follow lm-eval's task guide
  (``docs/task_guide.md``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import UserError
from ..core.results import PromptResult, atomic_write, provenance, write_json
from ..core.tasks import SPLITS, Task
from ..core.templates import Field, Predict, Template, Text, Trigger
from ..scoring.calibration import CalibrationRecord
from ..scoring.softprompt import SoftPrompt
from .filling import fewshot_text

PEFT_META = "autoprompt_search.json"
LM_EVAL_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


# --- PEFT ---------------------------------------------------------------------------
def export_peft(source: Path, out: Path, *, tokenizer=None, kind: str | None = None) -> Path:
    """Write the soft prompt of ``source`` (a ``soft`` run folder or ``soft_prompt.json``) as a
    PEFT ``PROMPT_TUNING`` adapter in ``out``. ``tokenizer``/``kind`` default to the model's."""
    soft = SoftPrompt.load(source)
    if soft.source == "peft":
        raise UserError(f"{source} is already a PEFT adapter")
    if not soft.template or not soft.model:
        raise UserError(f"{source}: the soft prompt records no template or model")
    template = Template.parse(soft.template)
    lead = 0
    while lead < len(template.segments) and isinstance(template.segments[lead], Trigger):
        lead += 1
    if lead != soft.num_slots or template.num_triggers != soft.num_slots:
        raise UserError(f"template {soft.template!r}: PEFT prompt tuning puts its virtual tokens before "
                        "the whole input, so every [T] slot must open the template "
                        "(e.g. '[T] [T] [T] {sentence} It was [P] .'); this soft prompt cannot be an adapter")
    if tokenizer is None or kind is None:
        from ..models.loading import load_tokenizer

        tokenizer, kind = load_tokenizer(soft.model)
    from ..models.encoding import PromptEncoder

    encoder = PromptEncoder(tokenizer, kind)
    leading = encoder.prefix_special
    if leading:
        names = tokenizer.convert_ids_to_tokens(list(leading))
        raise UserError(f"{soft.model}'s tokenizer puts {' '.join(names)} before the [T] slots, and PEFT "
                        "puts virtual tokens before that; the adapter would score a different input")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    vectors = soft.vectors.detach().float().cpu().contiguous()
    save_file({"prompt_embeddings": vectors}, str(out / "adapter_model.safetensors"))
    config = {
        "peft_type": "PROMPT_TUNING", "task_type": encoder.peft_task_type,
        "num_virtual_tokens": soft.num_slots, "token_dim": soft.dim, "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM", "inference_mode": True, "base_model_name_or_path": soft.model,
        "revision": None, "prompt_tuning_init_text": None, "tokenizer_name_or_path": None,
        "modules_to_save": None,
    }
    write_json(out / "adapter_config.json", config)
    rest = Template(template.source, template.segments[lead:])
    write_json(out / PEFT_META, {
        "format": "autoprompt-search/peft-export", "model": soft.model, "task": soft.task,
        "template": soft.template, "input_template": _text_of(rest, keep_predict=True),
        "verbalizer": soft.verbalizer, "scores": soft.scores, "source": str(source),
        "versions": provenance(),
    })
    return out


def _text_of(template: Template, keep_predict: bool) -> str:
    out = ""
    for seg in template.segments:
        sep = " " if seg.space and out else ""
        if isinstance(seg, Text):
            out += sep + seg.text
        elif isinstance(seg, Field):
            out += sep + "{" + seg.name + "}"
        elif isinstance(seg, Predict):
            if not keep_predict:
                return out
            out += sep + "[P]"
    return out


# --- lm-evaluation-harness ------------------------------------------------------------
def export_lm_eval(results: list[tuple[str, Path, PromptResult]], out: Path, *, data_root=None,
                   split_seed=None, prefix: str = "autoprompt") -> list[Path]:
    """One lm-eval task YAML per (name, source, result) in the folder ``out``, plus the data."""
    from ..scoring.specs import load_task

    out = Path(out)
    if out.suffix:
        raise UserError(f"--format lm-eval writes a folder (task YAMLs and their data): pass --out FOLDER, "
                        f"not {out}")
    written: list[Path] = []
    data_written: dict[str, dict[str, str]] = {}
    for name, source, res in results:
        task = load_task(res.task, data_root, split_seed)
        if task.is_open_vocabulary:
            raise UserError(f"{source}: task '{task.name}' is open-vocabulary (LAMA); lm-eval export "
                            "writes multiple-choice tasks over the task's classes")
        if task.name not in data_written:
            data_written[task.name] = _write_examples(task, out / "data" / _slug(task.name))
        template = Template.parse(res.prompt, task.fields)
        if res.scoring != "direct":
            raise UserError(f"{source}: the prompt is scored with --scoring {res.scoring}; lm-eval's "
                            "multiple_choice reads p(label word | prompt), so the task would "
                            "score another rule")
        if template.text_after_predict:
            raise UserError(f"{source}: the prompt has text after [P]; lm-eval's doc_to_text ends "
                            "at [P], so the task would score the label word alone, not the "
                            "filled-in text from the word on")
        verbalizer = res.verbalizer or task.verbalizer
        head = fewshot_text(res, template, data_root)
        task_name = f"{prefix}_{_slug(task.name)}_{_slug(name)}"
        files = data_written[task.name]
        config: dict[str, Any] = {
            "task": task_name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {LM_EVAL_SPLITS[s]: f for s, f in files.items()}},
            "output_type": "multiple_choice",
            "doc_to_text": _jinja_literal(head) + _jinja_prompt(template),
            "doc_to_choice": [verbalizer[label][0] for label in task.labels],
            "doc_to_target": "label",
            "target_delimiter": " " if template.segments[template.predict_index].space else "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "prompt": res.prompt, "model": res.model,
                         "source": str(source),
                         "versions": {k: str(v) for k, v in provenance().items()}},
        }
        if res.calibration and res.calibration.get("mode", "none") != "none":
            # lm-eval's acc takes the argmax of the raw choice log-likelihoods; the calibrated
            # rule subtracts these offsets from them (read them with --log_samples)
            record = CalibrationRecord.from_json(res.calibration)
            config["metadata"]["calibration"] = record.to_json()
            config["metadata"]["decision_rule"] = (
                record.decision_rule() + ". lm-eval's acc is the uncalibrated argmax; apply the "
                "offsets to the per-choice log-likelihoods that --log_samples writes")
        for ours, theirs in LM_EVAL_SPLITS.items():
            if ours in files:
                config[{"train": "training_split", "dev": "validation_split",
                        "test": "test_split"}[ours]] = theirs
        path = out / f"{task_name}.yaml"
        atomic_write(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000))
        written.append(path)
    return written


def _write_examples(task: Task, folder: Path) -> dict[str, str]:
    """The task's splits as JSON lines (fields + gold class index); paths as lm-eval reads them."""
    files = {}
    for split in SPLITS:
        try:
            examples = task.examples(split)
        except UserError:
            if split == "test":
                raise
            continue  # a task without train or dev data still exports its test split
        path = folder / f"{split}.jsonl"
        atomic_write(path, "".join(json.dumps({**ex.fields, "label": ex.label}, ensure_ascii=False) + "\n"
                                   for ex in examples))
        files[split] = str(path.resolve())
    return files


def _jinja_prompt(template: Template) -> str:
    """The prompt up to [P] as a Jinja template over the example's fields."""
    if template.num_triggers:
        raise UserError("the prompt still has [T] slots; export the result's rendered prompt")
    out = ""
    for seg in template.segments:
        sep = " " if seg.space and out else ""
        if isinstance(seg, Predict):
            return out
        if isinstance(seg, Text):
            out += _jinja_literal(sep + seg.text)
        elif isinstance(seg, Field):
            out += _jinja_literal(sep) + "{{" + seg.name + "}}"
    return out


def _jinja_literal(text: str) -> str:
    return "{% raw %}" + text + "{% endraw %}" if re.search(r"\{\{|\{%|\{#", text) else text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "prompt"

