"""`coachlab report`: an experiment report as HTML and Markdown, with its charts as PNG files.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and written
twice, so the HTML and the Markdown say the same thing. Its numbers come from the run folder as
`load_run` reads it: the tree's node records, the library's latest version and
evaluation/results.json; a run that has not been evaluated yet gets a report that says so.
"""

from __future__ import annotations

import base64
import html
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from matplotlib.figure import Figure

from coachlab import __version__
from coachlab.experiments.effects import StrategyEffect
from coachlab.experiments.evaluate_markdown import calibration_line, share_line
from coachlab.experiments.evaluation_report import ConditionResult, EvaluationReport
from coachlab.schema import RoleUsage, Strategy
from coachlab.stats import Estimate
from coachlab.viz.layout import MEASURES, Measure
from coachlab.viz.measures import node_scores, tree_measure
from coachlab.viz.plots import (
    ORACLE,
    chart_conditions,
    growth_chart,
    growth_rows,
    has_outcome,
    is_control,
    outcomes_chart,
    report_measure,
    satisfaction_chart,
    tokens_chart,
    transfer_chart,
)
from coachlab.viz.png import LABEL_LIMIT, tree_figure
from coachlab.viz.run import NO_EVALUATION, RunData, role_costs
from coachlab.viz.strategy_chart import STRATEGY_LIMIT, strategy_chart, strategy_rows

__all__ = ["Report", "ReportFiles", "build_report", "write_report"]


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True)
class _Para:
    text: str
    note: bool = False


@dataclass(frozen=True)
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class _Image:
    file: str
    alt: str


@dataclass(frozen=True)
class _Bullets:
    items: list[str]


_Block = _Heading | _Para | _Table | _Image | _Bullets


