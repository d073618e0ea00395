"""Label-word search (AutoPrompt, Shin et al. 2020, section 2.3).

Put the template's trigger slots to a neutral token ([MASK] for masked LMs), read
the feature vector the LM head sees at [P] for every training example (the input
of the output-embedding layer: for BERT after the head's transform, for causal LMs
the final hidden state), and train a logistic-regression layer ``W`` from it to the
classes. Every vocabulary token ``w`` is then scored for class ``c`` by applying
that layer to the token's output embedding: ``s(w, c) = W_c . e_w``, centred over
the classes (a token that scores high for every class tells none apart). The top
tokens per class, after the same token filters as the trigger search, are the
proposed label words; they re-tokenise to a single token at [P], so the result is
usable directly as the task's verbalizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import yaml

from ..core.errors import UserError
from ..core.results import atomic_write, provenance
from ..core.tasks import Task
from ..core.templates import Template
from ..core.tokens import allowed_token_mask, token_texts
from ..models.base import LMBackend
from ..scoring.engine import PrefixMode
from ..scoring.evaluation import evaluate_prompt
from ..scoring.scorer import PromptScorer
from ..scoring.targets import predict_space


@dataclass
class LabelSearchResult:
    """Proposed label words per class, with their scores and how well they work."""

    task: str
    model: str
    template: str
    verbalizer: dict[str, list[str]]
    scores: dict[str, list[float]]
    token_ids: dict[str, list[int]]
    probe_train_accuracy: float
    probe_dev_accuracy: float
    dev_accuracy: float | None = None  # the template with the proposed verbalizer, on dev
    config: dict = field(default_factory=dict)

    def to_yaml(self) -> str:
        """A YAML document whose ``verbalizer`` block can be pasted into a task file."""
        header = (f"# label words found by autoprompt-search search-labels\n"
                  f"# task {self.task}, model {self.model}, template {self.template!r}\n"
                  f"# probe accuracy train {self.probe_train_accuracy:.3f}, "
                  f"dev {self.probe_dev_accuracy:.3f}"
                  + (f"; template with these words, dev accuracy {self.dev_accuracy:.3f}"
                     if self.dev_accuracy is not None else "") + "\n")
        body = {"verbalizer": self.verbalizer,
                "search_labels": {"scores": self.scores, "token_ids": self.token_ids,
                                  "config": self.config,
                                  "versions": {k: str(v) for k, v in provenance().items()}}}
        return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)

    def label_words_args(self) -> str:
        """The same words as ``--label-words`` arguments of ``evaluate``."""
        return " ".join(f"--label-words '{lab}={','.join(words)}'"
                        for lab, words in self.verbalizer.items())

    def save(self, path) -> None:
        atomic_write(path, self.to_yaml())


def predict_features(backend: LMBackend, scorer: PromptScorer, examples: Sequence,
                     triggers: Sequence[int], batch_size: int = 32) -> torch.Tensor:
    """``[N, d]``: the input of the output-embedding layer at [P] for each example."""
    out_emb = backend.model.get_output_embeddings()
    captured: list[torch.Tensor] = []
    hook = out_emb.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    engine = scorer.engine(prefix=PrefixMode.NONE, forward_batch=batch_size)
    feats = torch.empty(len(examples), backend.input_embeddings().shape[1])

    def keep(b: torch.Tensor, hidden: torch.Tensor, pos: torch.Tensor) -> None:
        backend.head(hidden)
        x = captured[-1]
        if x.dim() == 3:  # a backend that runs the whole model: pick the [P] rows
            x = x[torch.arange(len(b)), pos]
        feats[b.cpu()] = x.float().cpu()
        captured.clear()

    try:
        engine.at_predict(engine.encode(examples, triggers), keep)
    finally:
        hook.remove()
    return feats


def train_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-2,
                steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression ``(W [C, d], b [C])`` by L-BFGS with an L2 penalty.

    Features are standardised for the fit; the returned ``W`` and ``b`` act on raw features.
    The fit starts from zeros and L-BFGS is deterministic: nothing is drawn at random.
    """
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_raw = (w / sd).detach()
    return w_raw, (b - (w / sd) @ mu).detach()


