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

from .compare import Comparison
from ..core.results import atomic_write, write_json

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


def table_rows(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary table (shared by terminal, HTML and Markdown)."""
    metric = "P@1" if comp.retrieval else "acc"
    header = ["prompt", "kind", f"{metric} %", "95% CI", "macro-F1 %", "95% CI",
              "Δ vs best human", "p (McNemar)", "sim. to human", "perplexity", "tokens"]
    cells = []
    for r in sorted_rows(comp):
        sim = r.get("similarity") or {}
        cells.append([
            f"{r['name']}: {describe(r, comp)}",
            r["kind"], _pct(r["accuracy"]), _ci(r["accuracy_ci"]), _pct(r.get("macro_f1")),
            _ci(r.get("macro_f1_ci")), _delta(r.get("vs_best_human")), _p(r.get("vs_best_human")),
            _num(sim.get("max"), ".2f") if sim else "-", _num(r.get("perplexity")),
            str(r["length_tokens"]),
        ])
    return header, cells


def summary_lines(comp: Comparison) -> list[str]:
    """A few plain sentences of numbers under the table."""
    lines = [f"task {comp.task}, model {comp.model}, split {comp.split}, n={comp.n} examples; "
             f"intervals: percentile bootstrap ({comp.settings.get('resamples')} resamples); "
             "p: McNemar exact test against the best human prompt on the same examples."]
    hs = comp.human_spread
    if hs:
        a = hs["accuracy"]
        lines.append(f"human prompts ({a['n']}): accuracy min {_pct(a['min'])}, max {_pct(a['max'])}, "
                     f"mean {_pct(a['mean'])}, std {_pct(a['std'])} points, range {_pct(a['range'])} "
                     f"points; best human prompt: {comp.best_human}.")
    for r in sorted_rows(comp):
        if r["kind"] == "human" or not r.get("vs_best_human") or "skipped" in r["vs_best_human"]:
            continue
        t = r["vs_best_human"]
        lines.append(f"{r['name']}: {_delta(t)} points vs {comp.best_human} "
                     f"(McNemar p={t['p_exact']:.3g}, paired bootstrap 95% CI "
                     f"[{100 * t['delta_ci'][0]:+.1f}, {100 * t['delta_ci'][1]:+.1f}], "
                     f"{t['only_a']} examples only it gets right, {t['only_b']} only the human prompt).")
    for s in comp.skipped:
        lines.append(f"skipped {s['name']} ({s['prompt']}): {s['reason']}")
    return lines


def print_table(comp: Comparison, console=None) -> None:
    """A compact terminal table (the full one is in the HTML/Markdown reports)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    metric = "P@1" if comp.retrieval else "acc"
    table = Table(title=f"{comp.task} · {comp.model} · {comp.split} (n={comp.n})")
    for i, h in enumerate(["prompt", "kind", f"{metric} % [95% CI]", "F1 %", "Δ best human",
                           "p", "sim", "ppl", "tok"]):
        table.add_column(h, overflow="fold", justify="left" if i < 2 else "right",
                         ratio=4 if i == 0 else None)
    for r in sorted_rows(comp):
        sim = r.get("similarity") or {}
        table.add_row(describe(r, comp), r["kind"], f"{_pct(r['accuracy'])} {_ci(r['accuracy_ci'])}",
                      _pct(r.get("macro_f1")), _delta(r.get("vs_best_human")),
                      _p(r.get("vs_best_human")), _num(sim.get("max"), ".2f") if sim else "-",
                      _num(r.get("perplexity"), ".0f"), str(r["length_tokens"]))
    console.print(table)
    for line in summary_lines(comp):
        console.print(line, highlight=False)


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
    out.append("</table><ul>")
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
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
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
