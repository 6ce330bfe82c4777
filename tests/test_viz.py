"""The tree page, the tree picture and the report, from a scripted train + evaluate run.

What a user would notice: the page shows the saved tree (not a re-derived one) and its numbers,
text from models and personas stays text, the review commands it offers really work, the picture
and the report exist and agree with results.json, a run without evaluation still gets a report,
and a wrong folder gets a one-line error naming it. The page and the picture colour nodes by task
success (items met where nothing succeeds, satisfaction without a checklist); the report's first
chart draws task success and items met per condition with their CIs and the control arms apart,
and its per-strategy chart each strategy's figures where shown and where not. The charts are read
back from the matplotlib figures, so a bar of the wrong height or a missing ceiling fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import typer
from markdown_it import MarkdownIt
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_hex, to_rgba
from matplotlib.container import BarContainer, ErrorbarContainer
from PIL import Image
from typer.testing import CliRunner

from coachlab.cli import app as coachlab_app
from coachlab.cli.viz import can_open_browser, report, tree_app
from coachlab.errors import UsageError
from coachlab.explorer.tree import ScenarioTree
from coachlab.library import LibraryStore
from coachlab.schema import AuditStatus
from coachlab.viz import (
    load_run,
    page_data,
    render_page,
    role_costs,
    script_json,
    tree_figure,
    write_report,
    write_tree_png,
)
from coachlab.viz.layout import MEASURES, NO_SCORE_COLOR, Measure, satisfaction_color, tidy_layout
from coachlab.viz.plots import outcomes_chart
from coachlab.viz.run import DRY_RUN, NO_EVALUATION, RunData
from coachlab.viz.strategy_chart import strategy_chart
from viz_run import HELPFUL, INJECTION, MUTATION_INJECTION, big_run, scripted_run

DATA_BLOCK = re.compile(r'<script type="application/json" id="coachlab-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained and evaluated scripted run (read-only: copy it before changing it)."""
    return scripted_run(tmp_path_factory.mktemp("viz") / "run")


def embedded(page: str) -> dict[str, Any]:
    (block,) = DATA_BLOCK.findall(page)
    return json.loads(block)


# ---------- the page's data ----------


def test_page_embeds_the_saved_tree_as_node_link_json(run_dir: Path) -> None:
    data = embedded(render_page(load_run(run_dir)))
    saved = json.loads((run_dir / "tree.json").read_text())
    assert data["tree"] == saved  # the saved records themselves, not a re-derived copy
    tree = ScenarioTree.from_json(json.loads(json.dumps(data["tree"])))
    assert tree.is_tree() and all(
        nx.is_arborescence(tree.graph.subgraph(c)) for c in nx.weakly_connected_components(tree.graph)
    )
    view = data["view"]
    assert isinstance(view, dict) and set(view) == {n["id"] for n in saved["nodes"]}
    root = view["retail-late-delivery"]
    record = next(n["record"] for n in saved["nodes"] if n["id"] == "retail-late-delivery")
    assert root["fill"] == MEASURES["task_success"].color(record["student_success"])
    assert root["ring"] == MEASURES["task_success"].color(record["teacher_success"])
    assert root["color"] == satisfaction_color(record["student_mean"])  # beside the satisfaction means
    assert root["teacher_color"] == satisfaction_color(record["teacher_mean"])
    assert root["trials"] == 2 and root["admitted"] == 1 and root["parent"] is None
    library = LibraryStore(run_dir / "library").load()
    assert set(data["strategies"]) == {s.id for s in library.strategies}
    episodes = data["episodes"]
    assert isinstance(episodes, dict) and set(record["episode_ids"]) <= set(episodes)


def test_failure_turn_is_marked_on_the_agent_line_the_judge_named(run_dir: Path) -> None:
    data = page_data(load_run(run_dir))
    episodes = data["episodes"]
    failed = [e for e in episodes.values() if e["verdict"] and e["verdict"]["failure_turn"] is not None]
    assert failed
    for ep in failed:
        agent_turns = [line["turn"] for line in ep["lines"] if line["who"] == "agent"]
        assert ep["failure_turn"] in agent_turns
        assert ep["failure_turn"] == min(ep["verdict"]["failure_turn"], agent_turns[-1])