def class_token_scores(out_emb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``[V, C]``: the probe applied to each token's output embedding, centred over classes."""
    scores = out_emb.float() @ w.float().T
    return scores - scores.mean(-1, keepdim=True)


def rank_probe_words(backend: LMBackend, token_scores: torch.Tensor, allowed: torch.Tensor,
                     space: bool, top_k: int) -> list[list[tuple[str, float, int]]]:
    """Per class, up to ``top_k`` (word, score, token id) of the allowed tokens that score best
    for that class (each token for its best class only) and re-tokenise to themselves at [P]."""
    texts = token_texts(backend.tokenizer)
    best_class = token_scores.argmax(-1)
    out = []
    for c in range(token_scores.shape[1]):
        col = token_scores[:, c].masked_fill(~allowed | (best_class != c), -torch.inf)
        ranked: list[tuple[str, float, int]] = []
        for tid in torch.sort(col, descending=True, stable=True).indices.tolist():
            if not torch.isfinite(col[tid]) or len(ranked) == top_k:
                break
            word = texts[tid].strip()
            if tuple(backend.encoder.label_ids(word, space)) != (tid,):
                continue  # would not be this token when written in the verbalizer
            ranked.append((word, round(float(col[tid]), 4), tid))
        out.append(ranked)
    return out


def label_design(backend: LMBackend, task: Task, template: str | None,
                 triggers: Sequence[int] | None, init_word: str,
                 ) -> tuple[str, Template, PromptScorer, list[int]]:
    """(template text, parsed template, its scorer, trigger ids) of a label-word search
    (default template: the task's first human prompt; default triggers: the neutral token)."""
    if task.is_open_vocabulary:
        raise UserError(f"task '{task.name}' is open-vocabulary (its labels are the objects); "
                        "label-word search is for classification tasks")
    if template is None:
        if not task.prompts:
            raise UserError(f"task '{task.name}' lists no human prompts; pass --template")
        template = task.prompts[0].template
    parsed = Template.parse(template, task.fields)
    scorer = PromptScorer(backend, task, parsed)
    scorer.check_direct("label-word search")  # it reads the distribution at [P]
    if triggers is None:
        triggers = _neutral_triggers(backend, parsed, init_word)
    elif len(triggers) != parsed.num_triggers:
        raise UserError(f"template has {parsed.num_triggers} [T] slots but {len(triggers)} "
                        "trigger ids were given")
    return template, parsed, scorer, list(triggers)


def search_label_words(
    backend: LMBackend,
    task: Task,
    template: str | None = None,
    *,
    top_k: int = 3,
    triggers: Sequence[int] | None = None,
    init_word: str = "the",
    l2: float = 1e-2,
    whole_words: bool = True,
    ascii_only: bool = True,
    deny: Iterable[str] = (),
    evaluate: bool = True,
    seed: int = 0,
) -> LabelSearchResult:
    """Propose ``top_k`` label words per class for ``template`` (default: the first human prompt)."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    template, _, scorer, triggers = label_design(backend, task, template, triggers, init_word)
    train, dev = task.examples("train"), task.examples("dev")
    if not train:
        raise UserError(f"task '{task.name}' has no training examples")
    present = {ex.label for ex in train}
    missing = [lab for c, lab in enumerate(task.labels) if c not in present]
    if missing:
        raise UserError(f"the training split has no example of class(es) {', '.join(missing)}")
    x = predict_features(backend, scorer, train, triggers)
    y = torch.tensor([ex.label for ex in train])
    w, b = train_probe(x, y, len(task.labels), l2=l2)
    train_acc = float(((x @ w.T + b).argmax(-1) == y).float().mean())
    dev_acc = float("nan")
    if dev:
        xd = predict_features(backend, scorer, dev, triggers)
        yd = torch.tensor([ex.label for ex in dev])
        dev_acc = float(((xd @ w.T + b).argmax(-1) == yd).float().mean())

    out_emb = backend.model.get_output_embeddings().weight.detach().float().cpu()  # [V, d]
    token_scores = class_token_scores(out_emb, w)
    allowed = allowed_token_mask(backend.tokenizer, out_emb.shape[0], whole_words=whole_words,
                                 ascii_only=ascii_only, deny=list(deny))
    space = predict_space(scorer.template)
    verbalizer: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    ids_out: dict[str, list[int]] = {}
    for label, ranked in zip(task.labels, rank_probe_words(backend, token_scores, allowed, space,
                                                            top_k)):
        if not ranked:
            raise UserError(f"no allowed token scores best for class '{label}'; relax the filters "
                            "(--no-whole-words, --deny) or add training examples")
        verbalizer[label] = [w for w, _, _ in ranked]
        scores[label] = [v for _, v, _ in ranked]
        ids_out[label] = [t for _, _, t in ranked]
    result = LabelSearchResult(
        task=task.name, model=backend.name, template=template, verbalizer=verbalizer,
        scores=scores, token_ids=ids_out, probe_train_accuracy=train_acc,
        probe_dev_accuracy=dev_acc,
        config={"top_k": top_k, "l2": l2, "whole_words": whole_words, "ascii_only": ascii_only,
                "deny": list(deny), "seed": seed, "triggers": list(triggers),
                "data_seed": task.data_seed if not task.data.get("hub") else None},
    )
    if evaluate and dev:
        ev = evaluate_prompt(backend, task, template, "dev", verbalizer=verbalizer,
                             triggers=triggers)
        result.dev_accuracy = float(ev.metrics["accuracy"])
    return result


def _neutral_triggers(backend: LMBackend, template: Template, init_word: str) -> list[int]:
    """The backend's neutral token in every trigger slot ([MASK] for masked LMs, as AutoPrompt;
    else ``init_word``)."""
    if template.num_triggers == 0:
        return []
    return [backend.neutral_trigger(init_word)] * template.num_triggers
