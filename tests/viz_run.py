"""A scripted train + evaluate run folder for the viz tests (offline, a few seconds).

The story: a student that only names the next step when a strategy tells it to, but never says
sorry, which a furious customer will not forgive; a teacher that writes such strategies (and a
useless one that verification rejects) and grows angrier children; a second student
("student-b") that is lukewarm without guidance, for the transfer matrix. Customer lines and
some mutations carry HTML/script text, to check that the page shows it as text.

Every scenario has its shipped checklist, graded one agent line and one item at a time
(`_line_answer`): the next-step line does every item but an apology, which only "sorry" does, so
the coached student succeeds at the late parcel and not at the bill shock; the lukewarm line only
asks questions; a line that repeats an item's example does that item, so the oracle arm (the
examples as words to say) is the ceiling and the placebo (other scenarios' examples) does nothing.
On the held-out flight the customer asks what happens next, which retrieves the next-step
strategy; the customer of the declined card asks why, which retrieves nothing: the per-strategy
figures have episodes where a strategy was shown and episodes where it was not.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from autogen_core.models import LLMMessage

from coachlab.agents.teacher import TEACHER_SYSTEM_PROMPT
from coachlab.experiments.config import load_experiment
from coachlab.experiments.distill import train_experiment
from coachlab.experiments.evaluate import evaluate_experiment
from coachlab.experiments.simulate import build_backends
from coachlab.schema import SatisfactionScore
from coachlab.testing import ScriptedChatCompletionClient, message_text

ROOT = Path(__file__).resolve().parents[1]

GOOD = "I've reshipped it by express: it arrives Friday, reference R-1."
SORRY = "I'm sorry for the trouble. "
FED_UP = "This is useless."
LUKEWARM = "Let me check on that for you."
BAD = "Please wait."
WHAT_NOW = "What happens now?"
WHY = "Why was my card declined?"
INJECTION = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
MUTATION_INJECTION = "asks for a manager </script><script>window.__pwned = 3</script>"
HELPFUL = {"situation": "When the customer asks what happens next", "guidance": "Name the next step and its date."}
HELPFUL_MORE = [
    HELPFUL,
    {"situation": "When the customer fears an order is lost", "guidance": "Name the next step, then give a reference."},
    {"situation": "When the customer is in a hurry", "guidance": "Name the next step first, details after."},
]
SAY = "Say, in your own words: "
"""How the oracle and the placebo put their lines (coachlab.experiments.controls)."""
FORBIDDEN = re.compile(r"^(promises|waives|tells the customer|asks for the full)")
"""The shipped checklists' forbidden items, by how their text starts."""
USELESS = {"situation": "When the customer writes about anything", "guidance": "Use a friendly tone."}

EXPERIMENT = """\
name: viz-story
personas: [{root}/personas]
scenarios: [{root}/scenarios/retail.yaml, {root}/scenarios/travel.yaml, {root}/scenarios/telecom.yaml,
            {root}/scenarios/banking.yaml]
models:
  student: {{provider: openai, config: {{model: scripted-student}}, cost_per_1k_prompt: 0.0001,
             cost_per_1k_completion: 0.0002}}
  student-b: {{provider: openai, config: {{model: scripted-student-b}}}}
  customer: {{provider: openai, config: {{model: scripted-customer}}}}
  teacher: {{provider: openai, config: {{model: scripted-teacher}}, cost_per_1k_prompt: 0.005,
             cost_per_1k_completion: 0.015}}
  judge: {{provider: openai, config: {{model: scripted-judge}}, cost_per_1k_prompt: 0.001}}
environment: {{max_turns: 3}}
judge: {{gate: off}}   # per-line checklist questions, answered by the script alone
retrieval: {{kind: lexical}}
simulate: {{agents: [student]}}
train:
  scenarios: [retail-late-delivery, telecom-bill-shock]
  trials: 2
  strategies_per_failure: 2
  children_per_failure: 2
  verify: {{trials: 6, refine_rounds: 1}}
  max_nodes: {max_nodes}
  max_depth: 3
  max_iterations: 3
{evaluate}"""

EVALUATE = """\
evaluate:
  scenarios: [travel-cancelled-flight, banking-card-declined]
  students: [student, student-b]
  trials: 2
"""


def _customer(messages: Sequence[LLMMessage]) -> str:
    system, ask = message_text(messages[0]), message_text(messages[-1])
    if "furious" in system and "reference R-1" in ask and "sorry" not in ask:
        return f"{FED_UP} [LEAVE]"
    if "reference R-1" in ask:
        return "Perfect, thank you! [DONE]"
    if ask.count(BAD) > 1 or ask.count(LUKEWARM) > 1:
        return f"Forget it {INJECTION}. [LEAVE]"
    asked = ask.count(WHAT_NOW) + ask.count(WHY)
    again = f" That is {asked + 1} times I ask." if asked else ""
    if "GameVault" in system:  # the declined card: words no strategy of the story (nor its cues) shares
        return f"{WHY} Just unblock it.{again}"
    return f"My problem is still not fixed {INJECTION}. {WHAT_NOW}{again}"


