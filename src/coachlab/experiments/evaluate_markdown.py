"""The evaluation report as Markdown (evaluation/results.md), and the judge-calibration line printed beside it."""

from __future__ import annotations

from coachlab.experiments.effects import effects_markdown
from coachlab.experiments.evaluation_report import ConditionResult, EvaluationReport, StudentResult, role_entry
from coachlab.experiments.hit_rate import hit_rate_line
from coachlab.judging.calibration import CalibrationReport

__all__ = ["calibration_line", "contrasts_markdown", "share_line", "to_markdown"]


def _money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _errors_line(report: EvaluationReport) -> str:
    """How many episodes were not scored, and why (n counts scored / run episodes)."""
    if not report.infrastructure_errors and not report.judge_errors and not report.simulator_faults:
        return "Every episode was scored: no infrastructure errors, no judge errors, no simulator faults."
    return (
        f"Not scored: {report.infrastructure_errors} episode(s) ended on infrastructure errors (a backend failed "
        f"for good; re-run them with --resume --retry-failed), {report.judge_errors} the judge could not read, and "
        f"{report.simulator_faults} the simulated customer spoiled (out of role, its own loop, invented facts). "
        "None of them counts for or against the agent."
    )


def calibration_line(calibration: CalibrationReport | None) -> str:
    """One line on how far the judge is trusted, for the tables its verdicts fill."""
    if calibration is None:
        return "The judge has not been calibrated for this run: coachlab judge calibrate EXPERIMENT measures it."

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    return (
        f"Judge calibration ({calibration.judge}, {calibration.votes} vote(s)): checklist items right "
        f"{pct(calibration.item_accuracy)} of {calibration.items} (kappa "
        f"{'n/a' if calibration.item_kappa is None else f'{calibration.item_kappa:.2f}'}), good ranked above degraded "
        f"{pct(calibration.ordering_checklist)} by checklist vs {pct(calibration.ordering_satisfaction)} by "
        f"satisfaction score."
    )


def share_line(student: StudentResult, primary: str) -> str | None:
    """The library's share of the oracle ceiling for one student, or None when the run had no oracle arm."""
    if student.share_of_ceiling is None:
        return None
    measure = primary.replace("_", " ")
    line = (
        f"Share of the oracle ceiling the library reached for {student.student} ((library - baseline) / (oracle - "
        f"baseline), {measure}): {student.share_of_ceiling}"
    )
    if student.share_of_ceiling_items is not None:
        line += f"; on items met {student.share_of_ceiling_items}"
    if student.share_of_ceiling.mean is None:
        line += " (the oracle was no better than the baseline: no library could show an effect with this student)"
    return line + "."


def contrasts_markdown(report: EvaluationReport) -> list[str]:
    """Every arm minus the baseline per student (paired by seed), then the library's share of the oracle ceiling."""
    students = [s for s in report.students if s.contrasts]
    if not students:
        return []
    measure = report.primary.replace("_", " ")
    items = any(c.minus_baseline_items is not None for s in students for c in s.contrasts)
    out = [
        "",
        f"Each arm minus the baseline, paired by seed (95% CI over scenarios, then trials; {measure}"
        + (" and items met on a 0-1 scale" if items else " on a 0-1 scale")
        + "). oracle: the scenario's own checklist as words to say, the most any library could do for this student; "
        "placebo: as many lines that fit none of the scenario's items, what more text does by itself.",
        "",
        f"| student | arm | {measure} minus baseline |" + (" items met minus baseline |" if items else ""),
        "| --- | --- | --- |" + (" --- |" if items else ""),
    ]
    for s in students:
        for c in s.contrasts:
            cells = [s.student, c.condition, str(c.minus_baseline)]
            if items:
                cells.append(str(c.minus_baseline_items) if c.minus_baseline_items is not None else "n/a")
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out += [line for s in students if (line := share_line(s, report.primary)) is not None]
    return out


