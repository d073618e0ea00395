"""Soft prompts: scoring, training, saving, resuming, PEFT adapters and the project command."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from autoprompt_search.analysis.fluency import ids_log_perplexity, span_log_perplexity, text_perplexity
from autoprompt_search.api import run_search
from autoprompt_search.cli import main
from autoprompt_search.core.errors import UserError
from autoprompt_search.core.tasks import Task
from autoprompt_search.models import load_model
from autoprompt_search.scoring.softprompt import SoftPrompt, SoftScorer, project_soft_prompt, projection_mask
from autoprompt_search.testing import tiny_causal_lm

TEMPLATE = "{sentence} [T] [T] it was [P] ."


@pytest.fixture
def skewed_task(tmp_path):
    """Mostly positive examples: a soft prompt can lower the loss by shifting the class prior."""
    rows = [("the movie was great", 1), ("a wonderful story", 1), ("a good film", 1),
            ("the team won", 1), ("what a great game", 1), ("it was fine", 1),
            ("a bad film", 0), ("it was terrible", 0)]
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    raw = {"name": "skewed", "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
           "fields": ["sentence"], "labels": ["negative", "positive"],
           "verbalizer": {"negative": ["bad"], "positive": ["great"]},
           "prompts": ["{sentence} it was [P] ."]}
    (tmp_path / "skewed.yaml").write_text(json.dumps(raw))
    return Task.from_mapping(raw, source="skewed.yaml", base=tmp_path)


def soft(backend, task, out, seed=0, **options):
    opts = {"steps": 4, "eval_every": 2, "batch_size": 4, **options}
    return run_search("soft", task=task, model=backend.name, template=TEMPLATE, out=out, seed=seed,
                      options=opts, backend=backend, progress=False)


def test_token_embeddings_in_the_slots_score_like_the_hard_prompt(tiny_backend, toy_task):
    """The soft path (with and without the prefix cache) equals the reference scorer."""
    scorer = SoftScorer(tiny_backend, toy_task, TEMPLATE)
    examples = toy_task.examples("train")
    ids = torch.nonzero(projection_mask(tiny_backend)).flatten()[:2].tolist()
    vectors = tiny_backend.input_embeddings()[torch.tensor(ids)]
    prompts = scorer.encode(examples)
    ref = scorer.scorer.naive_class_logprobs(examples, ids)
    assert torch.allclose(scorer.class_logprobs(prompts, vectors), ref, atol=1e-5)
    cache = scorer.cache(prompts)
    assert (cache is not None) == (tiny_backend.kind == "causal")
    if cache is not None:
        rows = [3, 0, 5]
        out = scorer.class_logprobs([prompts[i] for i in rows], vectors, cache, rows)
        assert torch.allclose(out, ref[rows], atol=1e-5)


def test_training_lowers_the_loss(tiny_causal, skewed_task, tmp_path):
    tiny_backend = tiny_causal
    result = soft(tiny_backend, skewed_task, tmp_path / "run", steps=8, eval_every=4, lr=0.05,
                  batch_size=8)
    scorer = SoftScorer(tiny_backend, skewed_task, TEMPLATE)
    examples = skewed_task.examples("train")
    prompts, gold = scorer.encode(examples), [e.label for e in examples]
    with torch.no_grad():
        init = tiny_backend.input_embeddings()[torch.tensor(result.extra["init_ids"])]
        before = float(scorer.loss(prompts, init, gold))
        learned = SoftPrompt.load(tmp_path / "run").vectors
        after = float(scorer.loss(prompts, learned, gold))
    assert after < before - 0.02
    assert result.scores["dev_loss"] == pytest.approx(after, abs=1e-4)  # dev = train here
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(9))


def test_saved_soft_prompt_round_trips_and_records_provenance(tiny_causal, toy_task, tmp_path):
    result = soft(tiny_causal, toy_task, tmp_path / "run")
    sp = SoftPrompt.load(tmp_path / "run")
    assert sp.vectors.shape == (2, tiny_causal.input_embeddings().shape[1])
    assert sp.template == TEMPLATE and sp.model == "tiny-causal" and sp.task == "toy"
    assert sp.scores["dev_accuracy"] == result.scores["dev_accuracy"]
    meta = json.loads((tmp_path / "run" / "soft_prompt.json").read_text())
    assert meta["config"]["seed"] == 0 and "autoprompt_search" in meta["versions"]
    assert SoftPrompt.load(tmp_path / "run" / "soft_prompt.safetensors").vectors.equal(sp.vectors)
    # the result's trigger ids are the soft prompt's nearest-token projection
    report = project_soft_prompt(sp, tiny_causal, task=toy_task, split="dev")
    assert report["trigger_ids"] == result.trigger_ids
    assert report["evaluation"]["soft"]["accuracy"] == result.scores["dev_accuracy"]
    assert report["evaluation"]["projected"]["accuracy"] == result.scores["projected_dev_accuracy"]


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_causal, toy_task, tmp_path):
    full = soft(tiny_causal, toy_task, tmp_path / "full", steps=4, init="random")
    soft(tiny_causal, toy_task, tmp_path / "part", steps=2, init="random")
    resumed = run_search("soft", task=toy_task, model="tiny-causal", template=TEMPLATE,
                         out=tmp_path / "part", seed=0, resume=True, backend=tiny_causal,
                         options={"steps": 4, "eval_every": 2, "batch_size": 4, "init": "random"},
                         progress=False)
    a = SoftPrompt.load(tmp_path / "full").vectors
    b = SoftPrompt.load(tmp_path / "part").vectors
    assert torch.allclose(a, b, atol=1e-6)
    assert resumed.scores == full.scores
    # search seconds go on from the interrupted session's (the log's times never go back)
    # (the step-0 record, the starting vectors' dev score, has time 0.0 as in every strategy's log)
    times = [json.loads(x)["time"] for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()
             if json.loads(x)["step"] > 0]
    assert len(times) == 4 and times == sorted(times)
    assert times[0] > 0 and resumed.extra["seconds"] >= round(times[-1], 1)
    with pytest.raises(UserError, match="lr"):
        run_search("soft", task=toy_task, model="tiny-causal", template=TEMPLATE, out=tmp_path / "part",
                   seed=0, resume=True, backend=tiny_causal, progress=False,
                   options={"steps": 4, "eval_every": 2, "batch_size": 4, "init": "random", "lr": 0.5})


def test_seeds(tiny_causal, toy_task, tmp_path):
    a = soft(tiny_causal, toy_task, tmp_path / "a", seed=1, init="random", steps=2)
    b = soft(tiny_causal, toy_task, tmp_path / "b", seed=1, init="random", steps=2)
    c = soft(tiny_causal, toy_task, tmp_path / "c", seed=2, init="random", steps=2)
    assert SoftPrompt.load(tmp_path / "a").vectors.equal(SoftPrompt.load(tmp_path / "b").vectors)
    assert a.extra["init_ids"] == b.extra["init_ids"] != c.extra["init_ids"]


def test_anchor_penalty_pulls_the_projection_onto_the_target_text(tiny_causal, toy_task, tmp_path):
    anchor = "the team won the game"
    result = soft(tiny_causal, toy_task, tmp_path / "run", init="random", steps=10, eval_every=10,
                  lr=0.02, anchor_text=anchor, anchor_weight=50.0, metric="euclidean")
    assert result.extra["anchor_ids"] == list(tiny_causal.encoder.text_ids(anchor, True))[:2]
    assert result.scores["anchor_token_f1"] == 1.0
    assert result.trigger_ids == result.extra["anchor_ids"]
    start = soft(tiny_causal, toy_task, tmp_path / "start", init="anchor", steps=1, anchor_text=anchor)
    assert start.extra["init_ids"] == result.extra["anchor_ids"]


def test_user_errors(tiny_causal, tiny_masked, toy_task, tmp_path):
    with pytest.raises(UserError, match="no \\[T\\] slot"):
        run_search("soft", task=toy_task, model="x", template="{sentence} it was [P] .",
                   out=tmp_path / "a", backend=tiny_causal, progress=False)
    with pytest.raises(UserError, match="tokens; the template has"):
        soft(tiny_causal, toy_task, tmp_path / "b", anchor_text="great", anchor_weight=1.0)
    with pytest.raises(UserError, match="anchor_weight needs"):
        soft(tiny_causal, toy_task, tmp_path / "c", anchor_weight=1.0)
    with pytest.raises(UserError, match="causal LM"):
        soft(tiny_masked, toy_task, tmp_path / "d", fluency_weight=1.0)
    with pytest.raises(UserError, match="no human prompt named"):
        soft(tiny_causal, toy_task, tmp_path / "e", init_prompt="nope")
    with pytest.raises(UserError, match="give an --anchor-text"):
        run_search("pez", task=toy_task, model="x", template=TEMPLATE, out=tmp_path / "f",
                   backend=tiny_causal, progress=False, options={"init": "anchor", "steps": 1})
    with pytest.raises(UserError, match="no soft_prompt.json"):
        SoftPrompt.load(tmp_path)
    sp = SoftPrompt(torch.zeros(2, 7), TEMPLATE, "tiny-causal", "toy")
    with pytest.raises(UserError, match="7-dimensional"):
        project_soft_prompt(sp, tiny_causal)


def test_fluency_term_is_the_lm_log_perplexity(tiny_causal):
    ids = [5, 17, 42]
    emb = tiny_causal.input_embeddings()[torch.tensor(ids)]
    start = tiny_causal.tokenizer.bos_token_id
    logits = tiny_causal.model(input_ids=torch.tensor([[start] + ids])).logits[0, :-1]
    expected = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(ids))
    assert float(span_log_perplexity(tiny_causal, emb, ids)) == pytest.approx(float(expected), abs=1e-5)
    assert ids_log_perplexity(tiny_causal, ids) == pytest.approx(float(expected), abs=1e-5)
    text = tiny_causal.tokenizer.decode(ids)
    assert text_perplexity(tiny_causal, text)["tokens"] >= 1


# --- PEFT adapters and the project command ------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinymodel")
    model, tok = tiny_causal_lm(seed=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_peft_adapter(model_dir, out, token_ids, noise=0.0):
    """A PEFT prompt-tuning adapter whose virtual tokens sit at (or near) given tokens."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=len(token_ids))
    peft_model = get_peft_model(base, cfg)
    emb = base.get_input_embeddings().weight.detach()[torch.tensor(token_ids)]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        table = peft_model.prompt_encoder["default"].embedding.weight
        table.copy_(emb + noise * torch.randn(emb.shape, generator=gen))
    peft_model.save_pretrained(out)
    return emb


