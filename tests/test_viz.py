"""The tree page, the tree picture and the report, from a scripted train + evaluate run.

What a user would notice: the page shows the saved tree (not a re-derived one) and its numbers,
text from models and personas stays text, the review commands it offers really work, the picture
and the report exist and agree with results.json, a run without evaluation still gets a report,
and a wrong folder gets a one-line error naming it.
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

import networkx as nx
import pytest
import typer
from markdown_it import MarkdownIt
from PIL import Image
from typer.testing import CliRunner

from coachlab.cli import app as coachlab_app
from coachlab.cli.viz import can_open_browser, report, tree_app
from coachlab.errors import UsageError
from coachlab.explorer.tree import ScenarioTree
from coachlab.library import LibraryStore
from coachlab.schema import AuditStatus
from coachlab.viz import load_run, page_data, render_page, role_costs, script_json, write_report, write_tree_png
from coachlab.viz.layout import NO_SCORE_COLOR, satisfaction_color, tidy_layout
from coachlab.viz.run import DRY_RUN, NO_EVALUATION
from viz_run import HELPFUL, INJECTION, MUTATION_INJECTION, big_run, scripted_run

DATA_BLOCK = re.compile(r'<script type="application/json" id="coachlab-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained and evaluated scripted run (read-only: copy it before changing it)."""
    return scripted_run(tmp_path_factory.mktemp("viz") / "run")


def embedded(page: str) -> dict[str, object]:
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
    assert root["color"] == satisfaction_color(record["student_mean"])
    assert root["teacher_color"] == satisfaction_color(record["teacher_mean"])
    assert root["trials"] == 2 and root["admitted"] == 1 and root["parent"] is None
    library = LibraryStore(run_dir / "library").load()
    assert set(data["strategies"]) == {s.id for s in library.strategies}  # type: ignore[arg-type]
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
    lines = [line["text"] for ep in data["episodes"].values() for line in ep["lines"]]  # type: ignore[union-attr]
    assert any(INJECTION in text for text in lines)  # round-trips exactly, as text
    assert any(e["mutation"] == MUTATION_INJECTION for e in data["tree"]["edges"])  # type: ignore[index]


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
    assert len(data["view"]) == 500 and len(data["episodes"]) > 500  # type: ignore[arg-type]
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
        "tree.png",
        "growth.png",
        "satisfaction.png",
        "transfer.png",
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
    assert md.count("![") == 5 and page.count('src="data:image/png;base64,') == 5
    assert "<script" not in page and "No evaluation yet" not in md


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
    assert embedded(render_page(run))["run"]["dry_run"] == DRY_RUN  # type: ignore[index]
    record = json.loads((run_dir / "resolved.json").read_text())
    assert f"evaluate `{record['evaluate']['fingerprint'][:16]}`" in md

    real = load_run(_with_scripted(run_dir, tmp_path / "real", set()))
    md = write_report(real, tmp_path / "real-report").markdown.read_text()
    assert "DRY RUN" not in md and "SCRIPTED" not in md and "(dry run)" not in md
    assert embedded(render_page(real))["run"]["dry_run"] is None  # type: ignore[index]

    partly = load_run(_with_scripted(run_dir, tmp_path / "partly", {"judge"}))
    assert partly.banner is not None and partly.banner.startswith("PARTLY SCRIPTED: judge answered from scripts")


def test_an_empty_tree_still_gets_a_page_and_a_picture(tmp_path: Path) -> None:
    ScenarioTree().save(tmp_path / "tree.json")
    run = load_run(tmp_path)
    assert len(embedded(render_page(run))["view"]) == 0  # type: ignore[arg-type]
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
    assert len(embedded(render_page(run))["view"]) == len(run.tree)  # type: ignore[arg-type]


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