@dataclass
class Report:
    """A report before it is written: its blocks and the figures its images name."""

    title: str
    blocks: list[_Block] = field(default_factory=lambda: [])
    figures: dict[str, tuple[Figure, int]] = field(default_factory=lambda: {})

    def heading(self, level: int, text: str) -> None:
        """Add a heading (level 2 or 3; the title is level 1)."""
        self.blocks.append(_Heading(level, text))

    def para(self, text: str, *, note: bool = False) -> None:
        """Add a paragraph (a note is set apart, for missing data and warnings)."""
        self.blocks.append(_Para(text, note))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        """Add a table of plain-text cells."""
        self.blocks.append(_Table(headers, rows))

    def bullets(self, items: list[str]) -> None:
        """Add a bulleted list."""
        self.blocks.append(_Bullets(items))

    def image(self, file: str, figure: Figure, alt: str, *, dpi: int = 130) -> None:
        """Add a chart; it is saved as `file` beside the report."""
        self.figures[file] = (figure, dpi)
        self.blocks.append(_Image(file, alt))

    def markdown(self) -> str:
        """The report as Markdown (images linked as files beside it)."""
        out = [f"# {_md_text(self.title)}", ""]
        for b in self.blocks:
            if isinstance(b, _Heading):
                out += [f"{'#' * b.level} {_md_text(b.text)}", ""]
            elif isinstance(b, _Para):
                out += [f"> {_md_text(b.text)}" if b.note else _md_text(b.text), ""]
            elif isinstance(b, _Table):
                out.append("| " + " | ".join(map(_md_cell, b.headers)) + " |")
                out.append("|" + " --- |" * len(b.headers))
                out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, _Image):
                out += [f"![{b.alt}]({b.file})", ""]
            else:
                out += [f"- {_md_text(item)}" for item in b.items] + [""]
        return "\n".join(out)

    def html(self, images: dict[str, bytes]) -> str:
        """The report as one HTML file (images embedded as data URIs, so it can be sent on its own)."""
        e = html.escape
        out = [f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if isinstance(b, _Heading):
                out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
            elif isinstance(b, _Para):
                out.append(f'<p class="{"note" if b.note else ""}">{_inline(b.text)}</p>')
            elif isinstance(b, _Table):
                head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
                body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(b, _Image):
                data = base64.b64encode(images[b.file]).decode("ascii")
                out.append(f'<figure><img alt="{e(b.alt)}" src="data:image/png;base64,{data}"></figure>')
            else:
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        return _HTML.format(title=e(self.title), body="\n".join(out))


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>
body {{ font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; max-width: 1100px;
  margin: 24px auto; padding: 0 16px; }}
h1 {{ font-size: 24px; }} h2 {{ border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }}
th, td {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }}
code {{ background: #f6f8fa; padding: 0 4px; border-radius: 4px; font-size: 12px; }}
p.note {{ background: #fff8c5; border-left: 4px solid #d4a72c; padding: 6px 10px; }}
figure {{ margin: 8px 0 20px; }} img {{ max-width: 100%; height: auto; border: 1px solid #eaeef2; }}
</style></head>
<body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    """Escaped HTML, with `code` spans as in the Markdown."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_QUOTE_START = re.compile(r"^(\s*)>", re.MULTILINE)


def _md_text(text: str) -> str:
    """Markdown text in which model text stays text, and reads as written in the file.

    Outside code spans, only what Markdown would turn into markup is backslash-escaped: a `<` that
    could open a tag, comment or autolink, an `&` that would read as an entity, a `>` that would
    open a quote. `->`, `a < b` and `R&D` stay as they are (no HTML entities in the file).
    """
    parts = re.split(r"(`[^`]+`)", text)
    out = "".join(
        p if p.startswith("`") else _QUOTE_START.sub(r"\1\\>", _ENTITY.sub(r"\\&", _TAG_START.sub(r"\\<", p)))
        for p in parts
    )
    return out


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"${x:,.4f}"


def _config(run: RunData, doc: Report) -> None:
    doc.heading(2, "Configuration")
    cfg = run.experiment
    if cfg is None:
        doc.para("The run folder holds no readable experiment.yaml; the configuration is not shown.", note=True)
        return
    if cfg.description:
        doc.para(cfg.description)
    rows: list[list[str]] = []
    for name, entry in cfg.models.items():
        model = entry.config.get("model") or entry.config.get("azure_deployment") or "?"
        base = entry.config.get("base_url")
        rows.append(
            [
                name,
                entry.provider,
                str(model) + (f" @ {base}" if isinstance(base, str) else ""),
                _num(entry.temperature, 2) if entry.temperature is not None else "default",
                f"${entry.cost_per_1k_prompt:g} / ${entry.cost_per_1k_completion:g}",
            ]
        )
    doc.table(["entry", "provider", "model", "temperature", "price per 1k tokens (prompt / completion)"], rows)
    items = [f"max turns per episode: {cfg.environment.max_turns}"]
    if cfg.train is not None:
        t = cfg.train
        items.append(
            f"train: student `{t.student}`, teacher `{t.teacher}`, {t.trials} trials per node, a node fails below "
            f"{t.threshold:g} or {t.teacher_margin:g} under the teacher; verification {t.verify.criterion} over "
            f"{t.verify.trials} trials, {t.verify.refine_rounds} refinement rounds; budgets: {t.max_nodes} nodes, "
            f"depth {t.max_depth}, {t.max_iterations} iterations"
            + (f", {t.max_tokens:,} tokens" if t.max_tokens is not None else "")
        )
    if cfg.evaluate is not None:
        ev = cfg.evaluate
        items.append(
            f"evaluate: held-out scenarios {', '.join(ev.scenarios)}; students {', '.join(ev.students)}; "
            f"conditions {', '.join(ev.conditions)}; {ev.trials} trials; pass^k threshold {ev.threshold}"
        )
    doc.bullets(items)


_TREE_FILL: dict[Measure, str] = {
    "task_success": "task success rate (share of its scored trials that were a task success)",
    "items_met": "items met (mean share of checklist items met per trial; no node's student succeeded, so task "
    "success would be red everywhere)",
    "satisfaction": "mean satisfaction (the run has no checklist verdicts)",
}


def _tree(run: RunData, doc: Report) -> None:
    doc.heading(2, "Scenario tree")
    nodes = list(run.tree.nodes())
    statuses = Counter(n.status.value for n in nodes)
    deepest = max((n.depth for n in nodes), default=0)
    measure = tree_measure(node_scores(run, n) for n in nodes)
    doc.para(
        f"{len(nodes)} nodes ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items())) or 'none'}), "
        f"{sum(1 for n in nodes if n.depth == 0)} roots, depth {deepest}. Fill: the student's "
        f"{_TREE_FILL[measure]}; ring: the teacher's; size: student trials; badge: strategies admitted at the node. "
        "The tree page (`coachlab tree show`) switches the colouring to the other measures."
    )
    doc.image("tree.png", tree_figure(run), "scenario tree", dpi=130 if len(nodes) <= LABEL_LIMIT else 80)
    rows = growth_rows(run)
    doc.heading(3, "Growth per iteration")
    columns = {
        "iteration": "iteration",
        "nodes": "nodes created",
        "expanded": "expanded",
        "failed": "failed",
        "passed": "passed",
        "frontier": "frontier",
        "error": "infrastructure error",
        "admitted": "strategies admitted",
        "rejected": "rejected",
        "cumulative": "nodes in the tree",
    }
    doc.table(list(columns.values()), [[str(r[k]) for k in columns] for r in rows])
    if rows:
        doc.image("growth.png", growth_chart(run), "tree growth per iteration")


def _row_cost(run: RunData, row: ConditionResult) -> float | None:
    cfg = run.experiment
    if cfg is None:
        return None
    total = 0.0
    for role, usage in row.usage.items():
        entry = cfg.models.get(row.agent_model if role == "agent" else role)
        if entry is None:
            return None
        total += (
            usage.prompt_tokens * entry.cost_per_1k_prompt + usage.completion_tokens * entry.cost_per_1k_completion
        ) / 1000
    return total


def _evaluation(run: RunData, report: EvaluationReport | None, doc: Report) -> None:
    doc.heading(2, "Evaluation")
    if report is None:
        doc.para(NO_EVALUATION.format(root=run.root), note=True)
        return
    checklist = has_outcome(report, "task_success")
    doc.para(
        f"Held-out scenarios against library v{report.library_version} (coachlab {report.package_version}). "
        + (
            "Task success (the primary outcome: every must item met, no policy item broken) and items met (the "
            "share of checklist items met per episode) are shares of the scored episodes; satisfaction (1-10) is "
            "the judge's score beside them. "
            if checklist
            else "The scenarios have no checklist, so satisfaction (1-10, the judge's score) is the outcome. "
        )
        + "95% CIs resample scenarios, then trials; pass^k is the share of scenarios whose every trial succeeded."
    )
    if report.library_version != run.library.version:
        doc.para(
            f"The library has changed since this evaluation (v{report.library_version} then, v{run.library.version} "
            "now): run coachlab evaluate again to measure the current library.",
            note=True,
        )
    if checklist or has_outcome(report, "items_met"):
        conditions = chart_conditions(report)
        controls = [c for c in conditions if is_control(c)]
        doc.image(
            "outcomes.png",
            outcomes_chart(report),
            "task success and items met per condition"
            + (f", the control arms ({', '.join(controls)}) hatched" if controls else "")
            + (", the oracle drawn as a ceiling line" if ORACLE in conditions else ""),
        )
    headers = [
        "student",
        "condition",
        "agent model",
        "scored / episodes",
        "task success (95% CI)",
        "items met (95% CI)",
        "satisfaction (95% CI)",
        "pass^k",
        "policy kept",
        "resolved",
        "infra / judge / simulator",
        "tokens",
        "est. cost",
    ]

    def line(student: str, r: ConditionResult) -> list[str]:
        tokens = sum(u.total_tokens for u in r.usage.values())
        return [
            student,
            r.condition,
            r.agent_model,
            f"{r.judged}/{r.episodes}",
            str(r.task_success),
            str(r.items_met),
            str(r.satisfaction),
            _pct(r.pass_k),
            _pct(r.policy_rate),
            _pct(r.resolved_rate),
            f"{r.infrastructure_errors} / {r.judge_errors} / {r.simulator_faults}",
            f"{tokens:,}",
            _money(_row_cost(run, r)),
        ]

    rows = [line(s.student, r) for s in report.students for r in s.rows]
    if report.teacher is not None:
        rows.append(line("(ceiling)", report.teacher))
    doc.table(headers, rows)
    if report.infrastructure_errors or report.judge_errors or report.simulator_faults:
        doc.para(
            f"Not scored: {report.infrastructure_errors} episode(s) ended on infrastructure errors (re-run them with "
            f"coachlab evaluate --resume --retry-failed), {report.judge_errors} the judge could not read and "
            f"{report.simulator_faults} the simulated customer spoiled.",
            note=True,
        )
    doc.para(calibration_line(report.calibration), note=report.calibration is None)
    doc.bullets(
        [
            f"gap closed by the library for {s.student}: {s.gap_closed} over {s.gap_closed.n} paired trials "
            f"((library - baseline) / (teacher - baseline), on {report.primary.replace('_', ' ')})"
            + (f"; on items met {s.gap_closed_items}" if s.gap_closed_items is not None else "")
            for s in report.students
            if report.teacher is not None
        ]
        + [share for s in report.students if (share := share_line(s, report.primary)) is not None]
    )
    arms = [(s.student, c) for s in report.students for c in s.contrasts]
    if arms:
        measure = report.primary.replace("_", " ")
        doc.para(
            "Each arm minus the baseline, paired by seed (95% CI over scenarios, then trials). oracle: the scenario's "
            "own checklist as words to say, the most any library could do for this student; placebo: as many lines "
            "that fit none of the scenario's items, what more text does by itself."
        )
        doc.table(
            ["student", "arm", f"{measure} minus baseline", "items met minus baseline"],
            [
                [student, c.condition, str(c.minus_baseline), str(c.minus_baseline_items or "n/a")]
                for student, c in arms
            ],
        )
    threshold = run.experiment.evaluate.threshold if run.experiment and run.experiment.evaluate else None
    if has_outcome(report, "satisfaction"):
        if checklist:
            doc.para(
                "Satisfaction per condition, secondary: the judge's 1-10 score of the same episodes. On labelled "
                "chats it is barely related to the labels (docs/verdicts.md), so read it beside task success and "
                "items met, never instead of them."
            )
        doc.image("satisfaction.png", satisfaction_chart(report, threshold=threshold), "satisfaction per condition")
    _strategies(run, report, doc)
    if len(report.students) > 1:
        measure = report_measure(report)
        doc.heading(3, "Transfer matrix")
        doc.para(
            f"The same library, retrieved for every student model: {MEASURES[measure].label} per student and condition."
        )
        doc.image("transfer.png", transfer_chart(report), "transfer matrix: students x conditions")


def _share(e: Estimate) -> str:
    return "n/a" if e.mean is None else f"{100 * e.mean:.0f}%"


def _verdict(e: StrategyEffect, retired: set[str]) -> str:
    if e.harmful:
        return "retired" if e.strategy_id in retired else "harmful"
    return e.direction


def _strategies(run: RunData, report: EvaluationReport, doc: Report) -> None:
    """Per strategy: where it was shown vs not shown, as a chart and a table."""
    listed = [e for s in report.students for e in s.strategies]
    if not listed:
        return
    doc.heading(3, "Per strategy")
    shown = strategy_rows(report, limit=None)
    if not shown:
        doc.para(
            f"No strategy of the library was shown in the library condition "
            f"({len({e.strategy_id for e in listed})} could have been): "
            "retrieval found none above its similarity floor on these scenarios.",
            note=True,
        )
        return
    doc.para(
        "In the library condition, each strategy's outcome in the episodes where retrieval showed it and in those "
        "where it did not, and the difference (shown minus not shown; 95% CI over scenarios, then episodes). A "
        "strategy retrieved only on hard scenarios looks worse than it is by this difference; the library minus "
        "the baseline on the same seeds where it was shown compares each episode with itself without any library."
        + (f" The chart shows the {STRATEGY_LIMIT} most shown of {len(shown)}." if len(shown) > STRATEGY_LIMIT else "")
    )
    situations = {s.id: s.situation for s in run.library.strategies}
    doc.image("strategies.png", strategy_chart(report, situations=situations), "per strategy: shown vs not shown")
    retired = set(report.retired)
    several = len(report.students) > 1
    doc.table(
        (["student"] if several else [])
        + [
            "strategy",
            "shown in episodes (turns)",
            "task success shown / not",
            "effect",
            "items met shown / not",
            "effect",
            "satisfaction effect",
            "library - baseline where shown",
            "leave-one-out",
            "verdict",
        ],
        [
            ([e.student] if several else [])
            + [
                e.strategy_id,
                f"{e.episodes} ({e.turns})",
                f"{_share(e.success_shown)} / {_share(e.success_not_shown)}",
                str(e.success_effect),
                f"{_share(e.items_shown)} / {_share(e.items_not_shown)}",
                str(e.items_effect),
                str(e.satisfaction_effect),
                "-" if e.vs_baseline is None else str(e.vs_baseline),
                "-" if e.ablation is None else str(e.ablation),
                _verdict(e, retired),
            ]
            for e in shown
        ],
    )


def _strategy_lines(s: Strategy) -> list[str]:
    items = [f"status: {s.status.value}", f"situation: {s.situation}", f"guidance: {s.guidance}"]
    ev = s.evidence
    if ev is not None:
        ci = f" [{_num(ev.uplift_low)}, {_num(ev.uplift_high)}]" if ev.uplift_low is not None else ""
        uplift = "n/a" if ev.uplift is None else f"{ev.uplift:+.2f}"
        text = (
            f"evidence ({ev.criterion}): {ev.trials} trials, {_num(ev.mean_without)} without -> "
            f"{_num(ev.mean_with)} with, uplift {uplift}{ci}"
        )
        extra = {k: v for k, v in ev.model_dump().items() if v is not None and k not in _EVIDENCE_SHOWN}
        text += "".join(
            f"; {k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"; {k}: {v}" for k, v in extra.items()
        )
        items.append(text + (f" ({ev.note})" if ev.note else ""))
    p = s.provenance
    if p is not None:
        items.append(
            f"from node {p.node_id or p.scenario_id}, iteration {p.iteration}, episode {p.episode_id or 'n/a'} "
            f"(failure turn {p.failure_turn if p.failure_turn is not None else 'n/a'}), teacher {p.teacher_model}"
        )
    items += [
        f"audit: {a.status.value} by {a.by} at {a.at:%Y-%m-%d %H:%M}" + (f": {a.why}" if a.why else "") for a in s.audit
    ]
    return items


_EVIDENCE_SHOWN = {"trials", "mean_without", "mean_with", "uplift_low", "uplift_high", "criterion", "note"}


def _library(run: RunData, doc: Report) -> None:
    lib = run.library
    doc.heading(2, f"Strategy library (v{lib.version})")
    if not lib.strategies:
        doc.para("The library is empty: training has not admitted or rejected any strategy yet.", note=True)
        return
    counts = Counter(s.status.value for s in lib.strategies)
    doc.para(
        f"{len(lib.strategies)} strategies: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ". "
        f"Audit them with `coachlab library approve|reject|edit {run.root} ID --by NAME`."
    )
    order = {"approved": 0, "proposed": 1, "rejected": 2}
    for s in sorted(lib.strategies, key=lambda s: (order.get(s.status.value, 3), s.id)):
        doc.heading(3, f"{s.id} ({s.status.value})")
        doc.bullets(_strategy_lines(s))


def _processed(usage: RoleUsage) -> str:
    return "n/a" if usage.prompt_processed is None else f"{usage.prompt_processed:,}"


def _costs(run: RunData, doc: Report) -> None:
    doc.heading(2, "Tokens and cost per role")
    costs = role_costs(run)
    if not costs:
        doc.para("No model calls recorded yet.", note=True)
        return
    rows = [
        [
            c.phase,
            c.role,
            c.model,
            f"{c.usage.calls:,}",
            f"{c.usage.cached_calls:,}",
            f"{c.usage.prompt_tokens:,}",
            _processed(c.usage),
            f"{c.usage.completion_tokens:,}",
            f"{c.tokens:,}",
            _money(c.cost),
        ]
        for c in sorted(costs, key=lambda c: (c.phase != "train", c.role, c.model))
    ]
    total = sum((c.usage for c in costs), RoleUsage())
    priced = [c.cost for c in costs if c.cost is not None]
    all_cost = _money(sum(priced)) if priced else "n/a"
    rows.append(
        [
            "all",
            "",
            "",
            f"{total.calls:,}",
            f"{total.cached_calls:,}",
            f"{total.prompt_tokens:,}",
            _processed(total),
            f"{total.completion_tokens:,}",
            f"{total.total_tokens:,}",
            all_cost,
        ]
    )
    doc.table(
        ["phase", "role", "model", "calls", "cached", "prompt", "processed", "completion", "tokens", "est. cost"], rows
    )
    doc.para(
        "Cost is estimated from the cost_per_1k_* prices of the model entries in experiment.yaml (0 when unset). "
        "Processed: the prompt tokens the engine could not take from its prompt cache (n/a where it does not say)."
    )
    doc.image("tokens.png", tokens_chart(costs), "tokens per role")


def build_report(run: RunData) -> Report:
    """The report of a run, as blocks and figures (nothing written yet)."""
    doc = Report(title=f"Experiment report: {run.name}" + (" (dry run)" if run.dry_run else ""))
    if run.banner is not None:
        doc.para(run.banner, note=True)
    doc.para(
        f"Run folder {run.root}; library v{run.library.version}; report made "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by coachlab {__version__}."
    )
    if run.record is not None:
        doc.para(
            "What ran is recorded in resolved.json; fingerprints: "
            + ", ".join(f"{r.command} `{r.fingerprint[:16]}`" for r in run.record.runs())
            + "."
        )
    for note in run.notes:
        doc.para(note, note=True)
    _config(run, doc)
    _evaluation(run, run.evaluation, doc)
    _tree(run, doc)
    _library(run, doc)
    _costs(run, doc)
    return doc


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote."""

    html: Path
    markdown: Path
    images: list[Path]


def write_report(run: RunData, out_dir: str | Path | None = None) -> ReportFiles:
    """Write report.html, report.md and the charts as PNG files into `out_dir` (default RUN_DIR/report)."""
    folder = Path(out_dir) if out_dir is not None else run.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    doc = build_report(run)
    images: dict[str, bytes] = {}
    paths: list[Path] = []
    for name, (figure, dpi) in doc.figures.items():
        path = folder / name
        figure.savefig(path, dpi=dpi, facecolor="white")  # pyright: ignore[reportUnknownMemberType]
        images[name] = path.read_bytes()
        paths.append(path)
    html_path, md_path = folder / "report.html", folder / "report.md"
    html_path.write_text(doc.html(images), encoding="utf-8")
    md_path.write_text(doc.markdown(), encoding="utf-8")
    return ReportFiles(html=html_path, markdown=md_path, images=paths)