def to_markdown(report: EvaluationReport) -> str:
    """The evaluation table as Markdown, then tokens and estimated cost per role."""
    out = [
        "| student | condition | n | task success (95% CI) | items met (95% CI) | satisfaction (95% CI) | pass^k "
        "| policy kept | resolved | infra / judge / simulator | tokens/episode | est. cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    def line(student: str, r: ConditionResult) -> str:
        return (
            f"| {student} | {r.condition} | {r.judged}/{r.episodes} | {r.task_success} | {r.items_met} | "
            f"{r.satisfaction} | {pct(r.pass_k)} | {pct(r.policy_rate)} | {pct(r.resolved_rate)} | "
            f"{r.infrastructure_errors} / {r.judge_errors} / {r.simulator_faults} | {r.tokens_per_episode:,.0f} | "
            f"{_money(r.total_cost)} |"
        )

    rows = [(s.student, r) for s in report.students for r in s.rows]
    if report.teacher is not None:
        rows.append((report.teacher.agent_model, report.teacher))
    out += [line(student, r) for student, r in rows]
    out += ["", _errors_line(report), "", calibration_line(report.calibration)]
    splits = [(student, r.condition, r.split_votes) for student, r in rows if r.split_votes is not None]
    if splits:
        out.append(
            "Judge votes disagreed on "
            + ", ".join(f"{100 * x:.0f}% of items ({student}, {condition})" for student, condition, x in splits)
            + "."
        )
    out += [
        "",
        "Tokens and estimated cost per role (cached calls count: they are what the condition costs to run; prompt "
        "processed: the prompt tokens the engine could not take from its prompt cache, n/a where it does not say):",
        "",
        "| student | condition | role | model | calls | prompt tokens | prompt processed | completion tokens "
        "| est. cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for student, r in rows:
        for role, u in sorted(r.usage.items()):
            processed = "n/a" if u.prompt_processed is None else f"{u.prompt_processed:,}"
            out.append(
                f"| {student} | {r.condition} | {role} | {role_entry(role, r.agent_model)} | {u.calls:,} | "
                f"{u.prompt_tokens:,} | {processed} | {u.completion_tokens:,} | {_money(r.cost.get(role, 0.0))} |"
            )
    out.append("")
    measure = "task success" if report.primary == "task_success" else "satisfaction"
    for s in report.students:
        if report.teacher is not None:
            out.append(
                f"Gap closed by the library for {s.student} ({measure}): {s.gap_closed} over {s.gap_closed.n} paired "
                "trials"
                + (f"; on items met {s.gap_closed_items}" if s.gap_closed_items is not None else "")
                + (f"; on satisfaction {s.gap_closed_satisfaction}." if s.gap_closed_satisfaction is not None else ".")
            )
        out.append(
            f"Library minus baseline for {s.student} ({measure}, paired by seed, 95% CI over scenarios then trials): "
            f"{s.library_minus_baseline}."
        )
        if s.gap_closed_items is not None:
            out.append(
                f"Library minus baseline for {s.student} (items met, 0-1 scale, paired by seed, 95% CI over scenarios "
                f"then trials): {s.library_minus_baseline_items}."
            )
    out += contrasts_markdown(report)
    if report.min_detectable_difference is not None:
        scale = " (on a 0-1 scale)" if measure == "satisfaction" else ""
        out.append(
            f"Smallest difference in {measure} this run could detect (80% power, 95% confidence, scenarios as "
            f"clusters): {report.min_detectable_difference:.2f}{scale}."
        )
    for s in report.students:
        if any(r.condition == "library" for r in s.rows):
            out.append(hit_rate_line(s.student, s.retrieval))
    effects = [e for s in report.students for e in s.strategies]
    if effects:
        out += [
            "",
            "Per strategy, in the library condition (effect: shown minus not shown; task success and items met on a "
            "0-1 scale, satisfaction in points; 95% CIs over scenarios, then episodes):",
            "",
            *effects_markdown(effects, retired=report.retired),
            "",
        ]
    if report.retired:
        out += [
            f"Retired by this evaluation (harmful with confidence; the numbers are in each one's audit trail): "
            f"{', '.join(report.retired)}.",
            "",
        ]
    out.append(f"Library version {report.library_version}; coachlab {report.package_version}.")
    return "\n".join(out) + "\n"
