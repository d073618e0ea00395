"""Render a :class:`~autoprompt_search.analysis.compare.Comparison`: terminal table, JSON, HTML, Markdown.

The HTML report is one self-contained file (plots embedded as base64 PNG); the
Markdown report references the same plots written as PNG files next to it. Plots
are drawn on a ``matplotlib.figure.Figure`` with its own Agg canvas -- no pyplot, no global
backend switch, no display needed:

* ``accuracy.png`` -- accuracy with its bootstrap 95% interval per prompt;
* ``curves.png`` -- the search curves (scores over steps/trials) of the runs;
* ``fluency.png`` -- accuracy against the LM's perplexity of the prompt text.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from ..core.results import atomic_write, write_json
from .compare import Comparison

KIND_COLORS = {"found": "#d62728", "human": "#1f77b4", "typed": "#2ca02c"}


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _p(test: dict | None) -> str:
    if not test:
        return "-"
    if "skipped" in test:
        return "n/a"
    return f"{test['p_exact']:.3g}"


def _delta(test: dict | None) -> str:
    if not test or "skipped" in test:
        return "-"
    return f"{100 * test['delta']:+.1f}"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def sorted_rows(comp: Comparison) -> list[dict[str, Any]]:
    return sorted(comp.rows, key=lambda r: -r["accuracy"])


def describe(row: dict[str, Any], comp: Comparison) -> str:
    """The prompt text, with its instruction, demonstrations and label words when they are its own."""
    text = row["prompt"]
    fs = row.get("fewshot") or {}
    if fs.get("instruction"):
        text = f"[instruction: {fs['instruction']}] " + text
    if fs.get("shots"):
        text += f" [{fs['shots']} demonstrations]"
    words = row.get("verbalizer")
    if words and words != comp.settings.get("task_verbalizer"):
        text += " [label words: " + ", ".join("/".join(w) for w in words.values()) + "]"
    return text


def reference_label(comp: Comparison) -> str:
    """``dev-selected human prompt '<name>'``: what the p-values are against."""
    ref = comp.reference
    if not ref:
        return "selected human prompt (none)"
    return f"{ref['label']} human prompt '{ref['name']}'"


def table_rows(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary table (shared by terminal, HTML and Markdown)."""
    metric = "P@1" if comp.retrieval else "acc"
    ref = comp.reference
    against = ref["label"] if ref else "selected"
    header = ["prompt", "kind", f"{metric} %", "95% CI", "macro-F1 %", "95% CI",
              f"Δ vs {against}", f"p vs {reference_label(comp)}", "p vs oracle",
              "sim. to human", "perplexity", "tokens"]
    cells = []
    for r in sorted_rows(comp):
        sim = r.get("similarity") or {}
        cells.append([
            f"{r['name']}: {describe(r, comp)}",
            r["kind"], _pct(r["accuracy"]), _ci(r["accuracy_ci"]), _pct(r.get("macro_f1")),
            _ci(r.get("macro_f1_ci")), _delta(r.get("vs_selected")), _p(r.get("vs_selected")),
            _p(r.get("vs_oracle")), _num(sim.get("max"), ".2f") if sim else "-",
            _num(r.get("perplexity")), str(r["length_tokens"]),
        ])
    return header, cells


