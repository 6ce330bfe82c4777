"""Episodes per hour on the quickstart's real path, and where the model time goes, per role.

Runs a fixed set of episodes through `Simulation`, the path `coachlab simulate` takes (customer,
service agent, the judge with its checklist and similarity gate), with coachlab's response cache
off. The set comes from `--episodes-from` (default experiments/quickstart.yaml): the scenarios of
its `simulate:` and `train:` sections in turn, the student as the service agent and the teacher in
every `--teacher-every`-th episode (as in `coachlab distill`, which rolls out the teacher too),
fixed seeds, and its environment and judge settings. The models come from `--experiment` (default:
the same file), so the same episodes can run on the embedded models and on a server:

    python benchmarks/throughput.py --episodes 8
    python benchmarks/throughput.py --experiment experiments/quickstart.yaml \\
        --experiment experiments/local-server.yaml          # side by side, each in its own process

It prints episodes per hour (model loading excluded, printed apart), peak RSS of the process and
its PSS at the end (a server's own memory is in neither; RSS counts weights that two roles map from
one file twice, PSS once), and per role (customer, student, teacher, judge): calls, prompt
tokens sent, prompt tokens processed (what the engine could not take from its prompt cache: the
KV prefix llama.cpp kept, a server's prompt cache), tokens generated and seconds in the model.
Each run is saved as DIR/<experiment>/throughput.json, with its episodes and transcripts.

Episodes run in the order `Simulation` picks for the models: on embedded models each scenario's
episodes back to back, so the roles' KV caches keep what consecutive episodes share (`--order`
overrides it). To see that, give each scenario several trials: `--scenarios a,b --episodes 4`.
Prompt tokens processed are counts, not timings: compare them across runs on a busy machine too.

Before and after a change: the script needs nothing newer than `Simulation`, `build_backends` and
`load_experiment`, so it runs from an older commit's worktree as it is; figures that coachlab did not
record yet (prompt processed, seconds) print as n/a. Then print both runs side by side:

    git worktree add ../before <commit>
    (cd ../before && PYTHONPATH=src python $OLDPWD/benchmarks/throughput.py --out $OLDPWD/runs/tp-before)
    PYTHONPATH=src python benchmarks/throughput.py --out runs/tp-after
    python benchmarks/throughput.py --compare runs/tp-before/quickstart runs/tp-after/quickstart
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROLES = ("customer", "student", "teacher", "judge")
RESULT = "throughput.json"


# -- running one experiment ---------------------------------------------------------------------


def fixed_plans(
    exp: Any, episodes: int, *, teacher_every: int, seed: int, scenarios: Sequence[str] | None = None
) -> list[Any]:
    """The first `episodes` plans of the fixed set (see the module docstring), over `scenarios` when given."""
    from coachlab.experiments.simulate import EpisodePlan, episode_seed

    cfg = exp.config
    ids: list[str] = list(dict.fromkeys([*(cfg.simulate.scenarios or []), *(cfg.train.scenarios if cfg.train else [])]))
    if scenarios:
        unknown = [s for s in scenarios if s not in exp.scenarios]
        if unknown:
            raise SystemExit(f"unknown scenario {unknown[0]!r}; known: {', '.join(exp.scenarios)}")
        ids = list(scenarios)
    if not ids:
        ids = sorted(exp.scenarios)
    student = cfg.train.student if cfg.train else cfg.simulate.agents[0]
    teacher = cfg.train.teacher if cfg.train else "teacher"
    plans: list[Any] = []
    trial = 0
    while len(plans) < episodes:
        for sid in ids:
            agent = teacher if teacher_every and len(plans) % teacher_every == teacher_every - 1 else student
            plans.append(
                EpisodePlan(
                    exp.scenarios[sid], agent, "baseline", trial, episode_seed(seed, sid, "baseline", agent, trial)
                )
            )
            if len(plans) == episodes:
                break
        trial += 1
    return plans


def commit_of(package_file: str) -> str | None:
    """The git commit (and a '+' when dirty) of the tree the coachlab package was imported from."""
    folder = Path(package_file).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder, capture_output=True, text=True
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def pss_mb() -> int | None:
    """The process's proportional set size now (Linux), in MB: shared pages counted once."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    kb = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), None)
    return None if kb is None else round(kb / 1024)


def role_totals(episodes: Iterable[Any]) -> dict[str, dict[str, float | int | None]]:
    """Per role: calls, prompt sent / processed, generated, seconds (None where not recorded)."""
    totals: dict[str, dict[str, float | int | None]] = {}
    for ep in episodes:
        for role, usage in ep.usage.items():
            name = ep.agent_model if role == "agent" else ("judge" if role.startswith("judge") else role)
            row = totals.setdefault(
                name, {"calls": 0, "prompt_sent": 0, "prompt_processed": 0, "generated": 0, "seconds": 0.0}
            )
            row["calls"] = int(row["calls"] or 0) + usage.calls
            row["prompt_sent"] = int(row["prompt_sent"] or 0) + usage.prompt_tokens
            row["generated"] = int(row["generated"] or 0) + usage.completion_tokens
            for field, attribute in (("prompt_processed", "prompt_processed"), ("seconds", "model_seconds")):
                value = getattr(usage, attribute, None)  # absent before coachlab recorded it
                if usage.calls and value is None:
                    row[field] = None
                elif row[field] is not None and value is not None:
                    row[field] = row[field] + value  # type: ignore[operator]
    return totals


