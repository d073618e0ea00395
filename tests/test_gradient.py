"""The gradient (AutoPrompt / GCG) trigger search on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from autoprompt_search.api import PromptSpec, evaluate_many, run_search
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.results import PromptResult
from autoprompt_search.core.templates import Template
from autoprompt_search.core.tokens import retokenizes
from autoprompt_search.scoring.scorer import PromptScorer
from autoprompt_search.search import strategies
from autoprompt_search.search.gradient import GradientSearch, TriggerObjective, human_trigger_template

TEMPLATE = "{sentence} [T] [T] [T] [P] ."


def _search(backend, task, out, seed=0, template=TEMPLATE, **options):
    opts = {"iterations": 6, "k": 8, "position": "cycle"}
    opts.update(options)
    return run_search("gradient", task=task, model=backend.name, template=template, out=out,
                      seed=seed, backend=backend, options=opts, progress=False)


def test_registered():
    assert strategies.get("gradient") is GradientSearch


def test_fast_batched_losses_equal_slow_direct_computation(tiny_backend, toy_task):
    scorer = PromptScorer(tiny_backend, toy_task, "Review : {sentence} so [T] [T] [P] .")
    # chunks cut across examples and candidates, by rows and by tokens
    obj = TriggerObjective(scorer, forward_batch=7, forward_tokens=40)
    examples = toy_task.examples("train")
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(5, tiny_backend.vocab_size, (6, 2), generator=gen)
    batch = obj.encode(examples, rows[0].tolist())
    if tiny_backend.kind == "causal":
        assert batch.prefix is not None and batch.prefix.mask.shape[1] > 1  # prefix cache in use
    fast = obj.losses(batch, rows)
    slow = obj.naive_losses(examples, rows)
    assert torch.allclose(fast, slow, atol=1e-5), (fast, slow)
    assert fast.std() > 0  # the candidates really differ
    # class scores of one trigger sequence = the scorer's (vocabulary-normalised) ones
    ours = obj.class_scores(batch, rows[2].tolist())
    ref = torch.log_softmax(scorer.class_logprobs(examples, rows[2].tolist()), -1)
    assert torch.allclose(ours, ref, atol=1e-5)
    # a subset of the encoded examples scores like encoding the subset
    sub = obj.losses(batch.select([1, 3]), rows)
    assert torch.allclose(sub, obj.naive_losses([examples[1], examples[3]], rows), atol=1e-5)


def test_gradient_matches_finite_difference_direction(tiny_causal, toy_task):
    """The trigger-embedding gradient predicts the loss change of a small step."""
    scorer = PromptScorer(tiny_causal, toy_task, TEMPLATE)
    obj = TriggerObjective(scorer)
    examples = toy_task.examples("train")
    triggers = [tiny_causal.encoder.text_ids("the", True)[0]] * 3
    batch = obj.encode(examples, triggers)
    grad, loss = obj.gradient(batch, triggers)
    assert grad.shape == (3, tiny_causal.input_embeddings().shape[1])
    assert loss == pytest.approx(float(obj.losses(batch, torch.tensor([triggers]))[0]), abs=1e-5)
    # through the cached prefix (a constant) = through the whole sequence
    full = TriggerObjective(scorer, use_prefix_cache=False)
    full_batch = full.encode(examples, triggers)
    assert batch.prefix is not None and full_batch.prefix is None
    grad_full, loss_full = full.gradient(full_batch, triggers)
    assert torch.allclose(grad, grad_full, atol=1e-5) and loss == pytest.approx(loss_full)
    # finite differences along a random direction agree with the gradient
    b = torch.arange(len(batch))
    rows = torch.tensor([triggers]).expand(len(b), -1)
    base = tiny_causal.embed(torch.tensor(triggers)).detach()
    direction = torch.randn(base.shape, generator=torch.Generator().manual_seed(0)) * base.std()

    def loss_at(t):
        with torch.no_grad():
            return float(obj._row_loss(obj._forward(batch, b, rows, t), batch.gold).mean())

    eps = 1e-2
    fd = (loss_at(base + eps * direction) - loss_at(base - eps * direction)) / (2 * eps)
    assert fd == pytest.approx(float((grad * direction).sum()), rel=0.05, abs=1e-6)
    # no model weight received a gradient
    assert all(p.grad is None for p in tiny_causal.model.parameters())


def test_search_lowers_training_loss(tiny_backend, toy_task, tmp_path):
    result = _search(tiny_backend, toy_task, tmp_path / "run", iterations=8)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if r["step"] > 0]
    assert len(steps) == 8
    losses = [r["loss"] for r in steps]
    assert all(b <= a for a, b in zip(losses, losses[1:]))  # same batch: never gets worse
    first_loss = log[0]["dev_loss"]  # train = dev in the toy task
    assert min(losses) < first_loss
    assert result.trigger_ids and len(result.trigger_ids) == 3
    # the exported text is exactly what was scored
    assert retokenizes(tiny_backend.tokenizer, Template.parse(TEMPLATE), result.trigger_ids)
    assert result.extra["retokenizes"] is True


def test_run_folder_and_export(tiny_causal, toy_task, tmp_path):
    out = tmp_path / "run"
    result = _search(tiny_causal, toy_task, out)
    for name in ("config.json", "checkpoint.json", "log.jsonl", "result.json", "best_prompt.txt"):
        assert (out / name).is_file(), name
    saved = PromptResult.load(out)
    assert saved.trigger_ids == result.trigger_ids
    assert saved.template == TEMPLATE and saved.strategy == "gradient" and saved.seed == 0
    assert saved.config["k"] == 8 and saved.versions["autoprompt_search"]
    assert (out / "best_prompt.txt").read_text().strip() == saved.prompt
    assert "[T]" not in saved.prompt and "{sentence}" in saved.prompt
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    state = checkpoint["state"]
    assert state["step"] == 6 and state["strategy"]["best"] == result.trigger_ids
    assert set(state["rngs"]) == {"python", "numpy"}
    assert (out / checkpoint["tensors"]["file"]).is_file()  # the torch generator's state
    # evaluate --prompt-file path: the saved prompt re-scores to its dev accuracy
    spec = PromptSpec(toy_task, saved.template, triggers=saved.trigger_ids,
                      verbalizer=saved.verbalizer, model=saved.model)
    row = evaluate_many([spec], model=tiny_causal, split="dev")[0]
    assert row["accuracy"] == pytest.approx(saved.scores["dev_accuracy"])


@pytest.mark.parametrize("position", ["random", "gcg"])
def test_same_seed_same_result_and_resume(tiny_causal, toy_task, tmp_path, position):
    opts = {"position": position, "iterations": 6, "batch_size": 5}
    full = _search(tiny_causal, toy_task, tmp_path / "full", seed=3, **opts)
    again = _search(tiny_causal, toy_task, tmp_path / "again", seed=3, **opts)
    assert again.trigger_ids == full.trigger_ids
    # a run stopped after 3 iterations, then resumed with the full budget
    _search(tiny_causal, toy_task, tmp_path / "cut", seed=3, **{**opts, "iterations": 3})
    (tmp_path / "cut" / "result.json").unlink()
    resumed = run_search("gradient", task=toy_task, model="tiny-causal", template=TEMPLATE,
                         out=tmp_path / "cut", seed=3, resume=True, backend=tiny_causal,
                         options={"iterations": 6, "k": 8, "position": position, "batch_size": 5},
                         progress=False)
    assert resumed.trigger_ids == full.trigger_ids
    assert resumed.scores == full.scores
    log_full = [json.loads(x)["triggers"] for x in (tmp_path / "full" / "log.jsonl").open()]
    log_cut = [json.loads(x)["triggers"] for x in (tmp_path / "cut" / "log.jsonl").open()]
    assert log_cut == log_full


def test_different_seed_different_path(tiny_causal, toy_task, tmp_path):
    runs = [_search(tiny_causal, toy_task, tmp_path / f"s{s}", seed=s, position="random",
                    init="random", iterations=2) for s in (0, 1)]
    logs = [(tmp_path / f"s{s}" / "log.jsonl").read_text() for s in (0, 1)]
    assert logs[0] != logs[1]
    assert runs[0].config["seed"] == 0 and runs[1].config["seed"] == 1


def test_resume_with_changed_settings_is_an_error(tiny_causal, toy_task, tmp_path):
    _search(tiny_causal, toy_task, tmp_path / "run", iterations=1)
    with pytest.raises(UserError, match="k"):
        run_search("gradient", task=toy_task, model="tiny-causal", template=TEMPLATE,
                   out=tmp_path / "run", resume=True, backend=tiny_causal,
                   options={"iterations": 2, "k": 4, "position": "cycle"}, progress=False)


def test_patience_stops_early(tiny_masked, toy_task, tmp_path):
    result = _search(tiny_masked, toy_task, tmp_path / "run", iterations=40, patience=2)
    assert result.extra["stopped"] == "patience"
    assert result.extra["iterations"] < 40


def test_init_human_starts_from_the_human_prompt(tiny_causal, toy_task, tmp_path):
    template, ids = human_trigger_template(toy_task, tiny_causal)
    assert template == "{sentence} [T] [T] [P] ."  # "it was" -> two trigger slots
    scorer = PromptScorer(tiny_causal, toy_task, template)
    human = PromptScorer(tiny_causal, toy_task, "{sentence} it was [P] .")
    ours = [p.ids for p in scorer.encode(toy_task.examples("dev"), ids)]
    assert ours == [p.ids for p in human.encode(toy_task.examples("dev"))]
    result = _search(tiny_causal, toy_task, tmp_path / "run", template=None, init="human",
                     iterations=4)
    base = human.class_logprobs(toy_task.examples("train"))
    gold = torch.tensor([ex.label for ex in toy_task.examples("train")])
    base_loss = float(-torch.log_softmax(base, -1).gather(1, gold[:, None]).mean())
    assert result.scores["train_loss"] <= base_loss + 1e-6  # never worse on train
    with pytest.raises(UserError, match="slots"):
        human_trigger_template(toy_task, tiny_causal, template=TEMPLATE)


def test_bad_settings_are_user_errors(tiny_causal, toy_task, tmp_path):
    with pytest.raises(UserError, match="position"):
        GradientSearch.from_options({"position": "everywhere"})
    with pytest.raises(UserError, match="no \\[T\\]"):
        _search(tiny_causal, toy_task, tmp_path / "a", template="{sentence} it was [P] .")

def test_masked_lm_rejects_multi_token_label_words(tiny_masked, toy_task):
    """Causal LMs score multi-token label words (tests/test_gradient_targets.py); a [MASK] slot
    predicts one token."""
    with pytest.raises(UserError, match="splits into 2 tokens"):
        bad = {"negative": ["bad"], "positive": ["films"]}  # film ##s
        TriggerObjective(PromptScorer(tiny_masked, toy_task, TEMPLATE, verbalizer=bad))


def test_deny_and_label_words_never_chosen(tiny_masked, toy_task, tmp_path):
    result = _search(tiny_masked, toy_task, tmp_path / "run", iterations=6, deny=["film", "the"])
    assert not set(result.trigger_tokens) & {"film", "the", "bad", "great"}


def test_smollm2_search_integration(smollm2, data_root, tmp_path):
    """Two iterations on SST-2 with the real model: the search runs and exports a prompt."""
    from autoprompt_search.core.tasks import Task

    task = Task.load("sst-2", data_root=data_root, seed=13)
    result = run_search("gradient", task=task, model="smollm2-135m",
                        template="{sentence} [T] [T] [T] [P] .", out=tmp_path / "run",
                        seed=0, backend=smollm2, progress=False,
                        options={"iterations": 2, "k": 8, "batch_size": 8})
    assert len(result.trigger_ids) == 3
    assert retokenizes(smollm2.tokenizer, Template.parse("{sentence} [T] [T] [T] [P] ."),
                       result.trigger_ids)
    assert 0 <= result.scores["dev_accuracy"] <= 1


def test_resume_after_a_crash_mid_search(tiny_causal, toy_task, tmp_path, monkeypatch):
    """A run that dies inside iteration 4 resumes from checkpoint 3 and ends like an unbroken run."""
    opts = {"position": "random", "iterations": 6, "batch_size": 5, "init": "random"}
    full = _search(tiny_causal, toy_task, tmp_path / "full", seed=5, **opts)
    original = GradientSearch.step

    def dying_step(self, ctx, state):
        if state.step == 3:
            raise RuntimeError("the process dies mid-iteration")
        return original(self, ctx, state)

    monkeypatch.setattr(GradientSearch, "step", dying_step)
    with pytest.raises(RuntimeError, match="dies"):
        _search(tiny_causal, toy_task, tmp_path / "run", seed=5, **opts)
    assert not (tmp_path / "run" / "result.json").exists()
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["state"]["step"] == 3
    monkeypatch.setattr(GradientSearch, "step", original)
    resumed = run_search("gradient", task=toy_task, model="tiny-causal", template=TEMPLATE,
                         out=tmp_path / "run", seed=5, resume=True, backend=tiny_causal,
                         options={"iterations": 6, "k": 8, **opts}, progress=False)
    assert resumed.trigger_ids == full.trigger_ids and resumed.scores == full.scores
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").open()]
    assert steps == list(range(7))


def test_a_runs_config_json_repeats_the_run_with_config(tiny_causal, toy_task, tmp_path,
                                                          monkeypatch, capsys):
    """`search --config RUN/config.json` applies the run's strategy, task, model, template and
    seed (options given on the command line win) and gives the same result."""
    import sys

    import yaml

    from autoprompt_search.cli import main

    model_dir = tmp_path / "model"
    tiny_causal.model.save_pretrained(model_dir)
    tiny_causal.tokenizer.save_pretrained(model_dir)
    task_file = tmp_path / "toy.yaml"
    task_file.write_text(yaml.safe_dump({
        "name": "toy", "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        "fields": ["sentence"], "labels": ["negative", "positive"],
        "verbalizer": {"negative": ["bad"], "positive": ["great"]}}))

    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["autoprompt-search", *args])
        try:
            main()
        except SystemExit as exc:
            return int(exc.code or 0), capsys.readouterr().err
        return 0, capsys.readouterr().err

    code, err = cli("search", "--strategy", "gradient", "--task", str(task_file), "--model",
                    str(model_dir), "--template", TEMPLATE, "--out", str(tmp_path / "a"),
                    "--seed", "2", "--iterations", "3", "--k", "4", "--batch-size", "5",
                    "--init", "random")
    assert code == 0, err
    monkeypatch.chdir(tmp_path / "a")  # the config names the task by absolute path
    code, err = cli("search", "--config", "config.json", "--out", str(tmp_path / "b"))
    assert code == 0, err
    a, b = PromptResult.load(tmp_path / "a"), PromptResult.load(tmp_path / "b")
    assert (b.prompt, b.trigger_ids, b.scores, b.seed) == (a.prompt, a.trigger_ids, a.scores, 2)
    assert {**b.config, "versions": None} == {**a.config, "versions": None}
    # an option on the command line wins over the file
    code, err = cli("search", "--config", "config.json", "--out", str(tmp_path / "c"),
                    "--seed", "3")
    assert code == 0, err
    assert PromptResult.load(tmp_path / "c").seed == 3
    # another strategy is refused in one line, not with the gradient keys as unknown
    code, err = cli("search", "--config", "config.json", "--out", str(tmp_path / "d"),
                    "--strategy", "soft")
    assert code == 2 and "error:" in err and "strategy 'gradient'" in err and "Traceback" not in err


def test_eval_every_scores_dev_only_at_its_steps(tiny_causal, toy_task, tmp_path):
    result = _search(tiny_causal, toy_task, tmp_path / "run", iterations=5, eval_every=2,
                     position="random", init="random", batch_size=5)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").open()]
    scored = [r["step"] for r in log if r.get("dev_accuracy") is not None]
    assert scored[0] == 0 and set(scored[1:]) <= {2, 4, 5}  # and only when the triggers changed
    changed = {r["step"] for r in log if r.get("accepted")}
    for step in (2, 4, 5):
        since_last = {s for s in changed if step - (1 if step == 5 else 2) < s <= step}
        assert (step in scored) == bool(since_last)
    assert result.scores["dev_accuracy"] == max(r["dev_accuracy"] for r in log
                                                if r.get("dev_accuracy") is not None)