def baseline_rows(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the human-baselines table: per calibration, the literature's
    standard prompt, the selected one, the spread and the oracle (test scores)."""
    metric = "P@1" if comp.retrieval else "acc"
    header = ["baseline", "calibration", "prompt", f"{metric} %", "macro-F1 %", "how it is chosen"]
    cells: list[list[str]] = []
    for b in (comp.baselines or {}).get("variants", []):
        cal = b["calibration"]
        s = b["standard"]
        how = ("the literature's prompt (task file 'standard:'"
               + (f"; {s['source']}" if s.get("source") else "") + ")") if s.get("literature") \
            else "no literature prompt shipped: the task file's first prompt"
        if s.get("note") and s.get("literature"):
            how += f"; {s['note']}"
        cells.append(["standard", cal, s.get("name") or "-", _pct(s.get("accuracy")),
                      _pct(s.get("macro_f1")), how])
        sel = b["selected"]
        if sel.get("name") is None:
            how = f"none: {sel.get('reason')}"
        elif sel["on"] == "dev":
            how = f"best on dev ({_pct(sel['selection_accuracy'])} on {sel['selection_n']} examples)"
        else:
            how = (f"best mean held-out accuracy, {sel['folds']}-fold cross-validation on train + dev "
                   f"({_pct(sel['selection_accuracy'])}, {sel['selection_n']} examples)")
        if sel.get("note"):
            how += f"; {sel['note']}"
        cells.append([sel["label"], cal, sel.get("name") or "-", _pct(sel.get("accuracy")),
                      _pct(sel.get("macro_f1")), how + "; ties: the task file's order"])
        sp = b.get("spread")
        if sp:
            a, f = sp["accuracy"], sp.get("macro_f1")
            cells.append(["human prompts: mean ± std [min–max]", cal, f"{a['n']} prompts",
                          f"{_pct(a['mean'])} ± {_pct(a['std'])} [{_pct(a['min'])}–{_pct(a['max'])}]",
                          f"{_pct(f['mean'])} ± {_pct(f['std'])}" if f else "-",
                          "every human prompt of the task that was scored"])
        o = b.get("oracle")
        if o:
            cells.append([o["label"], cal, o["name"], _pct(o["accuracy"]), _pct(o.get("macro_f1")),
                          f"best on the {comp.split} split itself: not available to a user"])
    return header, cells


def summary_lines(comp: Comparison) -> list[str]:
    """A few plain sentences of numbers under the table."""
    ref = comp.reference
    against = f"p vs {reference_label(comp)}"
    if ref and ref.get("calibration", "none") != "none":
        against += f" (calibration {ref['calibration']})"
    tests = ""
    if ref:
        tests += (f"; {against}: McNemar exact test on the same examples against the human prompt "
                  "a user would pick without test labels")
    if comp.best_human:
        tests += (f"; p vs oracle: the same test against the best human prompt on {comp.split} "
                  f"({comp.best_human}), which is chosen on the labels it is scored on")
    lines = [f"task {comp.task}, model {comp.model}, split {comp.split}, n={comp.n} examples; "
             f"intervals: percentile bootstrap ({comp.settings.get('resamples')} resamples){tests}."]
    hs = comp.human_spread
    if hs:
        a = hs["accuracy"]
        lines.append(f"human prompts ({a['n']}): accuracy min {_pct(a['min'])}, max {_pct(a['max'])}, "
                     f"mean {_pct(a['mean'])}, std {_pct(a['std'])} points, range {_pct(a['range'])} "
                     f"points; oracle (selected on {comp.split}): {comp.best_human}.")
    for b in (comp.baselines or {}).get("variants", []):
        s = b["standard"]
        if s.get("note") and not s.get("literature"):
            lines.append(f"standard baseline ({b['calibration']}): {s['note']} ({s.get('name')}).")
    for r in sorted_rows(comp):
        t = r.get("vs_selected")
        if r["kind"] == "human" or not t or "skipped" in t:
            continue
        lines.append(f"{r['name']}: {_delta(t)} points {against} "
                     f"(McNemar p={t['p_exact']:.3g}, paired bootstrap 95% CI "
                     f"[{100 * t['delta_ci'][0]:+.1f}, {100 * t['delta_ci'][1]:+.1f}], "
                     f"{t['only_a']} examples only it gets right, {t['only_b']} only the human prompt).")
    for s in comp.skipped:
        lines.append(f"skipped {s['name']} ({s['prompt']}): {s['reason']}")
    return lines


def print_table(comp: Comparison, console=None) -> None:
    """A compact terminal table (the full one is in the HTML/Markdown reports)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    metric = "P@1" if comp.retrieval else "acc"
    table = Table(title=f"{comp.task} · {comp.model} · {comp.split} (n={comp.n})")
    ref = comp.reference
    label = ref["label"] if ref else "selected"
    for i, h in enumerate(["prompt", "kind", f"{metric} % [95% CI]", "F1 %", f"Δ {label}",
                           f"p vs {reference_label(comp)}", "p vs oracle", "sim", "ppl", "tok"]):
        table.add_column(escape(h), overflow="fold", justify="left" if i < 2 else "right",
                         ratio=4 if i == 0 else None)
    for r in sorted_rows(comp):
        sim = r.get("similarity") or {}
        # cells are text, not rich markup ("[label words: ...]", "[min–max]" would vanish)
        table.add_row(escape(describe(r, comp)), r["kind"], f"{_pct(r['accuracy'])} {_ci(r['accuracy_ci'])}",
                      _pct(r.get("macro_f1")), _delta(r.get("vs_selected")),
                      _p(r.get("vs_selected")), _p(r.get("vs_oracle")),
                      _num(sim.get("max"), ".2f") if sim else "-",
                      _num(r.get("perplexity"), ".0f"), str(r["length_tokens"]))
    console.print(table)
    header, cells = baseline_rows(comp)
    if cells:
        base = Table(title=f"human baselines ({comp.split} scores)")
        for i, h in enumerate(header):
            base.add_column(escape(h), overflow="fold", justify="right" if i in (3, 4) else "left")
        for row in cells:
            base.add_row(*(escape(c) for c in row))
        console.print(base)
    for line in summary_lines(comp):
        console.print(escape(line), highlight=False)


# --- plots ------------------------------------------------------------------------------
def _figure(width: float, height: float):
    """A figure drawn by its own Agg canvas (pyplot's global state is never touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_accuracy(comp: Comparison) -> bytes:
    rows = sorted_rows(comp)[::-1]
    fig = _figure(9, 0.9 + 0.32 * len(rows))
    ax = fig.add_subplot(111)
    ys = range(len(rows))
    for y, r in zip(ys, rows):
        acc, (lo, hi) = 100 * r["accuracy"], (100 * v for v in r["accuracy_ci"])
        ax.errorbar(acc, y, xerr=[[acc - lo], [hi - acc]], fmt="o", capsize=3,
                    color=KIND_COLORS.get(r["kind"], "gray"))
    if comp.human_spread:
        a = comp.human_spread["accuracy"]
        ax.axvspan(100 * a["min"], 100 * a["max"], color=KIND_COLORS["human"], alpha=0.08,
                   label="human range")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r["name"][:40] for r in rows], fontsize=8)
    ax.set_xlabel(("precision@1" if comp.retrieval else "accuracy") + " (%) with bootstrap 95% CI")
    for kind, color in KIND_COLORS.items():
        if any(r["kind"] == kind for r in rows):
            ax.plot([], [], "o", color=color, label=kind)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{comp.task} · {comp.split} · n={comp.n}")
    return _png(fig)


def plot_curves(comp: Comparison) -> bytes | None:
    """One small panel per run: its logged score series against step/trial."""
    if not comp.curves:
        return None
    names = list(comp.curves)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(4 * cols, 2.6 * rows + 0.4)
    for i, name in enumerate(names):
        curve = comp.curves[name]
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, ys in curve["series"].items():
            pts = [(x, y) for x, y in zip(curve["xs"], ys) if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", markersize=3, label=key)
        ax.set_title(name[:45], fontsize=8)
        ax.set_xlabel(curve["x"], fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle("search curves: the scores each run logged (log.jsonl)", fontsize=10)
    return _png(fig)


def plot_fluency(comp: Comparison) -> bytes | None:
    rows = [r for r in comp.rows if r.get("perplexity")]
    if not rows:
        return None
    fig = _figure(9, 4.5)
    ax = fig.add_subplot(111)
    for r in rows:
        ax.scatter(r["perplexity"], 100 * r["accuracy"], color=KIND_COLORS.get(r["kind"], "gray"))
        ax.annotate(r["name"][:24], (r["perplexity"], 100 * r["accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity of the prompt text under the model (log scale; lower = more fluent)")
    ax.set_ylabel(("precision@1" if comp.retrieval else "accuracy") + " (%)")
    for kind, color in KIND_COLORS.items():
        if any(r["kind"] == kind for r in rows):
            ax.scatter([], [], color=color, label=kind)
    ax.legend(fontsize=8)
    ax.set_title("accuracy vs fluency")
    return _png(fig)


def make_plots(comp: Comparison) -> dict[str, bytes]:
    plots = {"accuracy": plot_accuracy(comp), "curves": plot_curves(comp),
             "fluency": plot_fluency(comp)}
    return {k: v for k, v in plots.items() if v is not None}


# --- documents --------------------------------------------------------------------------
CAPTIONS = {
    "accuracy": "Accuracy per prompt with its bootstrap 95% interval; the shaded band is the range "
                "of the human prompts.",
    "curves": "Search curves: the scores each run logged per step or trial.",
    "fluency": "Accuracy against the model's perplexity of the prompt's own words.",
}

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;
color:#222;max-width:1150px}table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,td:nth-child(2),th:first-child{text-align:left}tr.found td{background:#fff3f2}
tr.typed td{background:#f2fff2}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f5f5f5;padding:1px 3px}.small{color:#666;font-size:12px}"""


def render_html(comp: Comparison, plots: dict[str, bytes]) -> str:
    header, cells = table_rows(comp)
    kinds = [r["kind"] for r in sorted_rows(comp)]
    e = html.escape
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
           f"<title>compare: {e(comp.task)} · {e(comp.model)}</title><style>{CSS}</style></head><body>",
           f"<h1>Prompt comparison: {e(comp.task)}</h1>",
           f"<p>model <code>{e(comp.model)}</code>, split <code>{e(comp.split)}</code>, "
           f"n = {comp.n} examples</p>",
           "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    for kind, row in zip(kinds, cells):
        out.append(f"<tr class='{e(kind)}'>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    bheader, bcells = baseline_rows(comp)
    if bcells:
        out.append("<h2>Human baselines</h2><table><tr>"
                   + "".join(f"<th>{e(h)}</th>" for h in bheader) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in bcells]
        out.append("</table>")
    out.append("<ul>")
    out += [f"<li>{e(line)}</li>" for line in summary_lines(comp)]
    out.append("</ul>")
    for name, png in plots.items():
        data = base64.b64encode(png).decode("ascii")
        out.append(f"<h2>{e(name)}</h2><p class='small'>{e(CAPTIONS[name])}</p>"
                   f"<img alt='{e(name)} plot' src='data:image/png;base64,{data}'>")
    out.append(f"<p class='small'>settings: {e(str(comp.settings))}</p></body></html>")
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(comp: Comparison, plot_files: dict[str, str]) -> str:
    header, cells = table_rows(comp)
    out = [f"# Prompt comparison: {comp.task}", "",
           f"model `{comp.model}`, split `{comp.split}`, n = {comp.n} examples", "",
           "| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
    bheader, bcells = baseline_rows(comp)
    if bcells:
        out += ["", "## Human baselines", "", "| " + " | ".join(bheader) + " |",
                "|" + "---|" * len(bheader)]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in bcells]
    out += [""] + [f"- {line}" for line in summary_lines(comp)] + [""]
    for name, file in plot_files.items():
        out += [f"## {name}", "", CAPTIONS[name], "", f"![{name}]({file})", ""]
    return "\n".join(out)


def write_reports(comp: Comparison, out: str | Path) -> dict[str, Path]:
    """Write ``compare.json``, ``report.html``, ``report.md`` and the plot PNGs into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "html": out / "report.html", "markdown": out / "report.md"}
    write_json(paths["json"], comp.to_dict())
    plots = make_plots(comp)
    files = {}
    for name, png in plots.items():
        path = out / f"{name}.png"
        path.write_bytes(png)
        files[name] = path.name
        paths[name] = path
    atomic_write(paths["html"], render_html(comp, plots))
    atomic_write(paths["markdown"], render_markdown(comp, files))
    return paths