async def run_one(args: argparse.Namespace, models: Path, out: Path) -> dict[str, Any]:
    """Run the fixed episodes with `models`' model entries; returns the result (also saved in `out`)."""
    import coachlab
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.simulate import Simulation, build_backends
    from coachlab.llm import close_backends

    episodes_exp = load_experiment(args.episodes_from)
    models_exp = episodes_exp if models == args.episodes_from else load_experiment(models)
    plans = fixed_plans(
        episodes_exp, args.episodes, teacher_every=args.teacher_every, seed=args.seed, scenarios=args.scenarios
    )
    names = list(dict.fromkeys(["customer", "judge", *(p.agent_model for p in plans)]))
    missing = [n for n in names if n not in models_exp.config.models]
    if missing:
        hint = " (or pass --teacher-every 0)" if missing == ["teacher"] else ""
        raise SystemExit(f"{models} has no model entry {', '.join(missing)}: add it{hint}.")
    shutil.rmtree(out, ignore_errors=True)
    backends = build_backends(models_exp, names)
    in_process = any(getattr(b, "in_process", False) for b in backends.values())  # older coachlab: no such field
    concurrency = args.concurrency or models_exp.config.simulate.concurrency or (1 if in_process else 4)
    started = time.perf_counter()
    clients = [backend.client for backend in backends.values()]
    if "judge" in backends and hasattr(backends["judge"], "client_for"):  # the checklist grader's context
        from coachlab.environments import CHECKLIST_CONTEXT

        clients.append(backends["judge"].client_for(CHECKLIST_CONTEXT))
    for client in clients:  # open the models now: a fresh run pays this once, not per episode
        load = getattr(client, "load", None)
        if load is not None:
            await load()
    gate = episodes_exp.judge_gate() if hasattr(episodes_exp, "judge_gate") else None
    if gate is not None:
        await gate.similarities([("warm up", "the embedding model")])
    load_s = time.perf_counter() - started
    if args.order == "auto":
        sim = Simulation(episodes_exp, backends, out_dir=out, use_cache=False)
    else:
        if "order" not in inspect.signature(Simulation).parameters:
            raise SystemExit("this coachlab runs episodes as planned: leave --order out")
        sim = Simulation(episodes_exp, backends, out_dir=out, use_cache=False, order=args.order)
    order = getattr(sim, "order", "as planned")  # a coachlab before episode orders ran them as planned (interleaved)
    print(
        f"{models}: {len(plans)} episodes, concurrency {concurrency}, order {order}; "
        f"coachlab from {Path(coachlab.__file__).parent}"
    )
    started = time.perf_counter()
    try:
        finished = await sim.run(plans, concurrency=concurrency)
        pss = pss_mb()  # while the models are still open
    finally:
        wall = time.perf_counter() - started
        sim.close()
        await close_backends(backends.values())
    result: dict[str, Any] = {
        "label": out.name,
        "experiment": str(models),
        "episodes_from": str(args.episodes_from),
        "coachlab": str(Path(coachlab.__file__).parent),
        "commit": commit_of(coachlab.__file__),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "episodes": len(finished),
        "concurrency": concurrency,
        "order": order,
        "load_s": round(load_s, 1),
        "wall_s": round(wall, 1),
        "episodes_per_hour": round(len(finished) / wall * 3600, 2) if wall > 0 else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pss_mb": pss,
        "terminations": dict(Counter(e.termination.value for e in finished)),
        "roles": role_totals(finished),
    }
    (out / RESULT).write_text(json.dumps(result, indent=2))
    return result


# -- printing -----------------------------------------------------------------------------------


