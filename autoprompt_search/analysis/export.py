"""Export found prompts: plain text templates, JSON records, and filled prompts per example.

* ``txt``  -- one line per prompt: the template as text (``{field}`` slots, triggers
  written out, ``[P]`` where the answer goes), a tab, then the label words
  (``negative=terrible positive=great``);
* ``json`` -- the prompt as a result record (the ``result.json`` format), which
  ``evaluate --prompt-file`` reads back; several runs give one file each in a folder;
* ``jsonl`` -- one result record per line;
* ``peft`` -- a ``soft`` run's vectors as a PEFT ``PROMPT_TUNING`` adapter folder;
* ``lm-eval`` -- an lm-evaluation-harness task YAML per prompt, with its data
  (both in :mod:`autoprompt_search.analysis.interop`).

A calibrated prompt carries its calibration record (mode, offsets per class, what they were
estimated from) and every format states the decision rule it needs: ``extra.export.rule`` in
json/jsonl, a third tab-separated column in txt (``predict argmax_c log p(c|x) - offset_c
...``). :func:`calibrate_results` estimates offsets for results saved without any
(``export --calibration MODE``). An ensemble (``--strategy auto --ensemble K``) is exported as
its K member prompts with their weights (json/jsonl: ``extra.ensemble``; txt: a line each).

:func:`fill_prompts` writes, for every row of a data file, the prompt filled in with
that row (demonstrations included), ready to paste into another system.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from ..core.data import read_rows
from ..core.errors import UserError
from ..core.results import PromptResult, atomic_write, write_json
from ..core.templates import Template
from ..scoring.calibration import Calibration, CalibrationRecord
from .filling import fewshot_text, fill_template

__all__ = ["ExportFormat", "export_prompts", "fill_prompts", "fill_template", "load_results", "write_filled"]

class ExportFormat(str, Enum):
    """What ``export --format`` writes."""

    TXT = "txt"
    JSON = "json"
    JSONL = "jsonl"
    PEFT = "peft"
    LM_EVAL = "lm-eval"


FORMATS = tuple(f.value for f in ExportFormat)
FILL_FORMATS = (ExportFormat.TXT.value, ExportFormat.JSON.value, ExportFormat.JSONL.value)


@dataclass
class Exported:
    """A found prompt with where it came from."""

    name: str
    source: Path
    result: PromptResult


def load_results(paths: list[Path]) -> list[Exported]:
    """Results from run folders or ``result.json`` files (a folder of runs is searched one level down)."""
    if not paths:
        raise UserError("give at least one run folder or result.json to export")
    out: list[Exported] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise UserError(f"no such run folder or result file: {path}")
        if path.is_dir() and not (path / "result.json").is_file():
            found = sorted(path.glob("*/result.json"))
            if not found:
                raise UserError(f"{path} holds no result.json (nor do its sub-folders); "
                                "is the search finished?")
            out += [Exported(p.parent.name, p, PromptResult.load(p)) for p in found]
        else:
            res = PromptResult.load(path)
            file = path / "result.json" if path.is_dir() else path
            out.append(Exported(file.parent.name if file.name == "result.json" else file.stem,
                                file, res))
    names: dict[str, int] = {}
    for e in out:  # unique names for files written per prompt
        if e.name in names:
            names[e.name] += 1
            e.name = f"{e.name}-{names[e.name]}"
        else:
            names[e.name] = 1
    return out


def label_words_text(verbalizer: dict[str, list[str]]) -> str:
    return " ".join(f"{label}={','.join(words)}" for label, words in verbalizer.items())


def calibration_of(result: PromptResult) -> CalibrationRecord:
    """A result's stored calibration (``none`` when it has none)."""
    return CalibrationRecord.from_json(result.calibration) or CalibrationRecord(Calibration.NONE)


def ensemble_members(result: PromptResult) -> list[dict[str, Any]]:
    """The member prompts of an ensemble result (``--strategy auto --ensemble K``); [] otherwise."""
    return ((result.extra or {}).get("ensemble") or {}).get("members", [])


def export_record(e: Exported) -> dict[str, Any]:
    """The result record with export provenance and the decision rule under ``extra.export``."""
    record = e.result.to_dict()
    rule = calibration_of(e.result).decision_rule()
    members = ensemble_members(e.result)
    if members:
        rule = (f"{e.result.extra['ensemble']['rule']}; members (extra.ensemble.members): "
                + "; ".join(f"weight {m['weight']:.6f}: {m['prompt']!r}" for m in members))
    record["extra"] = {**record.get("extra", {}), "export": {
        "source": str(e.source),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "text": e.result.prompt,
        "label_words": label_words_text(e.result.verbalizer),
        "rule": rule,
    }}
    return record


def export_text(items: list[Exported]) -> str:
    """One line per prompt: template, tab, label words (and, for a calibrated prompt, a tab
    and its decision rule with the offsets); an ensemble gives one line per member, its weight
    in the third column."""
    lines = []
    for e in items:
        members = ensemble_members(e.result)
        prompts = [(m["prompt"], m["verbalizer"], CalibrationRecord.from_json(m["calibration"]),
                    f"ensemble member {k + 1} of {len(members)}, weight {m['weight']:.6f}")
                   for k, m in enumerate(members)] or [(e.result.prompt, e.result.verbalizer,
                                                       calibration_of(e.result), "")]
        for prompt, verbalizer, cal, member in prompts:
            if "\n" in prompt or "\t" in prompt:
                raise UserError(f"{e.source}: the prompt holds a tab or newline; export it as json or jsonl")
            line = f"{prompt}\t{label_words_text(verbalizer)}"
            rules = [member] if member else []
            if cal is not None and cal.active:
                rules.append(cal.decision_rule())
            if rules:
                line += "\t" + "; ".join(rules)
            lines.append(line)
    return "".join(line + "\n" for line in lines)


