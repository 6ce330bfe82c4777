"""The results table printed at the end of `simulate`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from coachlab.experiments.results import RunSummary

__all__ = ["print_summary"]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def print_summary(summary: RunSummary, console: Console) -> None:
    """Print the per-scenario table, the overall means, role adherence and token usage."""
    table = Table(
        title="Results per scenario (task success: all must items met, no policy broken; satisfaction: mean "
        "[95% bootstrap CI])",
        show_lines=False,
    )
    for col in (
        "scenario",
        "agent",
        "n",
        "task success",
        "satisfaction",
        "resolved",
        "policy",
        f"pass^k (>={summary.threshold})",
        "turns",
        "tokens",
        "endings",
    ):
        table.add_column(col, overflow="fold")
    for g in summary.groups:
        endings = ", ".join(f"{k.replace('customer_', '')} {v}" for k, v in sorted(g.terminations.items()))
        table.add_row(
            g.scenario_id,
            g.agent_model if g.condition == "baseline" else f"{g.agent_model}/{g.condition}",
            f"{g.judged}/{g.episodes}",
            _pct(g.task_success),
            str(g.satisfaction),
            _pct(g.resolved_rate),
            _pct(g.policy_rate),
            "n/a" if g.pass_k is None else ("yes" if g.pass_k else "no"),
            f"{g.mean_turns:.1f}",
            f"{g.tokens:,}",
            endings,
        )
    console.print(table)
    for key, est in summary.overall.items():
        success = summary.task_success.get(key)
        ts = f"task success {_pct(success)}, " if success is not None else ""
        console.print(f"[bold]Overall {key}[/bold]: {ts}satisfaction {est} over {est.n} scored episodes")
    a = summary.adherence
    console.print(
        f"Customer role adherence: {_pct(a.first_try_in_role)} of {a.customer_turns} customer turns in role at the "
        f"first try, {_pct(a.final_in_role)} after re-asks; judge says in role in {_pct(a.judge_in_role)} "
        f"of {a.judged_episodes} episodes."
    )
    usage = ", ".join(
        f"{role} {u.calls} calls ({u.cached_calls} cached) {u.prompt_tokens:,}+{u.completion_tokens:,} tok"
        + (f" ({u.prompt_processed:,} prompt processed)" if u.prompt_processed is not None else "")
        for role, u in sorted(summary.usage.items())
    )
    console.print(f"Usage (prompt+completion tokens sent): {usage}")
    problems: list[str] = []
    if summary.infrastructure_errors:
        problems.append(f"{summary.infrastructure_errors} infrastructure errors (re-run with --resume --retry-failed)")
    if summary.judge_errors:
        problems.append(f"{summary.judge_errors} judge errors (unreadable verdicts: not scored, not re-run)")
    if summary.simulator_faults:
        problems.append(
            f"{summary.simulator_faults} simulator faults (the simulated customer spoiled them: counted, never scored)"
        )
    if problems:
        console.print("[yellow]" + "; ".join(problems) + "[/yellow]")