def test_script_and_markup_in_transcripts_and_mutations_stay_text(run_dir: Path) -> None:
    page = render_page(load_run(run_dir))
    # The only script elements are the page's own two: the data block and the code.
    assert page.count("<script") == 2 and page.count("</script") == 2
    assert "<img" not in page and "window.__pwned" in page  # present, but only inside escaped JSON strings
    data = embedded(page)
    lines = [line["text"] for ep in data["episodes"].values() for line in ep["lines"]]
    assert any(INJECTION in text for text in lines)  # round-trips exactly, as text
    assert any(e["mutation"] == MUTATION_INJECTION for e in data["tree"]["edges"])


@pytest.mark.parametrize(
    "text", ["</script><script>alert(1)</script>", "<!-- <script>", "&lt;b&gt; & </SCRIPT >", "line\u2028sep\u2029"]
)
def test_script_json_has_no_markup_characters_and_round_trips(text: str) -> None:
    out = script_json({"text": text, text: [text]})
    assert not set("<>&\u2028\u2029") & set(out)
    assert json.loads(out) == {"text": text, text: [text]}


def test_page_code_never_parses_data_as_html_and_csp_allows_only_its_own_script(run_dir: Path) -> None:
    page = render_page(load_run(run_dir))
    code = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(code) == 1
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code[0]
    digest = base64.b64encode(hashlib.sha256(code[0].encode()).digest()).decode()
    (csp,) = re.findall(r'Content-Security-Policy" content="([^"]+)"', page)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert "http://" not in page.split("<script")[0] and "https://" not in page  # nothing to fetch