def _student(good_without_guidance: str) -> Callable[[Sequence[LLMMessage]], str]:
    def reply(messages: Sequence[LLMMessage]) -> str:
        system = message_text(messages[0])
        if "Name the next step" in system:
            return GOOD
        told = [line.split(SAY, 1)[1] for line in system.splitlines() if SAY in line]
        return " ".join(told) if told else good_without_guidance  # words to say (oracle, placebo): said

    return reply


def _teacher() -> Callable[[Sequence[LLMMessage]], str]:
    written = [0]

    def reply(messages: Sequence[LLMMessage]) -> str:
        system, ask = message_text(messages[0]), message_text(messages[-1])
        if system != TEACHER_SYSTEM_PROMPT:
            return SORRY + GOOD  # playing the service agent
        if '"strategies"' in ask:
            written[0] += 1
            return json.dumps({"strategies": [HELPFUL_MORE[(written[0] - 1) % len(HELPFUL_MORE)], USELESS]})
        if '"children"' in ask:
            deeper = "Mood: furious and in a hurry." in ask or "Mood: cold." in ask  # a child's customer
            children = [
                {"mutation": "angrier and in a hurry", "mood": "furious and in a hurry", "patience": "low"},
                {
                    "mutation": MUTATION_INJECTION,
                    "mood": "cold",
                    "patience": "medium",
                    "extra_constraint": "Wants a manager.",
                },
            ]
            return json.dumps({"children": children[1:] if deeper else children})
        return json.dumps(USELESS)  # refinement keeps it useless

    return reply


def _line_answer(ask: str) -> str:
    """A checklist question about one agent line: which items the story's lines do."""
    line = ask.split("<message>")[1].split("</message>")[0]
    item = ask.split("the agent ", 1)[1].split("\n")[0]
    examples = re.findall(r'"([^"]+)"', ask.split(item, 1)[1].split("\n")[1]) if "words such as" in ask else []
    if any(example in line for example in examples):
        said = True  # the item's own words (the oracle's)
    elif FORBIDDEN.search(item):
        said = False  # no line of the story breaks a rule
    elif "apologiz" in item:
        said = "sorry" in line
    elif "reference R-1" in line:
        said = True  # the next step, with its reference, does every other item
    else:
        said = LUKEWARM in line and item.startswith("asks")
    return json.dumps({"answer": "yes" if said else "no"})


def _judge(messages: Sequence[LLMMessage]) -> str | SatisfactionScore:
    text = message_text(messages[-1])
    if "<message>" in text:
        return _line_answer(text)
    if "reference R-1" in text and FED_UP not in text:
        score, turn = 8 + len(text) % 2, None
    elif LUKEWARM in text:
        score, turn = 5, 1
    else:  # lost at the last agent turn
        score, turn = 2 + len(text) % 2, max(text.count("[agent turn") - 1, 0)
    return SatisfactionScore(
        rationale=f"Scored {score}: {'a concrete next step' if turn is None else 'the customer was lost'}.",
        satisfaction=score,  # type: ignore[arg-type]
        resolved=turn is None,
        policy_followed=True,
        failure_turn=turn,
        customer_in_role=True,
    )