def calibrate_results(items: list[Exported], calibration: Calibration | str, *,
                      premise: str | None = None, data_root=None, dtype: str = "float32") -> None:
    """Give each result without a stored calibration the offsets of ``calibration``, estimated
    with its own model (loaded once per model); a result stored with another mode is an error."""
    from ..models import load_model
    from ..scoring.calibration import estimate_calibration
    from ..scoring.scorer import PromptScorer
    from ..scoring.specs import spec_from_result

    mode = Calibration.parse(calibration)
    backends: dict[str, Any] = {}
    for e in items:
        stored = calibration_of(e.result)
        if stored.active:
            if stored.mode is not mode:
                raise UserError(f"{e.source} was found with calibration {stored.mode.value}; "
                                f"export it without --calibration or with {stored.mode.value}")
            continue
        if mode is Calibration.NONE:
            continue
        spec = spec_from_result(e.result, data_root, e.result.config.get("data_seed"))
        if e.result.model not in backends:
            backends[e.result.model] = load_model(e.result.model, dtype=dtype)
        scorer = PromptScorer(backends[e.result.model], spec.task, spec.template,
                              spec.verbalizer, spec.fewshot, rule=spec.scoring)  # its own rule
        record = estimate_calibration(mode, scorer, spec.triggers,
                                      **({"premise": premise} if premise else {}))
        e.result.calibration = record.to_json()


def export_prompts(paths: list[Path], fmt: str, out: Path | None, *, data_root=None,
                   split_seed=None, calibration: Calibration | str | None = None,
                   premise: str | None = None) -> str | list[Path]:
    """Export the results in ``paths``; returns the text (``out`` None) or the files written.
    ``calibration`` estimates offsets for results stored without any (:func:`calibrate_results`)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt in (ExportFormat.PEFT.value, ExportFormat.LM_EVAL.value) and out is None:
        raise UserError(f"--format {fmt} writes a folder: pass --out FOLDER")
    items = load_results(paths)
    if fmt in (ExportFormat.PEFT.value, ExportFormat.LM_EVAL.value):
        for e in items:
            if ensemble_members(e.result):
                raise UserError(f"{e.source} is an ensemble of {len(ensemble_members(e.result))} "
                                f"prompts; --format {fmt} writes one prompt: export it as json, "
                                "jsonl or txt")
    if calibration is not None:
        calibrate_results(items, calibration, premise=premise, data_root=data_root)
    if fmt == ExportFormat.PEFT.value:
        from .interop import export_peft

        if len(items) == 1:
            return [export_peft(items[0].source.parent, out)]
        return [export_peft(e.source.parent, out / e.name) for e in items]
    if fmt == ExportFormat.LM_EVAL.value:
        from .interop import export_lm_eval

        return export_lm_eval([(e.name, e.source, e.result) for e in items], out, data_root=data_root,
                              split_seed=split_seed)
    if fmt == "txt":
        text = export_text(items)
    elif fmt == "jsonl":
        text = "".join(json.dumps(export_record(e), ensure_ascii=False) + "\n" for e in items)
    elif len(items) == 1:
        text = json.dumps(export_record(items[0]), indent=2, ensure_ascii=False) + "\n"
    else:
        if out is None or out.suffix:
            raise UserError(f"{len(items)} prompts in json format are written one file each: "
                            "pass --out FOLDER (or use --format jsonl for one file)")
        written = []
        for e in items:
            path = out / f"{e.name}.json"
            write_json(path, export_record(e))
            written.append(path)
        return written
    if out is None:
        return text
    if out.is_dir():
        out = out / f"{items[0].name}.{fmt}"
    atomic_write(out, text)
    return [out]


# --- filled prompts ---------------------------------------------------------------------
def fill_prompts(paths: list[Path], data: Path, *, answer: str | None = None, data_root=None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """One record per (prompt, data row): the filled prompt text, ready to paste.

    ``answer`` replaces ``[P]`` (e.g. ``"[MASK]"``); None cuts the prompt at ``[P]``.
    Few-shot demonstrations of the result are written before the query, with their
    label word as the answer.
    """
    rows = read_rows(Path(data))
    if limit is not None:
        rows = rows[:limit]
    records = []
    for e in load_results(paths):
        res = e.result
        fields = _fields_of(res)
        template = Template.parse(res.prompt, fields)
        missing = [f for f in template.field_names if rows and f not in rows[0]]
        if missing:
            raise UserError(f"{data} has no column {', '.join(missing)} that the prompt of "
                            f"{e.source} needs; its columns: {', '.join(rows[0])}")
        head = fewshot_text(res, template, data_root)
        for i, row in enumerate(rows):
            text = head + fill_template(template, {k: str(v) for k, v in row.items()}, answer)
            rec = {"prompt": e.name, "row": i, "text": text}
            records.append(rec)
    return records


def _fields_of(res: PromptResult) -> list[str]:
    return list(dict.fromkeys(Template.parse(res.prompt).field_names))


def write_filled(records: list[dict[str, Any]], fmt: str, out: Path | None) -> str | None:
    """Filled prompts as txt (one per line), json (a list) or jsonl."""
    if fmt == "txt":
        bad = [r for r in records if "\n" in r["text"]]
        if bad:
            raise UserError("the filled prompts hold newlines (e.g. few-shot demonstrations); "
                            "use --format jsonl or json")
        text = "".join(r["text"] + "\n" for r in records)
    elif fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    elif fmt == "json":
        text = json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    else:
        raise UserError(f"--fill writes {', '.join(FILL_FORMATS)}, not '{fmt}'")
    if out is None:
        return text
    atomic_write(out, text)
    return None
