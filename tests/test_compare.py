"""compare: every prompt on the same examples, statistics, similarity, fluency, reports."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from compare_fixtures import make_found, tiny_dir, tiny_loaded, toy_yaml  # noqa: F401
from typer.testing import CliRunner

from autoprompt_search.analysis.compare import (
    collect_prompts,
    compare_prompts,
    load_comparison,
    perplexity,
    prompt_words,
    run_curve,
    similarity_to_humans,
)
from autoprompt_search.analysis.report import write_reports
from autoprompt_search.core.errors import UserError
from autoprompt_search.scoring.evaluation import evaluate_prompt


def fake_embed(texts):
    """Bag-of-letters embeddings: deterministic, and identical texts get similarity 1."""
    out = np.zeros((len(texts), 26))
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, toy_yaml, tiny_loaded):  # noqa: F811
    runs = tmp_path_factory.mktemp("runs")
    make_found(tiny_loaded, toy_yaml, runs / "a", log=[0.4, 0.5, 0.5, 0.6])
    task, entries = collect_prompts(str(toy_yaml), [runs / "a"], True, ["{sentence} so it is [P]"])
    comp = compare_prompts(task, entries, model=tiny_loaded, resamples=300, embed=fake_embed,
                           progress=False)
    return task, entries, comp


def test_every_prompt_is_scored_on_the_same_examples(comparison, tiny_loaded):  # noqa: F811
    task, entries, comp = comparison
    by_name = {r["name"]: r for r in comp.rows}
    # text after [P] (issue 11): "film" is scored on the whole sequence, not skipped
    assert set(by_name) == {"handmade:a", "it-was", "story", "film", "typed-1"}
    assert comp.skipped == []
    assert comp.n == 12 and all(r["n"] == 12 for r in comp.rows)
    # the accuracy is exactly what evaluate_prompt gives for the same prompt
    found = next(e for e in entries if e.kind == "found")
    ev = evaluate_prompt(tiny_loaded, task, found.spec.template, "test", triggers=found.spec.triggers)
    assert by_name["handmade:a"]["accuracy"] == pytest.approx(ev.metrics["accuracy"])
    for r in comp.rows:
        lo, hi = r["accuracy_ci"]
        assert lo <= r["accuracy"] <= hi
        lo, hi = r["macro_f1_ci"]
        assert lo <= r["macro_f1"] + 1e-9 and r["macro_f1"] <= hi + 1e-9


def test_paired_test_against_the_oracle_and_the_human_spread(comparison):
    """The oracle (the best human prompt on the compared split) and its extra p column; the
    p-values against the dev-selected prompt are tested in test_baselines.py."""
    _, _, comp = comparison
    humans = [r for r in comp.rows if r["kind"] == "human"]
    best = max(humans, key=lambda r: r["accuracy"])
    assert comp.best_human == best["name"]
    spread = comp.human_spread["accuracy"]
    accs = [r["accuracy"] for r in humans]
    assert spread["n"] == 3 and spread["min"] == min(accs) and spread["max"] == max(accs)
    assert spread["std"] == pytest.approx(float(np.std(accs, ddof=1)))
    for r in comp.rows:
        if r["name"] == comp.best_human:
            assert r["vs_oracle"] is None
            continue
        t = r["vs_oracle"]
        assert t["delta"] == pytest.approx(r["accuracy"] - best["accuracy"])
        assert 0 <= t["p_exact"] <= 1 and 0 <= t["p_bootstrap"] <= 1
        assert t["only_a"] - t["only_b"] == round(t["delta"] * 12)


def test_similarity_fluency_length(comparison, tiny_loaded):  # noqa: F811
    _, _, comp = comparison
    found = next(r for r in comp.rows if r["kind"] == "found")
    assert found["words"] == "movie story it was ."
    assert found["length_tokens"] == len(tiny_loaded.tokenizer(found["words"],
                                                               add_special_tokens=False)["input_ids"])
    assert found["perplexity"] == pytest.approx(perplexity(tiny_loaded, found["words"]))
    assert found["similarity"]["nearest"] in {"it-was", "story"}
    assert -1 <= found["similarity"]["max"] <= 1
    # a human prompt is compared with the other human prompts, not with itself
    human = next(r for r in comp.rows if r["name"] == "it-was")
    assert human["similarity"]["nearest"] == "story" and human["similarity"]["max"] < 1


def test_prompt_words_drop_fields_and_slots():
    assert prompt_words("{sentence} It was [P] .", ["sentence"]) == "It was ."
    assert prompt_words("Review: {sentence} [T] [T] so [P]", ["sentence"]) == "Review: so"


def test_causal_perplexity_is_the_mean_token_nll(tiny_causal):
    text = "the movie was great"
    ids = tiny_causal.tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tiny_causal.tokenizer.bos_token_id
    seq = torch.tensor([[bos] + ids])
    with torch.no_grad():
        loss = tiny_causal.model(input_ids=seq, labels=seq).loss
    assert perplexity(tiny_causal, text) == pytest.approx(math.exp(float(loss)), rel=1e-4)
    assert perplexity(tiny_causal, "") is None


def test_masked_pseudo_perplexity_is_finite(tiny_masked):
    ppl = perplexity(tiny_masked, "the movie was great")
    assert ppl is not None and 1 < ppl < 10 * len(tiny_masked.tokenizer)


def test_real_sentence_model_similarity():
    sims = similarity_to_humans(["It was .", "It was .", "stock market fell"],
                                ["It is .", "The review was ."])
    assert sims[0] == sims[1]
    assert sims[0]["max"] > sims[2]["max"]
    assert sims[0]["nearest"] == 0


def test_real_model_finds_language_more_fluent_than_noise(smollm2):
    assert perplexity(smollm2, "All in all, it was") < perplexity(smollm2, "PA communerug proper")


def test_search_curve_from_the_run_log(comparison, tmp_path, toy_yaml, tiny_loaded):  # noqa: F811
    _, _, comp = comparison
    curve = comp.curves["handmade:a"]
    assert curve["x"] == "step" and curve["xs"] == [0, 1, 2, 3]
    assert curve["series"] == {"dev_accuracy": [0.4, 0.5, 0.5, 0.6]}
    (tmp_path / "log.jsonl").write_text("")
    assert run_curve(tmp_path) is None
    # keys that appear later count; counts such as "scored" are not scores; losses only as fallback
    (tmp_path / "log.jsonl").write_text('{"trial": 0, "value": 0.5, "loss": 2.0}\n'
                                        '{"trial": 1, "value": 0.6, "best_value": 0.6, "scored": 9}\n')
    curve = run_curve(tmp_path)
    assert curve["x"] == "trial" and curve["series"] == {"value": [0.5, 0.6], "best_value": [None, 0.6]}
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    assert run_curve(tmp_path)["series"] == {"loss": [2.0, 1.5]}


def test_reports_are_self_contained(comparison, tmp_path):
    _, _, comp = comparison
    paths = write_reports(comp, tmp_path / "rep")
    html = paths["html"].read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(images) == 3  # accuracy, curves, fluency
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in html.replace("http-equiv", "")
    md = paths["markdown"].read_text()
    for name in ("accuracy.png", "curves.png", "fluency.png"):
        assert f"]({name})" in md and (tmp_path / "rep" / name).is_file()
    assert "handmade:a" in md and "it-was" in md
    again = load_comparison(tmp_path / "rep")
    assert again.rows == json.loads(json.dumps(comp.rows))


def test_wrong_inputs_are_user_errors(tmp_path, toy_yaml, tiny_loaded):  # noqa: F811
    with pytest.raises(UserError, match="no such run folder"):
        collect_prompts(str(toy_yaml), [tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no result.json"):
        collect_prompts(str(toy_yaml), [tmp_path / "empty"])
    make_found(tiny_loaded, toy_yaml, tmp_path / "r")
    with pytest.raises(UserError, match="not 'sst-2'"):
        collect_prompts("sst-2", [tmp_path / "r"])
    with pytest.raises(UserError, match="pass --task"):
        collect_prompts(None, [], True)


def test_cli_compare_writes_reports(tmp_path, toy_yaml, tiny_dir, tiny_loaded):  # noqa: F811
    from autoprompt_search.cli import app
    from autoprompt_search.cli.commands import load_all

    load_all()
    make_found(tiny_loaded, toy_yaml, tmp_path / "run")
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "run"), "--model", str(tiny_dir),
                                   "--resamples", "200", "--no-similarity", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "compare.json").read_text())
    assert data["task"] == "toy" and data["model"] == str(tiny_dir)
    assert {r["kind"] for r in data["rows"]} == {"found", "human"}
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_cli_compare_error_exits_2_without_traceback(tmp_path, tiny_dir, tiny_loaded, toy_yaml):  # noqa: F811
    make_found(tiny_loaded, toy_yaml, tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", "from autoprompt_search.cli import main; main()", "compare",
                           str(tmp_path / "run"), "--model", "smollm2-135m", "--no-similarity"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "found for model" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(comparison, tmp_path):
    """Opt-in (-m slow): needs Debian's chromium; the default suite does not."""
    import shutil

    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    _, _, comp = comparison
    paths = write_reports(comp, tmp_path / "rep")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", f"file://{paths['html']}"],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 2000)
    # the page is not blank: plots and table put dark pixels in the upper half
    dark = sum(1 for px in img.crop((0, 0, 1200, 1000)).getdata() if px < 128)
    assert dark > 5000


def test_report_plots_leave_matplotlibs_global_state_alone(comparison):
    """Plots draw on their own Agg canvas: the process's backend and pyplot figures are untouched."""
    import matplotlib

    from autoprompt_search.analysis.report import make_plots

    _, _, comp = comparison
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plots = make_plots(comp)
        assert matplotlib.get_backend() == "svg"
        assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in plots.values()) and len(plots) == 3
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
    finally:
        matplotlib.use(before)
