"""Gradient-guided trigger search (AutoPrompt; GCG-style candidate sets) for masked and causal LMs.

One iteration:

1. forward + backward on a batch of training examples to get the gradient of the
   loss with respect to the trigger embeddings (only those get gradients, never
   the model's weights);
2. top-k candidate tokens per trigger position by the first-order estimate
   ``-(e_w . g_j)`` among the allowed tokens (:mod:`autoprompt_search.core.tokens`);
3. candidate trigger sequences (one position changed: a random one, the next one
   in turn, or GCG's mix of positions), minus those whose text does not
   re-tokenise to the same ids, scored together with the current triggers on the
   batch in large batched forward passes (causal LMs reuse the key/value states of
   each example's prefix before the first trigger; logits only at [P], only for
   the label words when they are single tokens);
4. keep the best if it lowers the loss; evaluate on dev when the triggers changed.

The result is the prompt with the best dev accuracy seen (ties: lower dev loss).
The loss is the cross-entropy of the gold class among the class scores
(log-sum-exp of the label words' log-probabilities; causal LMs score label words of
several tokens as whole words). For an open-vocabulary task (LAMA) each candidate
object token is a class, as in ``evaluate_prompt``, so the dev accuracy is precision@1.
Forward passes that run out of memory are retried with half the batch. The objective
(encoding, prefix cache, batched scoring, gradients) is :mod:`autoprompt_search.scoring.objective`.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from ..core.data import Example
from ..core.errors import UserError
from ..models.base import LMBackend
from ..scoring.objective import EncodedBatch, TriggerObjective  # bench/ imports TriggerObjective from here
from ..core.results import PromptResult
from ..scoring.evaluation import retrieval_candidates
from ..scoring.scorer import LabelWords, PromptScorer
from ..core.templates import Field, Predict, Template, Text, Trigger
from ..core.tokens import (
    allowed_token_mask,
    render_prompt,
    gcg_candidates,
    retokenize_mask,
    retokenizes,
    single_position_candidates,
    token_texts,
    top_candidates,
    unique_changed,
)
from .base import SearchContext, Searcher, strategies

POSITION_POLICIES = ("random", "cycle", "gcg")
INIT_CHOICES = ("neutral", "random", "human")


@dataclass
class GradientConfig:
    num_triggers: int = field(default=5, metadata={
        "help": "Trigger slots when no --template is given (template: '{field} [T]... [P]')."})
    k: int = field(default=32, metadata={"help": "Candidate tokens per trigger position (top-k)."})
    position: str = field(default="random", metadata={
        "help": "Which positions change: random (AutoPrompt: one random position), cycle (each "
                "position in turn) or gcg (candidates mixing all positions)."})
    num_candidates: int = field(default=0, metadata={
        "help": "Candidates per iteration for position=gcg (0: k)."})
    iterations: int = field(default=50, metadata={"help": "Iteration budget."})
    time_budget: float = field(default=0.0, metadata={
        "help": "Seconds budget (0: none); the search stops after the iteration that passes it."})
    patience: int = field(default=0, metadata={
        "help": "Stop after this many iterations without a better dev score (0: never)."})
    batch_size: int = field(default=32, metadata={
        "help": "Training examples per iteration (all of them if the split is smaller)."})
    accumulation_steps: int = field(default=1, metadata={
        "help": "Training batches whose gradients are summed per iteration."})
    forward_batch: int = field(default=256, metadata={
        "help": "At most this many rows (candidate x example, times the number of multi-token "
                "label words if any) per forward pass; halved on out-of-memory."})
    forward_tokens: int = field(default=1024, metadata={
        "help": "At most this many tokens (rows x padded width) per forward pass; smaller "
                "passes use the CPU cache better; halved on out-of-memory."})
    eval_batch_size: int = field(default=64, metadata={"help": "Examples per forward pass on dev."})
    init: str = field(default="neutral", metadata={
        "help": "Initial triggers: neutral ([MASK] for masked LMs, else --init-word), random "
                "(allowed tokens) or human (the words of a human prompt before [P])."})
    init_word: str = field(default="the", metadata={
        "help": "The neutral trigger word for causal LMs."})
    init_prompt: str = field(default="", metadata={
        "help": "For init=human: the human prompt's name (default: the task's first prompt)."})
    whole_words: bool = field(default=True, metadata={
        "help": "Only whole-word tokens (letters, start of a word) as candidates."})
    ascii_only: bool = field(default=True, metadata={"help": "Only ASCII tokens as candidates."})
    allow_label_words: bool = field(default=False, metadata={
        "help": "Allow the label words themselves as triggers (open-vocabulary tasks: the "
                "candidate objects, else the gold objects)."})
    deny: list[str] = field(default_factory=list, metadata={
        "help": "Words never used as triggers (comma-separated)."})

    def __post_init__(self) -> None:
        if self.position not in POSITION_POLICIES:
            raise UserError(f"position must be one of {', '.join(POSITION_POLICIES)}, "
                            f"got {self.position!r}")
        if self.init not in INIT_CHOICES:
            raise UserError(f"init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}")
        for name in ("k", "iterations", "batch_size", "accumulation_steps", "forward_batch",
                     "forward_tokens", "eval_batch_size", "num_triggers"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, "
                                f"got {getattr(self, name)}")
        for name in ("num_candidates", "patience", "time_budget"):
            if getattr(self, name) < 0:
                raise UserError(f"{name.replace('_', '-')} must be 0 or more")


@dataclass
class SearchTargets:
    """What the search ranks, and the examples of each split with their gold class."""

    words: LabelWords  # the classes' label words, or one single-token class per candidate object
    examples: dict[str, list[Example]]
    columns: dict[str, torch.Tensor | None]  # per split: the classes ranked (None: all)
    skipped: dict[str, int]  # per split: examples left out (a gold object of several tokens)
    answer_ids: list[int]  # tokens that are no triggers unless --allow-label-words


def search_targets(scorer: PromptScorer, splits: dict[str, list[Example]]) -> SearchTargets:
    """The targets of a classification task (its label words) or of an open-vocabulary task.

    For an open-vocabulary task (LAMA) every token ``evaluate_prompt`` ranks a split's gold
    objects among (``restrict_vocab=True``) is one class; an example's class is its gold
    object's token, examples whose gold object is several tokens are left out, and each
    split is ranked among its own evaluation candidates, so the search's dev accuracy is
    the evaluation's precision@1. The answers (the candidate vocabulary, else the gold
    objects) are kept out of the triggers.
    """
    if scorer.label_words is not None:
        words = scorer.label_words
        return SearchTargets(words, dict(splits), dict.fromkeys(splits), dict.fromkeys(splits, 0),
                             [ids[0] for ids in words.word_ids])
    per_split = {name: retrieval_candidates(scorer, exs) for name, exs in splits.items()}
    cand = sorted(set().union(*(c for c, _ in per_split.values())))
    col = {t: i for i, t in enumerate(cand)}
    examples, columns, skipped = {}, {}, {}
    for name, exs in splits.items():
        split_cand, gold = per_split[name]
        kept = [replace(ex, label=col[gold[ex.extra["label_text"]]]) for ex in exs
                if ex.extra["label_text"] in gold]
        if not kept:
            raise UserError(f"no {name} example of task '{scorer.task.name}' has an object that is "
                            "a single token in this model's vocabulary; the search ranks "
                            "single-token objects")
        examples[name], skipped[name] = kept, len(exs) - len(kept)
        mask = torch.zeros(len(cand), dtype=torch.bool)
        mask[[col[t] for t in split_cand]] = True
        columns[name] = None if mask.all() else mask
    golds = sorted({t for _, gold in per_split.values() for t in gold.values()})
    words = LabelWords(tuple(range(len(cand))), tuple((t,) for t in cand), len(cand))
    return SearchTargets(words, examples, columns, skipped,
                         cand if scorer.task.candidate_vocab else golds)


# --- the searcher ----------------------------------------------------------------------------


@strategies.register("gradient")
class GradientSearch(Searcher):
    """AutoPrompt / GCG trigger search; see the module docstring."""

    name = "gradient"
    Config = GradientConfig

    # --- setup ------------------------------------------------------------------------------
    def _template(self, ctx: SearchContext) -> tuple[str, list[int] | None]:
        """The template to search and, for init=human, the human prompt's trigger ids."""
        cfg = self.config
        backend = ctx.backend
        if cfg.init == "human":
            return human_trigger_template(ctx.task, backend, cfg.init_prompt, ctx.template)
        if ctx.template:
            return ctx.template, None
        field_name = ctx.task.fields[0]
        return "{" + field_name + "} " + " ".join(["[T]"] * cfg.num_triggers) + " [P]", None

    def _initial(self, template: Template, backend: LMBackend, allowed: torch.Tensor,
                 human: list[int] | None) -> list[int]:
        cfg = self.config
        n = template.num_triggers
        if human is not None:
            return human
        if cfg.init == "random":
            pool = allowed.nonzero()[:, 0]
            for _ in range(100):
                pick = pool[torch.randint(len(pool), (n,), generator=self.torch_rng)].tolist()
                if retokenizes(backend.tokenizer, template, pick):
                    return pick
            raise UserError("could not draw random initial triggers that re-tokenise; use "
                            "--init neutral")
        if backend.kind == "masked":
            return [int(backend.tokenizer.mask_token_id)] * n
        out = []
        for seg in template.segments:
            if isinstance(seg, Trigger):
                ids = backend.encoder.text_ids(cfg.init_word, True)
                if len(ids) != 1:
                    raise UserError(f"--init-word {cfg.init_word!r} is {len(ids)} tokens in this "
                                    "vocabulary; choose a single-token word")
                out.append(ids[0])
        return out

    def search(self, ctx: SearchContext) -> PromptResult:
        cfg = self.config
        task = ctx.task
        backend = ctx.backend
        template_src, human = self._template(ctx)
        template = Template.parse(template_src, task.fields)
        if template.num_triggers == 0:
            raise UserError(f"template {template_src!r} has no [T] slot to search; add some, e.g. "
                            "'{sentence} [T] [T] [T] [P] .'")
        scorer = PromptScorer(backend, task, template, batch_size=cfg.eval_batch_size)
        train, dev = task.examples("train"), task.examples("dev")
        if not train or not dev:
            raise UserError(f"task '{task.name}' needs train and dev examples for a search")
        targets = search_targets(scorer, {"train": train, "dev": dev})
        objective = TriggerObjective(scorer, cfg.forward_batch, forward_tokens=cfg.forward_tokens,
                                     targets=targets.words)
        exclude = [] if cfg.allow_label_words else targets.answer_ids
        allowed = allowed_token_mask(backend.tokenizer, backend.vocab_size, exclude_ids=exclude,
                                     whole_words=cfg.whole_words, ascii_only=cfg.ascii_only,
                                     deny=cfg.deny)
        if not allowed.any():
            raise UserError("the token filters leave no candidate token; relax --whole-words, "
                            "--ascii-only or --deny")
        config = {**self.resolved_config(ctx), "template": template_src}
        state = ctx.run.start(config, ctx.resume) if ctx.run is not None else None
        fresh = state is None
        current = self._initial(template, backend, allowed, human) if fresh else state["current"]
        # every example's prefix (before the first trigger) is run once for the whole search
        train = objective.encode(targets.examples["train"], current, targets.columns["train"])
        dev = objective.encode(targets.examples["dev"], current, targets.columns["dev"])
        if fresh:
            dev_acc, dev_loss = self._dev(objective, dev, current)
            state = {"iteration": 0, "current": current, "best": list(current),
                     "best_dev_accuracy": dev_acc, "best_dev_loss": dev_loss,
                     "initial_dev_accuracy": dev_acc, "current_loss": None, "since_best": 0,
                     "elapsed": 0.0, "stopped": None, "history": []}
            if ctx.run is not None:
                ctx.run.log({"step": 0, "triggers": current, "dev_accuracy": dev_acc,
                             "dev_loss": dev_loss, "time": 0.0})
                self._checkpoint(ctx, state)
        else:
            self._restore_rngs(state["rngs"])
            ctx.run.truncate_log(state["iteration"])
            state["stopped"] = None  # budgets may have been raised for the resumed run
        self._loop(ctx, state, template, objective, train, dev, allowed)
        return self._result(ctx, state, template, template_src, scorer, objective, train,
                            targets.skipped)

    # --- the loop -------------------------------------------------------------------------------
    def _loop(self, ctx, state, template, objective, train, dev, allowed) -> None:
        cfg = self.config
        backend = ctx.backend
        emb = backend.input_embeddings()
        started = time.perf_counter() - state["elapsed"]
        bar = tqdm(total=cfg.iterations, initial=state["iteration"], desc="gradient search",
                   unit="it", disable=not ctx.progress)
        bar.set_postfix(best_dev=f"{state['best_dev_accuracy']:.3f}")
        try:
            while state["stopped"] is None and state["iteration"] < cfg.iterations:
                if cfg.time_budget and time.perf_counter() - started >= cfg.time_budget:
                    state["stopped"] = "time budget"
                    break
                record = self._step(state, template, objective, train, dev, allowed, emb, backend)
                state["elapsed"] = time.perf_counter() - started
                record["time"] = round(state["elapsed"], 3)
                if cfg.patience and state["since_best"] >= cfg.patience:
                    state["stopped"] = "patience"
                elif state["iteration"] >= cfg.iterations:
                    state["stopped"] = "iterations"
                state["history"].append({k: record[k] for k in ("step", "loss", "accepted",
                                                                  "dev_accuracy")})
                if ctx.run is not None:
                    ctx.run.log(record)
                    self._checkpoint(ctx, state)
                bar.update(1)
                bar.set_postfix(best_dev=f"{state['best_dev_accuracy']:.3f}",
                                loss=f"{state['current_loss']:.3f}")
        finally:
            bar.close()
        if state["stopped"] is None:
            state["stopped"] = "iterations"

    def _batches(self, train: EncodedBatch) -> list[EncodedBatch]:
        """``accumulation_steps`` training batches (all examples if there are few)."""
        cfg = self.config
        out = []
        for _ in range(cfg.accumulation_steps):
            if cfg.batch_size >= len(train):
                out.append(train)
            else:
                out.append(train.select(sorted(self.rng.sample(range(len(train)),
                                                               cfg.batch_size))))
        return out

    def _step(self, state, template, objective, train, dev, allowed, emb, backend) -> dict:
        cfg = self.config
        current = torch.tensor(state["current"])
        batches = self._batches(train)
        grad = None
        for batch in batches:
            g, batch_loss = objective.gradient(batch, state["current"])
            grad = g if grad is None else grad + g
        cand_allowed = allowed.clone()
        top = top_candidates(grad, emb, cfg.k, cand_allowed)
        num_pos = len(state["current"])
        if cfg.position == "gcg":
            rows = gcg_candidates(current, top, cfg.num_candidates or cfg.k, self.torch_rng)
            positions = sorted({int(p) for p in (rows != current).float().argmax(1).tolist()})
        else:
            pos = (self.rng.randrange(num_pos) if cfg.position == "random"
                   else state["iteration"] % num_pos)
            rows = single_position_candidates(current, top, pos)
            positions = [pos]
        rows = unique_changed(rows, current)
        tried = len(rows)
        if len(rows):
            rows = rows[retokenize_mask(backend.tokenizer, template, rows)]
        # the current triggers' loss on the last batch came with its gradient: score only the candidates
        current_loss = batch_loss
        cand_losses = objective.losses(batches[-1], rows) if len(rows) else torch.empty(0)
        accepted = False
        best_cand_loss = None
        if len(cand_losses):
            i = int(torch.argmin(cand_losses))
            best_cand_loss = float(cand_losses[i])
            if best_cand_loss < current_loss:
                state["current"] = rows[i].tolist()
                current_loss = best_cand_loss
                accepted = True
        state["iteration"] += 1
        state["current_loss"] = current_loss
        record = {"step": state["iteration"], "positions": positions, "loss": current_loss,
                  "best_candidate_loss": best_cand_loss, "candidates": tried,
                  "scored": len(rows), "accepted": accepted, "triggers": state["current"],
                  "dev_accuracy": None}
        state["since_best"] += 1
        if accepted:
            dev_acc, dev_loss = self._dev(objective, dev, state["current"])
            record.update(dev_accuracy=dev_acc, dev_loss=dev_loss)
            if (dev_acc, -dev_loss) > (state["best_dev_accuracy"], -state["best_dev_loss"]):
                state.update(best=list(state["current"]), best_dev_accuracy=dev_acc,
                             best_dev_loss=dev_loss, since_best=0)
        record["best_dev_accuracy"] = state["best_dev_accuracy"]
        return record

    def _dev(self, objective: TriggerObjective, dev: EncodedBatch,
             triggers: list[int]) -> tuple[float, float]:
        """(accuracy, mean loss) of ``triggers`` on the encoded examples ``dev``."""
        scores = objective.class_scores(dev, triggers)
        gold = dev.gold
        acc = float((scores.argmax(-1) == gold).float().mean())
        loss = float(-torch.log_softmax(scores, -1).gather(1, gold[:, None]).mean())
        return acc, loss

    # --- state ----------------------------------------------------------------------------------
    def _rng_state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"python": [version, list(internal), gauss],
                "torch": base64.b64encode(self.torch_rng.get_state().numpy().tobytes()).decode(),
                "numpy": self.np_rng.bit_generator.state}

    def _restore_rngs(self, saved: dict) -> None:
        version, internal, gauss = saved["python"]
        self.rng.setstate((version, tuple(internal), gauss))
        raw = torch.frombuffer(bytearray(base64.b64decode(saved["torch"])), dtype=torch.uint8)
        self.torch_rng.set_state(raw.clone())
        self.np_rng.bit_generator.state = saved["numpy"]

    def _checkpoint(self, ctx: SearchContext, state: dict) -> None:
        state["rngs"] = self._rng_state()
        ctx.run.save_checkpoint(state)

    # --- result ---------------------------------------------------------------------------------
    def _result(self, ctx, state, template, template_src, scorer, objective, train,
                skipped) -> PromptResult:
        backend = ctx.backend
        best = [int(t) for t in state["best"]]
        texts = token_texts(backend.tokenizer)
        tokens = [texts[t] for t in best]
        train_acc, train_loss = self._dev(objective, train, best)
        return PromptResult(
            task=task_reference(ctx.task), template=template_src,
            prompt=render_prompt(backend.tokenizer, template, best),
            model=backend.name, strategy=self.name, seed=self.seed,
            verbalizer=dict(scorer.verbalizer), trigger_ids=best, trigger_tokens=tokens,
            scores={"dev_accuracy": state["best_dev_accuracy"], "dev_loss": state["best_dev_loss"],
                    "train_accuracy": train_acc, "train_loss": train_loss,
                    "initial_dev_accuracy": state["initial_dev_accuracy"]},
            config={**self.resolved_config(ctx), "template": template_src},
            extra={"iterations": state["iteration"], "stopped": state["stopped"],
                   "seconds": round(state["elapsed"], 1),
                   "retokenizes": retokenizes(backend.tokenizer, template, best),
                   "skipped_multi_token": skipped},
        )