def scripted_run(run_dir: Path, *, evaluate: bool = True, max_nodes: int = 8) -> Path:
    """Train (and evaluate) the story into `run_dir`; returns `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(EXPERIMENT.format(root=ROOT, max_nodes=max_nodes, evaluate=EVALUATE if evaluate else ""))
    experiment = load_experiment(path)
    fns: dict[str, Callable[[Sequence[LLMMessage]], object]] = {
        "customer": _customer,
        "judge": _judge,
        "student": _student(BAD),
        "student-b": _student(LUKEWARM),
        "teacher": _teacher(),
    }
    clients = {name: ScriptedChatCompletionClient(fn, name=name) for name, fn in fns.items()}  # type: ignore[arg-type]
    backends = build_backends(experiment, list(fns), clients=clients)
    asyncio.run(train_experiment(experiment, backends, run_dir=run_dir, resume=False, use_cache=False))
    if evaluate:
        asyncio.run(
            evaluate_experiment(experiment, backends, run_dir=run_dir, resume=False, concurrency=4, use_cache=False)
        )
    return run_dir


def big_run(run_dir: Path, *, nodes: int = 500, seed: int = 7) -> Path:
    """A synthetic run folder with a tree of `nodes` nodes (every record filled, 3 episodes each)."""
    import random
    from datetime import UTC, datetime

    from coachlab.experiments.results import EpisodeLog
    from coachlab.explorer.tree import NodeStatus, ScenarioTree
    from coachlab.library import LibraryStore
    from coachlab.schema import (
        AgentMessage,
        AuditStatus,
        CustomerMessage,
        Episode,
        EpisodeEnded,
        Evidence,
        Provenance,
        RoleUsage,
        Scenario,
        Strategy,
        TerminationReason,
        Verdict,
    )

    def scenario(i: int) -> Scenario:
        return Scenario.model_validate(
            {
                "id": f"root-{i}",
                "domain": "retail",
                "title": f"Root scenario {i}",
                "issue": "The parcel is five days late.",
                "facts": {"order_number": "A-100"},
                "policy": ["Refund shipping when a parcel is 2 or more days late."],
                "persona": {
                    "id": "dana",
                    "name": "Dana",
                    "description": "a commuter who relies on the service",
                    "goal": "a refund",
                    "satisfied_when": "a refund is confirmed with a reference number",
                },
            }
        )

    rng = random.Random(seed)
    tree = ScenarioTree()
    roots = [tree.add_root(scenario(i)) for i in range(4)]
    growing = [r.id for r in roots]  # nodes that may still get children (depth < 6)
    while len(tree) < nodes:
        parent = rng.choice(growing[-60:])  # recent nodes: a few levels deep, not a chain
        kind = rng.choice(["angrier", "in a hurry", "wants a manager"])
        child = tree.add_child(
            parent,
            tree.node(parent).scenario,
            mutation=f"mutation {len(tree)}: {kind}",
            iteration=tree.node(parent).depth + 1,
        )
        if child.depth < 6:
            growing.append(child.id)
    log = EpisodeLog(run_dir / "train" / "episodes.jsonl")
    strategies: list[Strategy] = []
    now = datetime.now(UTC)
    for node in list(tree.nodes()):
        status = rng.choice(list(NodeStatus)) if node.id not in ("root-0",) else NodeStatus.EXPANDED
        if status is NodeStatus.FRONTIER:
            tree.update(node.id, status=status)
            continue
        episodes = []
        for who, trial in (("student", 0), ("student", 1), ("teacher", 0)):
            score = rng.randint(1, 10)
            ep = Episode(
                id=f"{node.id}/{who}/{trial}",
                scenario_id=node.scenario.id,
                agent_model=who,
                trial=trial,
                seed=trial,
                condition="teacher" if who == "teacher" else "baseline",
                events=[
                    CustomerMessage(turn=0, text="Where is my parcel?", origin="opening"),
                    AgentMessage(turn=0, text="Let me check."),
                    CustomerMessage(turn=1, text="Well?"),
                    AgentMessage(turn=1, text="It arrives Friday."),
                    EpisodeEnded(turn=2, reason=TerminationReason.MAX_TURNS),
                ],
                termination=TerminationReason.MAX_TURNS,
                verdict=Verdict(
                    rationale="synthetic",
                    satisfaction=score,  # type: ignore[arg-type]
                    resolved=score > 6,
                    policy_followed=True,
                    failure_turn=None if score > 6 else 1,
                    customer_in_role=True,
                ),
                usage={"agent": RoleUsage(calls=2, prompt_tokens=200, completion_tokens=20)},
            )
            log.append(ep)
            episodes.append(ep)
        student = [e.verdict.satisfaction for e in episodes[:2] if e.verdict is not None]
        sids: list[str] = []
        if status in (NodeStatus.FAILED, NodeStatus.EXPANDED):
            sid = node.id.replace(".", "-") + "-s"
            strategies.append(
                Strategy(
                    id=sid,
                    situation=f"When node {node.id} happens",
                    guidance=f"Do the thing for {node.id}.",
                    provenance=Provenance(
                        scenario_id=node.scenario.id, node_id=node.id, teacher_model="t", iteration=node.iteration
                    ),
                    evidence=Evidence(trials=2, mean_without=3.0, mean_with=7.0, uplift_low=1.0, uplift_high=6.0),
                ).with_status(rng.choice(list(AuditStatus)), by="train", at=now)
            )
            sids.append(sid)
        teacher = episodes[2].verdict.satisfaction if episodes[2].verdict is not None else None
        usage = {
            "agent": RoleUsage(calls=6, prompt_tokens=600, completion_tokens=60),
            "teacher": RoleUsage(calls=1, prompt_tokens=50),
        }
        tree.update(
            node.id,
            status=status,
            student_mean=sum(student) / len(student),
            teacher_mean=teacher,
            episode_ids=[e.id for e in episodes],
            strategy_ids=sids,
            failure_turn=1,
            usage=usage,
        )
    log.close()
    tree.save(run_dir / "tree.json")
    LibraryStore(run_dir / "library").commit(strategies, note="synthetic")
    return run_dir
