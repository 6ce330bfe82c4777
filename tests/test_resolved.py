"""resolved.json: what a run folder's numbers came from, the fingerprint, and the resume guard.

The guard tests start from one finished dry-run `train` of a copy of the quickstart (personas,
scenarios and experiment copied into a temporary folder), then resume it with one edit each, as a
user would: edits that change results are refused with (file, field, old, new); operational ones go on.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coachlab.cli import app
from coachlab.errors import CoachlabError
from coachlab.experiments.config import load_experiment
from coachlab.experiments.guard import compare_runs
from coachlab.experiments.resolved import RunRecord, fingerprint_payload, load_record, resolve_run
from coachlab.experiments.simulate import build_backends
from coachlab.llm import ModelEntry
from coachlab.testing import dry_run_clients
from coachlab.testing.openai_stub import STUB_MODEL_INFO

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["customer", "judge", "student", "teacher"]


@dataclass(frozen=True)
class Ran:
    """A command as `coachlab` ends it: exit 2 with the message for a coachlab error (what `main` prints)."""

    code: int
    output: str


def coachlab(*args: str) -> Ran:
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, CoachlabError):
        return Ran(2, str(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return Ran(result.exit_code, result.output)


def copy_project(to: Path) -> Path:
    """The quickstart with its own personas and scenarios, so a test can edit any of them; returns the experiment."""
    for folder in ("personas", "scenarios", "experiments"):
        shutil.copytree(ROOT / folder, to / folder)
    return to / "experiments" / "quickstart.yaml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# -- the record ---------------------------------------------------------------------------------------------


def test_resolved_config_round_trips_and_is_byte_identical_for_the_same_inputs() -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    backends = build_backends(exp, NAMES, clients=dry_run_clients(NAMES))
    first = resolve_run(exp, backends, command="train")
    again = resolve_run(load_experiment(ROOT / "experiments" / "quickstart.yaml"), backends, command="train")
    text = RunRecord(train=first).to_json()
    assert text == RunRecord(train=again).to_json()  # the same inputs, the same bytes
    parsed = RunRecord.model_validate_json(text)
    assert parsed == RunRecord(train=first) and parsed.to_json() == text  # a round trip changes nothing

    data = json.loads(text)["train"]
    assert data["experiment"]["train"]["success_rate"] == 1.0 and data["experiment"]["train"]["threshold"] == 7.0
    assert data["experiment"]["train"]["scenarios"] == ["bm-retail-stalled-parcel", "bm-banking-card-blocked"]
    assert data["experiment"]["environment"]["max_turns"] == 4  # defaults and file values alike
    assert data["scenarios"]["bm-banking-card-blocked"]["persona"]["id"] == "bakery-owner-grace"  # persona inlined
    assert set(data["personas"]) >= {"furious-frank", "anxious-anna"} and len(data["scenarios"]) == 37
    student = data["models"]["student"]["identity"]
    assert student["model"] == "qwen2.5-coder-1.5b" and student["scripted"] is True
    assert student["settings"]["max_tokens"] == 96 and student["settings"]["top_p"] == 0.95  # a provider default
    assert "n_threads" not in student["settings"]  # a transport setting, not an answer's
    assert data["scripted"] is True and data["retrieval"]["kind"] in ("embedding", "lexical")
    assert data["versions"]["coachlab"] and data["versions"]["autogen-agentchat"] and data["platform"]
    assert re.fullmatch(r"[0-9a-f]{64}", data["fingerprint"])
    assert data["files"]["persona:bakery-owner-grace"].endswith("personas/bakery-owner-grace.yaml")


def test_identities_expand_the_endpoint_and_keep_keys_and_credentials_out(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-resolved-test-0123456789abcdef"
    monkeypatch.setenv("COACHLAB_TEST_KEY", key)
    monkeypatch.setenv("COACHLAB_TEST_SERVER", "http://ana:hunter2pass@127.0.0.1:9/v1?api-key=zzz-secret&x=1")
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    entry = ModelEntry(
        provider="openai",
        config={
            "model": "local",
            "base_url": "${COACHLAB_TEST_SERVER}",
            "api_key": "${COACHLAB_TEST_KEY}",
            "top_p": 0.5,
            "model_info": dict(STUB_MODEL_INFO),
        },
    )
    models = dict(exp.config.models) | {"student": entry}
    exp.config = exp.config.model_copy(update={"models": models})
    backends = build_backends(exp, ["customer", "judge", "student"], clients=dry_run_clients(["customer", "judge"]))
    run = resolve_run(exp, backends, command="simulate")
    identity = run.models["student"].identity
    assert identity.base_url == "http://127.0.0.1:9/v1?x=1" and identity.settings["top_p"] == 0.5
    assert identity.scripted is False and identity.client is None
    text = RunRecord(simulate=run).to_json()
    for secret in (key, "hunter2pass", "zzz-secret"):
        assert secret not in text
    assert "${COACHLAB_TEST_KEY}" in text  # the experiment keeps the reference


def test_the_fingerprint_ignores_operational_settings_and_follows_everything_else() -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    backends = build_backends(exp, NAMES, clients=dry_run_clients(NAMES))
    base = resolve_run(exp, backends, command="train")
    cfg = exp.config
    assert cfg.train is not None
    busy = cfg.model_copy(
        update={
            "simulate": cfg.simulate.model_copy(update={"concurrency": 64}),
            "train": cfg.train.model_copy(update={"concurrency": 16}),
            "description": "other words",
        }
    )
    exp.config = busy
    assert resolve_run(exp, backends, command="train").fingerprint == base.fingerprint
    assert compare_runs(base, resolve_run(exp, backends, command="train")) == []
    exp.config = cfg.model_copy(update={"train": cfg.train.model_copy(update={"trials": 5})})
    changed = resolve_run(exp, backends, command="train")
    assert changed.fingerprint != base.fingerprint
    assert [(d.field, d.old, d.new) for d in compare_runs(base, changed)] == [("train.trials", "2", "5")]
    assert "train" not in fingerprint_payload(resolve_run(exp, backends, command="simulate"))["experiment"]


def test_labelling_scenarios_with_a_situation_lets_a_run_in_progress_resume() -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    backends = build_backends(exp, NAMES, clients=dry_run_clients(NAMES))
    base = resolve_run(exp, backends, command="train")
    # a record written before scenarios had the field: no `situation` key at all
    old = base.model_copy(
        update={"scenarios": {k: {f: v for f, v in s.items() if f != "situation"} for k, s in base.scenarios.items()}}
    )
    exp.scenarios = {k: s.model_copy(update={"situation": "late-parcel"}) for k, s in exp.scenarios.items()}
    labelled = resolve_run(exp, backends, command="train")
    assert labelled.scenarios["bm-retail-stalled-parcel"]["situation"] == "late-parcel"  # recorded, not fingerprinted
    assert labelled.fingerprint == base.fingerprint == old.with_fingerprint().fingerprint
    assert compare_runs(old, labelled) == []


# -- the resume guard, as a user meets it ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy with a finished dry-run train in run/."""
    base = tmp_path_factory.mktemp("trained")
    experiment = copy_project(base)
    done = coachlab("train", str(experiment), "--dry-run", "--out", str(base / "run"))
    assert done.code == 0, done.output
    return base


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained project for one test to edit."""
    shutil.copytree(trained, tmp_path / "p")
    return tmp_path / "p"


REFUSED: dict[str, tuple[Callable[[Path], None], str]] = {
    "the success rate": (
        lambda p: edit(p / "experiments/quickstart.yaml", "success_rate: 1.0 ", "success_rate: 0.5 "),
        "experiments/quickstart.yaml: train.success_rate: 1.0 -> 0.5",
    ),
    "the judge's votes": (
        lambda p: edit(p / "experiments/quickstart.yaml", "judge: {votes: 1,", "judge: {votes: 3,"),
        "experiments/quickstart.yaml: judge.votes: 1 -> 3",
    ),
    "a new root": (
        lambda p: edit(
            p / "experiments/quickstart.yaml",
            "scenarios: [bm-retail-stalled-parcel, bm-banking-card-blocked]",
            "scenarios: [bm-retail-stalled-parcel, bm-banking-card-blocked, banking-card-declined]",
        ),
        'experiments/quickstart.yaml: train.scenarios[2]: (absent) -> "banking-card-declined"',
    ),
    "the student's temperature": (
        lambda p: edit(
            p / "experiments/quickstart.yaml",
            "qwen2.5-coder-1.5b, temperature: 0.7, max_tokens: 96",
            "qwen2.5-coder-1.5b, temperature: 0.3, max_tokens: 96",
        ),
        "experiments/quickstart.yaml: models.student.config.temperature: 0.7 -> 0.3",
    ),
    "max turns": (
        lambda p: edit(p / "experiments/quickstart.yaml", "max_turns: 4", "max_turns: 6"),
        "experiments/quickstart.yaml: environment.max_turns: 4 -> 6",
    ),
    "retrieval k": (
        lambda p: edit(
            p / "experiments/quickstart.yaml", "retrieval: {kind: auto, k: 3}", "retrieval: {kind: auto, k: 1}"
        ),
        "experiments/quickstart.yaml: retrieval.k: 3 -> 1",
    ),
    "a policy line of a training scenario": (
        lambda p: edit(
            p / "scenarios/benchmark/train.yaml",
            "refund the shipping fee to the original payment method.",
            "refund the whole order.",
        ),
        "scenarios/benchmark/train.yaml: bm-retail-stalled-parcel.policy[2]: ",
    ),
    "a checklist item of a training scenario": (
        lambda p: edit(
            p / "scenarios/benchmark/train.yaml",
            "offers to reship the order by free express",
            "offers a reship by express",
        ),
        "scenarios/benchmark/train.yaml: bm-retail-stalled-parcel.success_criteria[0].text: ",
    ),
    "the persona of a training scenario": (
        lambda p: edit(p / "personas/bakery-owner-grace.yaml", "patience: low", "patience: very low"),
        'personas/bakery-owner-grace.yaml: bakery-owner-grace.patience: "low" -> "very low"',
    ),
}

ALLOWED: dict[str, Callable[[Path], None]] = {
    "concurrency": lambda p: edit(p / "experiments/quickstart.yaml", "concurrency: 1 ", "concurrency: 8 "),
    "a model's concurrency and retries": lambda p: edit(
        p / "experiments/quickstart.yaml",
        "config: {model: qwen2.5-coder-1.5b, temperature: 0.7, max_tokens: 96, n_threads: 2}",
        "config: {model: qwen2.5-coder-1.5b, temperature: 0.7, max_tokens: 96, n_threads: 2}\n"
        "    concurrency: 3\n    retry: {max_retries: 9}",
    ),
    "the description": lambda p: edit(p / "experiments/quickstart.yaml", "description: Embedded", "description: The"),
    "a scenario train does not use": lambda p: edit(
        p / "scenarios/travel.yaml", "policy:", "policy:\n      - Be kind."
    ),
    "a new persona file": lambda p: (p / "personas/zz.yaml").write_text(
        (p / "personas/terse-priya.yaml").read_text().replace("id: terse-priya", "id: zz")
    ),
}


@pytest.mark.parametrize("change", list(REFUSED), ids=list(REFUSED))
def test_resume_refuses_each_change_that_alters_results_naming_file_field_old_and_new(
    project: Path, change: str
) -> None:
    apply, expected = REFUSED[change]
    apply(project)
    before = (project / "run" / "resolved.json").read_text()
    copy_before = (project / "run" / "experiment.yaml").read_text()
    tree_before = (project / "run" / "tree.json").read_text()
    result = coachlab(
        "train", str(project / "experiments/quickstart.yaml"), "--dry-run", "--out", str(project / "run"), "--resume"
    )
    assert result.code == 2
    message = result.output
    assert "continuing it would mix results" in message and expected in message.replace(str(project) + "/", "")
    assert "--overwrite" in message
    # Nothing was touched: the record, the experiment's copy and the tree are as they were.
    assert (project / "run" / "resolved.json").read_text() == before
    assert (project / "run" / "experiment.yaml").read_text() == copy_before
    assert (project / "run" / "tree.json").read_text() == tree_before


@pytest.mark.parametrize("change", list(ALLOWED), ids=list(ALLOWED))
def test_resume_accepts_each_change_that_cannot_alter_results(project: Path, change: str) -> None:
    ALLOWED[change](project)
    fingerprint = load_record(project / "run")
    assert fingerprint is not None and fingerprint.train is not None
    result = coachlab(
        "train", str(project / "experiments/quickstart.yaml"), "--dry-run", "--out", str(project / "run"), "--resume"
    )
    assert result.code == 0, result.output
    after = load_record(project / "run")
    assert after is not None and after.train is not None
    assert after.train.fingerprint == fingerprint.train.fingerprint


def test_evaluate_refuses_a_library_trained_under_another_train_section(project: Path) -> None:
    edit(project / "experiments/quickstart.yaml", "max_nodes: 3", "max_nodes: 9")
    result = coachlab(
        "evaluate", str(project / "experiments/quickstart.yaml"), "--dry-run", "--out", str(project / "run")
    )
    assert result.code == 2
    assert "holds a library trained under another train: section" in result.output
    assert "train.max_nodes: 3 -> 9" in result.output
    assert not (project / "run" / "evaluation" / "results.json").exists()


def test_evaluate_resume_refuses_changed_trials_and_results_carry_the_fingerprint(project: Path) -> None:
    experiment = str(project / "experiments/quickstart.yaml")
    first = coachlab("evaluate", experiment, "--dry-run", "--out", str(project / "run"))
    assert first.code == 0, first.output
    record = load_record(project / "run")
    assert record is not None and record.evaluate is not None and record.train is not None
    results = json.loads((project / "run" / "evaluation" / "results.json").read_text())
    assert results["fingerprint"] == record.evaluate.fingerprint != record.train.fingerprint
    path = project / "experiments/quickstart.yaml"
    head, tail = path.read_text().rsplit("  trials: 2\n", 1)  # the last trials: is evaluate's
    path.write_text(f"{head}  trials: 3\n{tail}")
    again = coachlab("evaluate", experiment, "--dry-run", "--out", str(project / "run"), "--resume")
    assert again.code == 2 and "evaluate.trials: 2 -> 3" in again.output


def test_a_real_run_does_not_resume_a_dry_run(project: Path) -> None:
    """The folder of a dry run, resumed without --dry-run: the scripted models are a difference that is refused."""
    result = coachlab("train", str(project / "experiments/quickstart.yaml"), "--out", str(project / "run"), "--resume")
    assert result.code == 2
    assert "models.student.scripted (--dry-run): true -> false" in result.output


# -- dry runs are never mistaken for real ones --------------------------------------------------------------


def test_a_dry_run_goes_to_its_own_folder_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = coachlab("train", str(experiment), "--dry-run")
    assert result.code == 0, result.output
    assert "DRY RUN" in result.output
    assert (tmp_path / "runs" / "quickstart-dry-run" / "tree.json").exists() and not (
        tmp_path / "runs" / "quickstart"
    ).exists()
    record = load_record(tmp_path / "runs" / "quickstart-dry-run")
    assert record is not None and record.scripted


def test_a_checklist_the_teacher_wrote_is_part_of_the_record_and_editing_it_is_refused(tmp_path: Path) -> None:
    experiment = copy_project(tmp_path)
    scenarios = tmp_path / "scenarios" / "benchmark" / "train.yaml"
    data = yaml.safe_load(scenarios.read_text())
    (late,) = [s for s in data["scenarios"] if s["id"] == "bm-retail-stalled-parcel"]
    del late["success_criteria"]  # the teacher writes it, into the run folder
    scenarios.write_text(yaml.safe_dump(data, sort_keys=False))
    run = tmp_path / "run"
    assert coachlab("train", str(experiment), "--dry-run", "--out", str(run)).code == 0
    written = run / "criteria" / "bm-retail-stalled-parcel.yaml"
    record = load_record(run)
    assert record is not None and record.train is not None
    assert record.train.scenarios["bm-retail-stalled-parcel"]["success_criteria"]  # the record holds it as run
    assert record.train.files["criteria:bm-retail-stalled-parcel"] == str(written)

    text = written.read_text()
    first = re.search(r"text: (.+)", text)
    assert first is not None
    written.write_text(text.replace(first.group(0), "text: greets the customer by name", 1))
    refused = coachlab("train", str(experiment), "--dry-run", "--out", str(run), "--resume")
    assert refused.code == 2
    assert f"{written}: success_criteria[0].text: {json.dumps(first.group(1).strip())}" in refused.output
