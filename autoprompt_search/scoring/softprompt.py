"""Soft prompts: continuous vectors at a template's [T] slots, scored with gradients.

* :class:`SoftScorer` -- class log-probabilities of examples when the [T] slots hold
  given vectors instead of token embeddings (differentiable in the vectors); the
  same class score as :class:`~autoprompt_search.scoring.scorer.PromptScorer` (log-sum-exp of
  label-word log-probs, multi-token words scored as a sequence by causal LMs).
* :class:`SoftPrompt` -- the saved artifact: ``soft_prompt.safetensors`` (one tensor
  ``soft_prompt`` of shape ``[K, d]``) plus ``soft_prompt.json`` (template, model, task,
  verbalizer, dimensions, scores, provenance). :meth:`SoftPrompt.load` also reads a
  PEFT prompt-tuning adapter folder.
* :func:`projection_mask` / :func:`round_trips` -- which tokens a projection may pick,
  and whether a projected prompt's text re-tokenises to the projected ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.errors import UserError
from ..core.results import atomic_write, provenance, write_json
from ..core.sampling import stratified_sample
from ..core.tasks import Task
from ..core.templates import Template
from ..models.base import LMBackend, PrefixCache
from ..models.encoding import EncodedPrompt
from .calibration import DEFAULT_PREMISE, Calibration, CalibrationRecord, estimate_calibration
from .evaluation import Evaluation, evaluate_examples, evaluation_from_scores
from .objective import TriggerObjective
from .scorer import PromptScorer

SOFT_FORMAT = "autoprompt-search/soft-prompt"
TENSOR_FILE = "soft_prompt.safetensors"
META_FILE = "soft_prompt.json"


# --- differentiable scoring -------------------------------------------------------
class SoftScorer:
    """Class scores with vectors in the [T] slots; gradients flow into the vectors.

    A thin layer over the trigger-slot objective (:class:`~autoprompt_search.scoring.objective.TriggerObjective`)
    that takes encoded prompts and returns exact log-probabilities.
    """

    def __init__(self, backend: LMBackend, task: Task, template: str | Template,
                 verbalizer: dict[str, list[str]] | None = None) -> None:
        if task.is_open_vocabulary:
            raise UserError(f"task '{task.name}' is open-vocabulary (LAMA); soft prompts and PEZ "
                            "support classification tasks")
        self.scorer = PromptScorer(backend, task, template, verbalizer)
        self.scorer.check_direct("soft prompts and PEZ")
        self.backend = backend
        self.task = task
        self.template = self.scorer.template
        self.num_slots = self.template.num_triggers
        if self.num_slots == 0:
            raise UserError(f"template {self.template.source!r} has no [T] slot for a soft prompt; "
                            "add some, e.g. '{sentence} [T] [T] [T] [P] .'")
        self.label_words = self.scorer.label_words
        self.dim = backend.input_embeddings().shape[1]
        self.objective = TriggerObjective(self.scorer)  # label words scored as whole words

    def encode(self, examples: Sequence) -> list[EncodedPrompt]:
        """Encode examples with placeholder ids in the [T] slots (replaced by vectors later)."""
        return self.scorer.encode(examples, [self.backend.pad_id] * self.num_slots)

    def cache(self, prompts: Sequence[EncodedPrompt]) -> PrefixCache | None:
        """Key/value states of each prompt's tokens before its first [T] (causal LMs only).

        That part never changes during training, so it is run once; later calls of
        :meth:`word_logprobs` pass ``prefix`` and the row of each prompt in it.
        """
        return self.objective.prefix_cache(prompts)

    def word_logprobs(self, prompts: Sequence[EncodedPrompt], vectors: torch.Tensor,
                      prefix: PrefixCache | None = None,
                      prefix_rows: Sequence[int] | None = None) -> torch.Tensor:
        """[N, W] label-word log-probs; ``vectors`` is [K, d] (the soft prompt).

        With ``prefix`` (from :meth:`cache`), prompt n continues cached row ``prefix_rows[n]``
        and only its tokens from the first [T] on are run.
        """
        batch = self.objective.batch(prompts, None, prefix, prefix_rows)
        return self.objective.vector_word_logprobs(batch, vectors)

    def class_logprobs(self, prompts: Sequence[EncodedPrompt], vectors: torch.Tensor,
                       prefix: PrefixCache | None = None,
                       prefix_rows: Sequence[int] | None = None) -> torch.Tensor:
        """[N, C] class log-probs (log-sum-exp of the class's label words)."""
        return self.label_words.class_scores(self.word_logprobs(prompts, vectors, prefix, prefix_rows))

    @torch.no_grad()
    def examples_class_logprobs(self, examples: Sequence, vectors: torch.Tensor) -> torch.Tensor:
        """[N, C] class log-probs of ``examples`` with ``vectors`` in the slots (for calibration
        estimates)."""
        return self.class_logprobs(self.encode(examples), vectors).detach().cpu()

    def loss(self, prompts: Sequence[EncodedPrompt], vectors: torch.Tensor, gold: Sequence[int],
             prefix: PrefixCache | None = None, prefix_rows: Sequence[int] | None = None) -> torch.Tensor:
        """Mean cross-entropy of the gold class (class scores renormalised over the classes)."""
        return self.objective.vector_loss(self.objective.batch(prompts, gold, prefix, prefix_rows),
                                          vectors)

    @torch.no_grad()
    def evaluate(self, examples: Sequence, vectors: torch.Tensor, split: str = "dev",
                 batch_size: int = 32, prefix: PrefixCache | None = None,
                 progress: bool = False,
                 calibration: CalibrationRecord | None = None) -> Evaluation:
        """Accuracy, macro-F1 and per-example results of the soft prompt on ``examples``
        (``prefix``: the :meth:`cache` of these examples' prompts, when scored repeatedly;
        ``calibration``: offsets subtracted from the class scores)."""
        prompts = self.encode(examples)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
        scores = torch.empty(len(prompts), len(self.task.labels))
        for start in tqdm(range(0, len(order), batch_size), desc="scoring soft prompt",
                          unit="batch", disable=not progress, leave=False):
            idx = order[start : start + batch_size]
            scores[idx] = self.class_logprobs([prompts[i] for i in idx], vectors, prefix,
                                              idx if prefix is not None else None).cpu()
        ev = evaluation_from_scores(self.template.source + " (soft)", split, scores,
                                    [ex.label for ex in examples], self.task.labels, calibration)
        ev.metrics["loss"] = ev.loss
        return ev


# --- the saved artifact -------------------------------------------------------------
@dataclass
class SoftPrompt:
    """A soft prompt: ``[K, d]`` vectors for the [T] slots of ``template``, with metadata."""

    vectors: torch.Tensor
    template: str | None = None
    model: str | None = None
    task: str | None = None
    verbalizer: dict[str, list[str]] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    source: str = "autoprompt-search"  # or "peft"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_slots(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def metadata(self) -> dict[str, Any]:
        return {
            "format": SOFT_FORMAT, "tensor_file": TENSOR_FILE, "tensor_name": "soft_prompt",
            "num_slots": self.num_slots, "dim": self.dim, "template": self.template,
            "model": self.model, "task": self.task, "verbalizer": self.verbalizer,
            "scores": self.scores, "config": self.config, "source": self.source,
            "extra": self.extra, "versions": provenance(),
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``soft_prompt.safetensors`` and ``soft_prompt.json`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{TENSOR_FILE}.tmp"
        save_file({"soft_prompt": self.vectors.detach().float().cpu().contiguous()}, str(tmp))
        tmp.replace(folder / TENSOR_FILE)
        write_json(folder / META_FILE, self.metadata())
        return folder / META_FILE

    @classmethod
    def load(cls, path: str | Path) -> SoftPrompt:
        """Read a saved soft prompt (its folder, JSON or tensor file), a run folder of the
        ``soft`` strategy, or a PEFT prompt-tuning adapter folder."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise UserError(f"soft prompt not found: {path}")
        if path.is_dir() and (path / "adapter_config.json").is_file():
            return load_peft_prompt(path)
        if path.is_dir():
            path = path / META_FILE
        elif path.suffix == ".safetensors":
            path = path.with_name(META_FILE)
        if not path.is_file():
            raise UserError(f"{path.parent}: no {META_FILE} (a saved soft prompt) and no "
                            "adapter_config.json (a PEFT prompt-tuning adapter)")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg})") from None
        if meta.get("format") != SOFT_FORMAT:
            raise UserError(f"{path}: not an autoprompt-search soft prompt (format '{SOFT_FORMAT}')")
        tensor_path = path.parent / meta.get("tensor_file", TENSOR_FILE)
        if not tensor_path.is_file():
            raise UserError(f"{path}: its tensor file {tensor_path.name} is missing")
        vectors = load_file(str(tensor_path))[meta.get("tensor_name", "soft_prompt")]
        if list(vectors.shape) != [meta["num_slots"], meta["dim"]]:
            raise UserError(f"{tensor_path}: shape {list(vectors.shape)} does not match the metadata "
                            f"[{meta['num_slots']}, {meta['dim']}]")
        return cls(vectors.float(), meta.get("template"), meta.get("model"), meta.get("task"),
                   meta.get("verbalizer"), meta.get("scores") or {}, meta.get("config") or {},
                   meta.get("source", "autoprompt-search"), meta.get("extra") or {})


def load_peft_prompt(folder: Path) -> SoftPrompt:
    """The virtual-token embeddings of a PEFT prompt-tuning adapter as a soft prompt.

    PEFT puts the virtual tokens before the whole input, so the template is the
    virtual tokens as [T] slots followed by the task's own prompt (chosen by the caller).
    """
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    kind = config.get("peft_type")
    if kind != "PROMPT_TUNING":
        raise UserError(f"{folder}: a PEFT adapter of type {kind!r}; only PROMPT_TUNING adapters hold "
                        "virtual-token embeddings that can be projected")
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        state = load_file(str(weights))
    elif (folder / "adapter_model.bin").is_file():
        state = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise UserError(f"{folder}: no adapter_model.safetensors or adapter_model.bin")
    keys = [k for k in state if k.endswith("prompt_embeddings")]
    if len(keys) != 1:
        raise UserError(f"{folder}: expected one 'prompt_embeddings' tensor, found {sorted(state)}")
    vectors = state[keys[0]].float()
    n = int(config.get("num_virtual_tokens") or vectors.shape[0])
    if (config.get("num_transformer_submodules") or 1) > 1:
        vectors = vectors[:n]  # encoder-decoder models keep one copy per submodule
    return SoftPrompt(vectors, template=None, model=config.get("base_model_name_or_path"),
                      source="peft", extra={"adapter": str(folder), "num_virtual_tokens": n})


# --- token filters and the re-tokenisation check ------------------------------------
def projection_mask(backend: LMBackend, *, whole_words: bool = True, ascii_only: bool = True,
                    exclude_ids: Sequence[int] = ()) -> torch.Tensor:
    """[V] boolean: tokens a projection may pick -- the gradient search's trigger filter
    (:func:`autoprompt_search.core.tokens.allowed_token_mask`: no special tokens; with
    ``whole_words`` only word-start alphabetic tokens; with ``ascii_only`` printable ASCII)."""
    from ..core.tokens import allowed_token_mask

    return backend.memo(("projection_mask", whole_words, ascii_only, tuple(exclude_ids)),
                        lambda: allowed_token_mask(backend.tokenizer, backend.vocab_size,
                                                   whole_words=whole_words, ascii_only=ascii_only,
                                                   exclude_ids=exclude_ids))


def render_triggers(backend: LMBackend, template: Template, ids: Sequence[int]) -> str:
    """The template as text with the trigger ids written into its [T] slots exactly as scored
    (the gradient search's rendering, which :func:`round_trips` checks)."""
    from ..core.tokens import render_prompt

    return render_prompt(backend.tokenizer, template, ids)


def round_trips(backend: LMBackend, template: Template, ids: Sequence[int]) -> bool:
    """Whether the rendered prompt's text tokenises back to exactly the scored ids."""
    from ..core.tokens import retokenizes

    return retokenizes(backend.tokenizer, backend.encoder.prepare(template), list(ids))


def save_tensor_state(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically save a dict of tensors (search checkpoints)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(tensors, tmp)
    tmp.replace(path)


__all__ = ["SoftPrompt", "SoftScorer", "atomic_write", "load_peft_prompt", "projection_mask",
           "render_triggers", "round_trips"]


# --- projection report (the ``project`` command) ------------------------------------
def resolve_template(soft: SoftPrompt, task: Task | None, template: str | None) -> str | None:
    """The template the soft prompt's vectors fill: given, saved, or (PEFT) the virtual
    tokens as [T] slots before the task's first human prompt."""
    if template is not None:
        return template
    if soft.template is not None:
        return soft.template
    if task is None:
        return None
    if not task.prompts:
        raise UserError(f"task '{task.name}' has no human prompt to put after the PEFT virtual "
                        "tokens; pass --template with one [T] per virtual token")
    return "[T]" * soft.num_slots + task.prompts[0].template


def project_soft_prompt(soft: SoftPrompt, backend: LMBackend, *, metric: str = "cosine", top_n: int = 5,
                        whole_words: bool = True, ascii_only: bool = True, task: Task | None = None,
                        template: str | None = None, split: str = "dev", limit: int | None = None,
                        evaluate: bool = True, progress: bool = False,
                        calibration: str | None = None, premise: str | None = None,
                        limit_seed: int = 0) -> dict[str, Any]:
    """Project a soft prompt to its nearest tokens; with a task, evaluate the soft prompt and
    the projected hard prompt on the same examples of ``split`` (``limit``: a seeded,
    ``limit_seed``, class-stratified sample, as ``evaluate`` draws), each calibrated with its
    own offsets (``calibration``; default: the mode the soft prompt was trained with)."""
    from ..core.projection import project

    dim = backend.input_embeddings().shape[1]
    if soft.dim != dim:
        raise UserError(f"the soft prompt has {soft.dim}-dimensional vectors but {backend.name}'s "
                        f"embeddings are {dim}-dimensional; pass the base model it was trained for")
    allowed = projection_mask(backend, whole_words=whole_words, ascii_only=ascii_only)
    proj = project(soft.vectors.to(backend.device), backend.input_embeddings(), metric, top_n, allowed)
    dec = backend.encoder.decode_trigger
    slots = []
    for k in range(soft.num_slots):
        neigh = [{"id": int(i), "token": dec(int(i)), "distance": float(d)}
                 for i, d in zip(proj.neighbour_ids[k], proj.neighbour_distance[k])]
        slots.append({"slot": k, "id": neigh[0]["id"], "token": neigh[0]["token"],
                      "distance": neigh[0]["distance"], "neighbours": neigh[1:]})
    report: dict[str, Any] = {"model": backend.name, "metric": metric, "num_slots": soft.num_slots,
                              "trigger_ids": proj.token_ids, "slots": slots,
                              "mean_distance": float(proj.distance.mean()), "source": soft.source}
    src = resolve_template(soft, task, template)
    if src is None:
        return report
    parsed = Template.parse(src, task.fields if task is not None else None)
    if parsed.num_triggers != soft.num_slots:
        raise UserError(f"template {src!r} has {parsed.num_triggers} [T] slots; the soft prompt has "
                        f"{soft.num_slots} vectors")
    prepared = backend.encoder.prepare(parsed)
    report.update(template=src, prompt=render_triggers(backend, parsed, proj.token_ids),
                  round_trips=round_trips(backend, parsed, proj.token_ids))
    if task is None or not evaluate:
        return report
    verbalizer = soft.verbalizer or None
    examples = stratified_sample(task.examples(split), limit, limit_seed)
    mode = Calibration.parse(calibration or soft.config.get("calibration") or "none")
    premise = premise or soft.config.get("premise") or DEFAULT_PREMISE
    scorer = SoftScorer(backend, task, prepared, verbalizer)
    vectors = soft.vectors.to(backend.device)
    soft_cal = None if mode is Calibration.NONE else estimate_calibration(
        mode, scorer.scorer, premise=premise,
        score=lambda exs: scorer.examples_class_logprobs(exs, vectors))
    soft_ev = scorer.evaluate(examples, vectors, split, progress=progress, calibration=soft_cal)
    hard = evaluate_examples(PromptScorer(backend, task, prepared, verbalizer), examples,
                             proj.token_ids, split, progress=progress, calibration=mode,
                             premise=premise)
    report["evaluation"] = {"task": task.name, "split": split, "n": len(examples),
                            "soft": soft_ev.metrics, "projected": hard.metrics,
                            "calibration": mode.value,
                            "soft_calibration": None if soft_cal is None else soft_cal.to_json(),
                            "projected_calibration": (None if hard.calibration is None
                                                      else hard.calibration.to_json())}
    return report