def test_peft_prompt_tuning_adapter_round_trip(tiny_dir, toy_task, tmp_path):
    backend = load_model(str(tiny_dir))
    allowed = torch.nonzero(projection_mask(backend)).flatten()
    chosen = [int(allowed[3]), int(allowed[10]), int(allowed[20])]
    emb = make_peft_adapter(tiny_dir, tmp_path / "adapter", chosen)
    sp = SoftPrompt.load(tmp_path / "adapter")
    assert sp.source == "peft" and sp.num_slots == 3
    assert torch.allclose(sp.vectors, emb)
    report = project_soft_prompt(sp, backend, task=toy_task, split="dev")
    assert report["trigger_ids"] == chosen
    assert all(s["distance"] == pytest.approx(0.0, abs=1e-5) for s in report["slots"])
    assert report["template"] == "[T][T][T]" + toy_task.prompts[0].template
    ev = report["evaluation"]
    assert ev["soft"]["accuracy"] == ev["projected"]["accuracy"]  # the vectors ARE those tokens
    assert ev["n"] == len(toy_task.examples("dev"))


def test_project_command(tiny_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "d.tsv").write_text("sentence\tlabel\na good film\t1\na bad film\t0\nit was great\t1\n")
    (tmp_path / "t.yaml").write_text(json.dumps({
        "name": "t", "data": {"train": "d.tsv", "dev": "d.tsv", "test": "d.tsv"}, "fields": ["sentence"],
        "labels": ["negative", "positive"], "verbalizer": {"negative": ["bad"], "positive": ["great"]},
        "prompts": ["{sentence} it was [P] ."]}))
    backend = load_model(str(tiny_dir))
    allowed = torch.nonzero(projection_mask(backend)).flatten()
    make_peft_adapter(tiny_dir, tmp_path / "adapter", [int(allowed[5]), int(allowed[6])], noise=0.01)

    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["autoprompt-search", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return (code, *capsys.readouterr())

    code, out, err = cli("project", str(tmp_path / "adapter"), "--model", str(tiny_dir), "--task",
                         str(tmp_path / "t.yaml"), "--split", "test", "--top", "3", "--json",
                         str(tmp_path / "r.json"))
    assert code == 0, err
    assert "projected prompt" in out and "soft" in out and "projected" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["slots"]) == 2 and len(report["slots"][0]["neighbours"]) == 2
    assert report["evaluation"]["n"] == 3
    # the adapter records its base model; without a task only the projection is printed
    code, out, err = cli("project", str(tmp_path / "adapter"))
    assert code == 0, err
    assert "pass --task" in out and "accuracy" not in out
    code, out, err = cli("project", str(tmp_path / "adapter"), "--model", str(tmp_path))
    assert code == 2 and "error" in err
    code, out, err = cli("project", str(tmp_path / "adapter"), "--model", str(tiny_dir), "--metric", "l1")
    assert code == 2 and "unknown distance" in err


def test_train_and_dev_limits_take_every_class(toy_task):
    """Data files are often sorted by label: a limit must not keep only the first classes."""
    from autoprompt_search.search.soft import SoftSearch

    examples = toy_task.examples("train")  # six positive, then six negative
    assert [e.label for e in examples[:4]] == [1, 1, 1, 1]
    subset = SoftSearch(seed=3)._subset(examples, 4)
    assert sorted(e.label for e in subset) == [0, 0, 1, 1]
    assert subset == SoftSearch(seed=3)._subset(examples, 4)
    assert SoftSearch(seed=3)._subset(examples, None) == examples


def test_fluency_command(tiny_dir, tmp_path, monkeypatch, capsys):
    from autoprompt_search.core.results import PromptResult

    PromptResult(task="toy", template="{sentence} [T] [T] [P]", prompt="{sentence} great film [P]",
                 model="m", strategy="gradient", seed=0, trigger_tokens=[" great", " film"]
                 ).save(tmp_path / "r")
    monkeypatch.setattr(sys, "argv", ["autoprompt-search", "fluency", str(tmp_path / "r"), "--model",
                                      str(tiny_dir)])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    assert "great film" in out and "trigger ppl" in out