def test_review_commands_on_the_page_run_against_the_real_cli(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run with space"
    shutil.copytree(run_dir, copy)
    data = page_data(load_run(copy), run_dir=copy)
    strategies = data["strategies"]
    rejected = next(s for s in strategies.values() if s["status"] == "rejected")
    runner = CliRunner()

    def run(command: str) -> None:
        args = shlex.split(command.replace("NAME", "ana").replace("'...'", "'checked by hand'"))
        assert args[:2] == ["coachlab", "library"]
        result = runner.invoke(coachlab_app, args[1:])
        assert result.exit_code == 0, result.output

    run(rejected["commands"]["approve"])
    store = LibraryStore(copy / "library")
    assert store.load().get(rejected["id"]).status is AuditStatus.APPROVED
    assert store.load().get(rejected["id"]).audit[-1].why == "checked by hand"
    approved = next(s for s in strategies.values() if s["guidance"] == HELPFUL["guidance"])
    run(approved["commands"]["edit"])  # the edit command carries the current guidance, quoted
    assert store.load().get(approved["id"]).guidance == HELPFUL["guidance"]
    run(approved["commands"]["reject"])
    assert store.load().get(approved["id"]).status is AuditStatus.REJECTED


def test_page_of_500_nodes_is_quick_to_make(tmp_path: Path) -> None:
    run = load_run(big_run(tmp_path / "big"))
    start = time.perf_counter()
    page = render_page(run)
    elapsed = time.perf_counter() - start
    data = embedded(page)
    assert len(data["view"]) == 500 and len(data["episodes"]) > 500
    assert elapsed < 5, f"page for 500 nodes took {elapsed:.1f}s"
    assert len(page) < 5_000_000


# ---------- layout and colour ----------


def test_tidy_layout_centres_parents_over_children_in_a_forest() -> None:
    g: nx.DiGraph[str] = nx.DiGraph()
    g.add_edges_from([("a", "a.1"), ("a", "a.2"), ("a.2", "a.2.1"), ("a.2", "a.2.2")])
    g.add_node("b")
    layout = tidy_layout(g)
    pos = layout.positions
    assert pos["a.1"] == (0, 1) and pos["a.2.1"] == (1, 2) and pos["a.2.2"] == (2, 2) and pos["b"] == (3, 0)
    assert pos["a.2"] == (1.5, 1) and pos["a"] == (0.75, 0)
    assert layout.width == 4 and layout.depth == 2


def test_tidy_layout_handles_deep_chains_and_refuses_graphs_that_are_not_trees() -> None:
    chain: nx.DiGraph[str] = nx.DiGraph()
    nx.add_path(chain, [str(i) for i in range(5000)])
    assert tidy_layout(chain).depth == 4999  # no recursion limit
    two_parents: nx.DiGraph[str] = nx.DiGraph([("a", "c"), ("b", "c")])
    with pytest.raises(ValueError, match="more than one parent"):
        tidy_layout(two_parents)
    with pytest.raises(ValueError, match="cycle"):
        tidy_layout(nx.DiGraph([("a", "b"), ("b", "a")]))


def test_satisfaction_colours_run_red_to_green_and_grey_without_a_score() -> None:
    assert satisfaction_color(1) == "#d73027" and satisfaction_color(10) == "#1a9850"
    assert satisfaction_color(5.5) == "#fee08b" and satisfaction_color(0) == "#d73027"
    assert satisfaction_color(None) == NO_SCORE_COLOR and satisfaction_color(float("nan")) == NO_SCORE_COLOR


# ---------- what the colours measure ----------

RED, GREEN = "#d73027", "#1a9850"


def items_met(run: RunData, node_id: str, *, teacher: bool = False) -> float | None:
    """The mean share of checklist items met over a node's scored episodes, from train/episodes.jsonl."""
    node = run.tree.node(node_id)
    shares = [
        e.verdict.items_met
        for e in (run.episodes[i] for i in node.episode_ids)
        if e.scored
        and e.verdict is not None
        and e.verdict.items_met is not None
        and (e.condition == "teacher") == teacher
    ]
    return sum(shares) / len(shares) if shares else None


def test_the_page_colours_nodes_by_task_success_with_items_met_and_satisfaction_a_switch_away(run_dir: Path) -> None:
    run = load_run(run_dir)
    data = page_data(run)
    assert data["run"]["measure"] == "task_success" and data["run"]["measure_note"] == ""
    assert [m["key"] for m in data["run"]["measures"]] == ["task_success", "items_met", "satisfaction"]
    for node in run.tree.nodes():
        v = data["view"][node.id]
        assert node.student_success is not None and node.teacher_success is not None
        assert v["fill"] == v["colors"]["task_success"] == MEASURES["task_success"].color(node.student_success)
        assert v["ring"] == v["teacher_colors"]["task_success"] == MEASURES["task_success"].color(node.teacher_success)
        assert v["colors"]["items_met"] == MEASURES["items_met"].color(items_met(run, node.id))
        assert v["teacher_colors"]["items_met"] == MEASURES["items_met"].color(items_met(run, node.id, teacher=True))
        assert v["colors"]["satisfaction"] == satisfaction_color(node.student_mean)
        assert v["scores"] == {
            "task_success": node.student_success,
            "items_met": pytest.approx(items_met(run, node.id)),
            "satisfaction": node.student_mean,
        }
    # The story's bill shock: the coached student does every item but the apology, so it never succeeds.
    telecom = data["view"]["telecom-bill-shock.1"]
    assert telecom["fill"] == RED and telecom["ring"] == GREEN
    assert telecom["scores"]["items_met"] == pytest.approx(5 / 6) and telecom["colors"]["items_met"] != RED
    assert data["view"]["retail-late-delivery.1"]["fill"] == GREEN  # the admitted strategy works on the child
    first = next(iter(data["episodes"].values()))
    verdict = run.episodes[first["id"]].verdict
    assert verdict is not None
    assert first["colors"]["task_success"] == (GREEN if verdict.task_success else RED)


def _nobody_succeeds(run_dir: Path, to: Path) -> Path:
    """A copy of the run whose tree says no node's student ever succeeded."""
    shutil.copytree(run_dir, to)
    tree = json.loads((to / "tree.json").read_text())
    for node in tree["nodes"]:
        if node["record"]["student_success"] is not None:
            node["record"]["student_success"] = 0.0
    (to / "tree.json").write_text(json.dumps(tree))
    return to


def tree_colours(run: RunData, measure: Measure | None = None) -> tuple[list[str], list[str], str]:
    """The fill and ring of every node of the tree picture (in tree order), and its colour bar's label."""
    fig = tree_figure(run, measure=measure)
    ax, bar = fig.axes
    (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    fills = [to_hex(tuple(rgba)) for rgba in np.asarray(dots.get_facecolor()).tolist()]
    rings = [to_hex(tuple(rgba)) for rgba in np.asarray(dots.get_edgecolor()).tolist()]
    return fills, rings, bar.get_ylabel()


def test_tree_png_fills_and_rings_nodes_as_the_page_does(run_dir: Path) -> None:
    run = load_run(run_dir)
    view = page_data(run)["view"]
    fills, rings, label = tree_colours(run)
    assert fills == [view[n.id]["fill"] for n in run.tree.nodes()] and RED in fills and GREEN in fills
    assert rings == [view[n.id]["ring"] for n in run.tree.nodes()]
    assert label.startswith("task success rate") and "fill: student, ring: teacher" in label
    fills, _, label = tree_colours(run, "satisfaction")
    assert fills == [satisfaction_color(n.student_mean) for n in run.tree.nodes()]
    assert label.startswith("mean satisfaction")


def test_a_run_where_no_node_succeeds_is_coloured_by_items_met(run_dir: Path, tmp_path: Path) -> None:
    run = load_run(_nobody_succeeds(run_dir, tmp_path / "run"))
    data = page_data(run)
    assert data["run"]["measure"] == "items_met" and "items met" in data["run"]["measure_note"]
    fills, _, label = tree_colours(run)
    expected = [MEASURES["items_met"].color(items_met(run, n.id)) for n in run.tree.nodes()]
    assert fills == expected == [data["view"][n.id]["fill"] for n in run.tree.nodes()]
    assert len(set(fills)) > 1  # items met tells the nodes apart where task success is red everywhere
    assert label.startswith("items met") and "no node's student succeeded" in label
    md = write_report(run, tmp_path / "report").markdown.read_text()
    assert "Fill: the student's items met" in md


def test_a_run_without_checklists_is_coloured_by_satisfaction(tmp_path: Path) -> None:
    run = load_run(big_run(tmp_path / "big", nodes=40))
    data = page_data(run)
    assert data["run"]["measure"] == "satisfaction"
    assert [m["key"] for m in data["run"]["measures"]] == ["satisfaction"]  # nothing else to switch to
    fills, _, label = tree_colours(run)
    assert fills == [satisfaction_color(n.student_mean) for n in run.tree.nodes()]
    assert label.startswith("mean satisfaction") and "no checklist verdicts" in label


# ---------- errors ----------


def test_a_wrong_folder_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "nowhere"))):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no scenario tree"):
        load_run(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tree.json").write_text("{not json")
    with pytest.raises(UsageError, match=re.escape(str(bad / "tree.json"))):
        load_run(bad)


def test_unreadable_results_are_a_usage_error_naming_the_file(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "evaluation" / "results.json").write_text('{"students": 3}')
    with pytest.raises(UsageError, match=re.escape(str(copy / "evaluation" / "results.json"))):
        load_run(copy)


# ---------- picture and report ----------


def test_tree_png_is_a_picture_sized_to_the_tree(run_dir: Path, tmp_path: Path) -> None:
    small = write_tree_png(load_run(run_dir), tmp_path / "small.png")
    big = write_tree_png(load_run(big_run(tmp_path / "big")), tmp_path / "big.png")
    with Image.open(small) as a, Image.open(big) as b:
        assert a.format == b.format == "PNG"
        assert 800 < a.width < b.width and a.height > 400


def test_report_agrees_with_results_json_and_the_library(run_dir: Path, tmp_path: Path) -> None:
    run = load_run(run_dir)
    files = write_report(run, tmp_path / "report")
    assert {p.name for p in files.images} == {
        "outcomes.png",
        "satisfaction.png",
        "strategies.png",
        "transfer.png",
        "tree.png",
        "growth.png",
        "tokens.png",
    }
    for image in files.images:
        with Image.open(image) as im:
            assert im.format == "PNG" and im.width > 300
    md, page = files.markdown.read_text(), files.html.read_text()
    results = json.loads((run_dir / "evaluation" / "results.json").read_text())
    assert run.evaluation is not None
    for student in run.evaluation.students:
        for row in student.rows:
            cells = [
                student.student,
                row.condition,
                row.agent_model,
                f"{row.judged}/{row.episodes}",
                str(row.task_success),
                str(row.items_met),
                str(row.satisfaction),
            ]
            assert "| " + " | ".join(cells) + " |" in md
            assert f"<td>{row.satisfaction}</td>" in page
        assert f"gap closed by the library for {student.student}: {student.gap_closed}" in md
        assert (f"; on items met {student.gap_closed_items}" in md) == (student.gap_closed_items is not None)
    assert results["teacher"]["agent_model"] == "teacher" and "| (ceiling) | teacher | teacher |" in md
    for s in run.library.strategies:
        assert f"### {s.id} ({s.status.value})" in md and s.guidance in md
    charts = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert charts[:3] == ["outcomes.png", "satisfaction.png", "strategies.png"]  # what decisions rest on, first
    assert len(charts) == 7 and page.count('src="data:image/png;base64,') == 7
    assert "the control arms (oracle, placebo) hatched, the oracle drawn as a ceiling line" in md
    assert "<script" not in page and "No evaluation yet" not in md


def bars(ax: Axes) -> dict[str, tuple[float, float, float, str | None]]:
    """Each bar of a per-condition panel by its label: (height, CI low, CI high, hatch)."""
    out: dict[str, tuple[float, float, float, str | None]] = {}
    for c in ax.containers:
        if isinstance(c, BarContainer):
            (rect,) = c.patches
            assert c.errorbar is not None
            (whisker,) = c.errorbar.lines[2]
            (_, low), (_, high) = whisker.get_segments()[0]
            out[str(c.get_label())] = (rect.get_height(), float(low), float(high), rect.get_hatch())
    return out


def test_the_first_chart_is_task_success_and_items_met_per_condition_with_the_controls_apart(run_dir: Path) -> None:
    report = load_run(run_dir).evaluation
    assert report is not None and report.teacher is not None
    fig = outcomes_chart(report)
    for ax, measure in zip(fig.axes, ("task_success", "items_met"), strict=True):
        drawn = bars(ax)
        expected = {f"{s.student} / {r.condition}": getattr(r, measure) for s in report.students for r in s.rows}
        expected["teacher"] = getattr(report.teacher, measure)
        assert set(drawn) == set(expected)
        for label, est in expected.items():
            height, low, high, hatch = drawn[label]
            assert (height, low, high) == pytest.approx((est.mean, est.low, est.high)), label
            assert (hatch is not None) == label.endswith(("/ oracle", "/ placebo")), label  # controls hatched
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == ["baseline", "generic", "library", "oracle\n(control)", "placebo\n(control)", "teacher"]
        # The oracle as a ceiling: a dashed line per student at its oracle figure, labelled.
        ceilings = {
            c.get_gid(): c
            for c in ax.collections
            if isinstance(c, LineCollection) and str(c.get_gid()).startswith("oracle ceiling")
        }
        assert set(ceilings) == {f"oracle ceiling: {s.student}" for s in report.students}
        for s in report.students:
            oracle = next(r for r in s.rows if r.condition == "oracle")
            (segment,) = ceilings[f"oracle ceiling: {s.student}"].get_segments()
            assert [float(y) for _, y in segment] == pytest.approx([getattr(oracle, measure).mean] * 2)
        assert "oracle ceiling" in [t.get_text() for t in ax.texts]
    library = bars(fig.axes[0])["student / library"]
    assert library[1] < library[0] < library[2]  # a CI that is not a point: the whisker is drawn


def test_strategy_chart_shows_each_strategy_shown_vs_not_shown_with_its_ci(run_dir: Path) -> None:
    run = load_run(run_dir)
    report = run.evaluation
    assert report is not None
    effects = [e for s in report.students for e in s.strategies if e.episodes]
    assert {e.student for e in effects} == {"student", "student-b"} and all(e.success_not_shown.n for e in effects)
    fig = strategy_chart(report, situations={s.id: s.situation for s in run.library.strategies})
    left, right = fig.axes
    points = {c.get_label(): c for c in left.containers if isinstance(c, ErrorbarContainer)}
    effect_bars = {c.get_label(): c for c in right.containers if isinstance(c, BarContainer)}
    for e in effects:
        row = f"{e.strategy_id} ({e.student})"
        for which, est in (("shown", e.success_shown), ("not shown", e.success_not_shown)):
            point = points[f"{row}: {which}"]
            (whisker,) = point.lines[2]
            (low, _), (high, _) = whisker.get_segments()[0]
            (x,) = np.asarray(point.lines[0].get_xdata())
            assert (x, low, high) == pytest.approx((est.mean, est.low, est.high))
        (bar,) = effect_bars[f"{row}: effect"].patches
        assert bar.get_width() == pytest.approx(e.success_effect.mean)
        assert bar.get_facecolor()[:3] == pytest.approx(to_rgba(GREEN)[:3])  # CI clear of 0, above it
    labels = [t.get_text() for t in left.get_yticklabels()]
    assert all("When the customer asks what happens next" in t for t in labels) and len(labels) == len(effects)
    md = write_report(run).markdown.read_text()
    for e in effects:
        assert f"| {e.student} | {e.strategy_id} | {e.episodes} ({e.turns}) | 100% / 0% | {e.success_effect} |" in md


def test_model_text_in_the_report_stays_text(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    store = LibraryStore(copy / "library")
    sid = store.load().strategies[0].id
    store.edit(sid, by="ana", guidance="Say <script>alert(1)</script> & <b>bold</b> | pipes.")
    files = write_report(load_run(copy), tmp_path / "report")
    page, md = files.html.read_text(), files.markdown.read_text()
    assert "<script" not in page and "<b>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The Markdown reads as written (no HTML entities), and a Markdown renderer shows it as text, not markup.
    assert "\\<script>alert(1)\\</script> & \\<b>bold\\</b> | pipes." in md and "&lt;" not in md
    rendered = MarkdownIt("commonmark").render(md)
    assert "<script" not in rendered and "<b>" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt; | pipes." in rendered


def test_report_markdown_holds_no_html_entities(run_dir: Path, tmp_path: Path) -> None:
    md = write_report(load_run(run_dir), tmp_path / "report").markdown.read_text()
    assert " -> " in md  # the evidence line: "x without -> y with"
    assert not re.search(r"&(lt|gt|amp|quot|#\d+);", md), re.findall(r".{20}&\w+;.{20}", md)[:3]


def _with_scripted(run_dir: Path, to: Path, scripted: set[str]) -> Path:
    """A copy of the run whose record says only the models in `scripted` were scripts."""
    shutil.copytree(run_dir, to)
    record = json.loads((to / "resolved.json").read_text())
    for run in (r for r in record.values() if r is not None):
        for name, model in run["models"].items():
            model["identity"]["scripted"] = name in scripted
        run["scripted"] = any(m["identity"]["scripted"] for m in run["models"].values())
    (to / "resolved.json").write_text(json.dumps(record))
    return to


def test_a_run_of_scripted_models_says_so_first_in_the_report_and_on_the_page(run_dir: Path, tmp_path: Path) -> None:
    run = load_run(run_dir)  # every model of the story is a script
    md = write_report(run, tmp_path / "report").markdown.read_text()
    assert md.startswith(f"# Experiment report: viz-story (dry run)\n\n> {DRY_RUN}\n")
    assert embedded(render_page(run))["run"]["dry_run"] == DRY_RUN
    record = json.loads((run_dir / "resolved.json").read_text())
    assert f"evaluate `{record['evaluate']['fingerprint'][:16]}`" in md

    real = load_run(_with_scripted(run_dir, tmp_path / "real", set()))
    md = write_report(real, tmp_path / "real-report").markdown.read_text()
    assert "DRY RUN" not in md and "SCRIPTED" not in md and "(dry run)" not in md
    assert embedded(render_page(real))["run"]["dry_run"] is None

    partly = load_run(_with_scripted(run_dir, tmp_path / "partly", {"judge"}))
    assert partly.banner is not None and partly.banner.startswith("PARTLY SCRIPTED: judge answered from scripts")


def test_an_empty_tree_still_gets_a_page_and_a_picture(tmp_path: Path) -> None:
    ScenarioTree().save(tmp_path / "tree.json")
    run = load_run(tmp_path)
    assert len(embedded(render_page(run))["view"]) == 0
    with Image.open(write_tree_png(run, tmp_path / "tree.png")) as im:
        assert im.format == "PNG"
    assert "0 nodes" in write_report(run).markdown.read_text()


def test_report_costs_follow_the_tree_ledgers_results_and_prices(run_dir: Path) -> None:
    run = load_run(run_dir)
    costs = role_costs(run)
    train = sum(c.tokens for c in costs if c.phase == "train")
    assert train == sum(u.total_tokens for n in run.tree.nodes() for u in n.usage.values())
    assert run.evaluation is not None
    rows = [r for s in run.evaluation.students for r in s.rows] + [run.evaluation.teacher]
    assert sum(c.tokens for c in costs if c.phase == "evaluate") == sum(
        u.total_tokens for r in rows if r is not None for u in r.usage.values()
    )
    (coach,) = [c for c in costs if c.phase == "train" and c.role == "teacher"]
    assert coach.cost == pytest.approx(
        (coach.usage.prompt_tokens * 0.005 + coach.usage.completion_tokens * 0.015) / 1000
    )
    assert {c.model for c in costs if c.role == "agent" and c.phase == "train"} == {"student", "teacher"}


def test_a_run_without_evaluation_gets_a_report_that_says_so(tmp_path: Path) -> None:
    run = load_run(scripted_run(tmp_path / "run", evaluate=False))
    assert run.evaluation is None
    files = write_report(run)
    assert files.html.parent == tmp_path / "run" / "report"
    md = files.markdown.read_text()
    assert NO_EVALUATION.format(root=run.root) in md and "## Scenario tree" in md
    assert not (tmp_path / "run" / "report" / "satisfaction.png").exists()
    assert len(embedded(render_page(run))["view"]) == len(run.tree)


# ---------- commands ----------


def cli() -> typer.Typer:
    """The app as cli.py registers the commands."""
    app = typer.Typer()
    app.add_typer(tree_app, name="tree")
    app.command("report")(report)
    return app


def test_tree_show_png_and_report_commands(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr("coachlab.cli.viz.open_in_browser", lambda path: opened.append(str(path)) or True)
    runner = CliRunner()
    page = tmp_path / "page" / "tree.html"
    shown = runner.invoke(cli(), ["tree", "show", str(run_dir), "--out", str(page), "--no-open"])
    assert shown.exit_code == 0, shown.output
    assert page.exists() and "8 nodes" in shown.output and page.resolve().as_uri() in shown.output.replace("\n", "")
    assert opened == []  # --no-open never opens
    assert runner.invoke(cli(), ["tree", "show", str(run_dir), "--out", str(page)]).exit_code == 0
    assert opened == [str(page)]
    png = runner.invoke(cli(), ["tree", "png", str(run_dir), "--out", str(tmp_path / "t.png")])
    assert png.exit_code == 0 and (tmp_path / "t.png").exists()
    made = runner.invoke(cli(), ["report", str(run_dir), "--out", str(tmp_path / "rep")])
    assert made.exit_code == 0 and (tmp_path / "rep" / "report.md").exists()
    missing = runner.invoke(cli(), ["tree", "png", str(tmp_path / "nowhere")])
    assert isinstance(missing.exception, UsageError) and str(tmp_path / "nowhere") in str(missing.exception)


def test_no_browser_is_opened_on_ci_or_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    class Gui(webbrowser.BaseBrowser):
        def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
            return True

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr(webbrowser, "get", lambda using=None: Gui())
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    assert can_open_browser()
    monkeypatch.setenv("CI", "true")
    assert not can_open_browser()
    monkeypatch.delenv("CI")
    monkeypatch.delenv("DISPLAY")
    assert not can_open_browser()
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(webbrowser, "get", lambda using=None: webbrowser.GenericBrowser("lynx"))
    assert not can_open_browser()  # a console browser would take over the terminal