def task_reference(task) -> str:
    """How a result names its task so ``evaluate --prompt-file`` can load it again:
    the shipped task's name, else the task file's path."""
    from ..core.tasks import available_tasks

    if task.name in available_tasks() or not task.source.endswith((".yaml", ".yml")):
        return task.name
    return task.source


def human_trigger_template(task, backend: LMBackend, prompt_name: str = "",
                           template: str | None = None) -> tuple[str, list[int]]:
    """A human prompt turned into a trigger template, with its words as the initial triggers.

    The literal text right before [P] (``"It was"`` in ``"{sentence} It was [P] ."``)
    becomes [T] slots, one per token; the triggers start as those tokens, so the
    first prompt scored is exactly the human prompt.
    """
    if not task.prompts:
        raise UserError(f"--init human: task '{task.name}' lists no human prompts")
    human = task.prompt(prompt_name) if prompt_name else task.prompts[0]
    parsed = Template.parse(human.template, task.fields)
    segs = list(parsed.segments)
    p = parsed.predict_index
    start = p
    while start > 0 and isinstance(segs[start - 1], Text):
        start -= 1
    if start == p:
        raise UserError(f"--init human: the prompt {human.template!r} has no words right before "
                        "[P] to turn into triggers")
    text = " ".join(s.text for s in segs[start:p])
    ids = list(backend.encoder.text_ids(text, segs[start].space))
    if template is not None:
        wanted = Template.parse(template, task.fields).num_triggers
        if wanted != len(ids):
            raise UserError(f"--init human: {text!r} is {len(ids)} tokens but --template has "
                            f"{wanted} [T] slots; leave out --template to use the human prompt's "
                            "shape")
        return template, ids
    parts = []
    for seg in segs[:start]:
        parts.append(_seg_source(seg))
    slots = " ".join(["[T]"] * len(ids))
    parts.append((" " if segs[start].space else "") + slots)
    for seg in segs[p:]:
        parts.append(_seg_source(seg))
    return "".join(parts), ids


def _seg_source(seg) -> str:
    sep = " " if seg.space else ""
    if isinstance(seg, Text):
        return sep + seg.text
    if isinstance(seg, Field):
        return sep + "{" + seg.name + "}"
    if isinstance(seg, Trigger):
        return sep + "[T]"
    assert isinstance(seg, Predict)
    return sep + "[P]"