def _int(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


def _share(part: Any, whole: Any) -> str:
    if part is None or not whole:
        return _int(part)
    return f"{part:,} ({100 * part / whole:.0f}%)"


def table(results: Sequence[dict[str, Any]]) -> str:
    """The runs side by side: one column per run, the first run's episodes per hour as the reference."""
    rows: list[tuple[str, list[str]]] = [
        ("models from", [Path(r["experiment"]).name for r in results]),
        ("coachlab", [f"{r['commit'] or '?'} {r['coachlab']}" for r in results]),
        ("episodes (concurrency)", [f"{r['episodes']} ({r['concurrency']})" for r in results]),
        ("episode order", [r.get("order", "as planned") for r in results]),
        ("model loading, s", [f"{r['load_s']:.1f}" for r in results]),
        ("wall, s", [f"{r['wall_s']:.1f}" for r in results]),
    ]
    base = results[0]["episodes_per_hour"]
    rows.append(
        (
            "episodes per hour",
            [
                f"{r['episodes_per_hour']:.1f}"
                + (f" ({r['episodes_per_hour'] / base:.2f}x)" if i and base and r["episodes_per_hour"] else "")
                for i, r in enumerate(results)
            ],
        )
    )
    rows.append(("peak RSS, MB", [f"{r['peak_rss_mb']:,}" for r in results]))
    rows.append(("PSS at the end, MB", [_int(r.get("pss_mb")) for r in results]))
    rows.append(("endings", [", ".join(f"{k} {v}" for k, v in sorted(r["terminations"].items())) for r in results]))
    present = [role for role in ROLES if any(role in r["roles"] for r in results)]
    present += sorted({role for r in results for role in r["roles"]} - set(present))
    for role in present:
        got = [r["roles"].get(role) for r in results]
        rows.append((role, ["" for _ in results]))
        rows.append(("  calls", [_int(g["calls"]) if g else "-" for g in got]))
        rows.append(("  prompt tokens sent", [_int(g["prompt_sent"]) if g else "-" for g in got]))
        rows.append(
            ("  prompt tokens processed", [_share(g["prompt_processed"], g["prompt_sent"]) if g else "-" for g in got])
        )
        rows.append(("  tokens generated", [_int(g["generated"]) if g else "-" for g in got]))
        rows.append(
            (
                "  seconds in the model",
                ["-" if not g else "n/a" if g["seconds"] is None else f"{g['seconds']:.1f}" for g in got],
            )
        )
    width = max(len(label) for label, _ in rows) + 2
    columns = [max(len(cells[i]) for _, cells in rows) + 2 for i in range(len(results))]
    lines = [
        label.ljust(width) + "".join(c.ljust(w) for c, w in zip(cells, columns, strict=True)) for label, cells in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


# -- the command --------------------------------------------------------------------------------


def labels(experiments: Sequence[Path]) -> list[str]:
    """A folder name per experiment: its file name, numbered when two share one."""
    stems = [p.stem for p in experiments]
    return [s if stems.count(s) == 1 else f"{s}-{i + 1}" for i, s in enumerate(stems)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8, help="Episodes per run (default 8).")
    parser.add_argument(
        "--experiment",
        type=Path,
        action="append",
        help="Where the models come from; repeat to compare (default: --episodes-from).",
    )
    parser.add_argument(
        "--episodes-from",
        type=Path,
        default=Path("experiments/quickstart.yaml"),
        help="Scenarios, environment and judge settings (default experiments/quickstart.yaml).",
    )
    parser.add_argument(
        "--teacher-every", type=int, default=4, help="Every k-th episode has the teacher as the agent (0: never)."
    )
    parser.add_argument(
        "--concurrency", type=int, help="Episodes in flight (default: the models experiment's simulate.concurrency)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Base seed of the episodes.")
    parser.add_argument(
        "--scenarios",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        help="Comma-separated scenario ids to draw the episodes from (default: simulate's and train's).",
    )
    parser.add_argument(
        "--order",
        choices=["auto", "grouped", "interleaved"],
        default="auto",
        help="Episode order (default auto: what the backends call for; see coachlab.experiments.simulate).",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/throughput"), help="Folder for the runs (default runs/throughput)."
    )
    parser.add_argument(
        "--compare", type=Path, nargs="+", metavar="RUN", help="Print saved runs side by side; run nothing."
    )
    parser.add_argument("--label", help="The run's folder under --out (default: the experiment's file name).")
    args = parser.parse_args()
    if args.compare:
        results = [json.loads((p if p.name == RESULT else p / RESULT).read_text()) for p in args.compare]
        print(table(results))
        return
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    experiments: list[Path] = args.experiment or [args.episodes_from]
    folders = [args.out / label for label in labels(experiments)]
    if len(experiments) == 1:
        folder = args.out / args.label if args.label else folders[0]
        results = [asyncio.run(run_one(args, experiments[0], folder))]
    else:  # each in its own process: its own models, its own peak memory
        results: list[dict[str, Any]] = []
        for experiment, folder in zip(experiments, folders, strict=True):
            child = [sys.executable, __file__, "--experiment", str(experiment), "--out", str(args.out)]
            child += ["--label", folder.name]
            child += ["--episodes", str(args.episodes), "--episodes-from", str(args.episodes_from)]
            child += ["--teacher-every", str(args.teacher_every), "--seed", str(args.seed), "--order", args.order]
            child += ["--scenarios", ",".join(args.scenarios)] if args.scenarios else []
            child += ["--concurrency", str(args.concurrency)] if args.concurrency else []
            subprocess.run(child, check=True)
            results.append(json.loads((folder / RESULT).read_text()))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
