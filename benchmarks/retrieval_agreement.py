"""Does a faster way to embed queries retrieve the same strategies? Agreement of top-k and of what is shown.

The reference is the offline MiniLM (`BertEmbedder.embed`) run on one situation at a time, the
query shape simulation measured (`situation_text`: the last 4 lines). Compared with it:

- `served`: every situation asked at once through `aembed`, as `coachlab serve` and concurrent
  episodes do: the embedder's workers join them into shared, padded forward passes.
- `lines`: each line embedded alone and the line vectors averaged (weighted by tokens): what a
  per-line vector cache would retrieve. It would embed only a conversation's new line per
  request, but it is a different query (no attention across lines), so it is not used.

Strategies are the 16 situations of `benchmarks/serve.py` (plus `--library` versions); queries are
built from the shipped scenarios (opening line or dialogue prefix, then each criterion's example
reply as the agent's line), the serve benchmark's conversations, and every agent turn of the
transcripts given with `--episodes`. Per comparison it prints the share of queries whose top-k
strategies are the same set, whose shown strategies (top k above the floor, in order) are the
same, and the largest difference of a score.

Run:
    .venv/bin/python benchmarks/retrieval_agreement.py
    .venv/bin/python benchmarks/retrieval_agreement.py --library runs/quickstart \
        --episodes runs/quickstart/*/episodes.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from coachlab.library import LibraryStore, situation_text
from coachlab.library.coaching import library_folder
from coachlab.library.embedding import BertEmbedder, load_embedder
from coachlab.yamlio import load_yaml

sys.path.insert(0, str(Path(__file__).parent))
from serve import CONVERSATIONS, SITUATIONS  # a sibling script, not a package

ROOT = Path(__file__).parent.parent


def scenario_dialogues() -> list[list[tuple[str, str]]]:
    """Dialogues of the shipped scenarios: the opening (line or prefix), then each criterion's example as reply."""
    out: list[list[tuple[str, str]]] = []
    for path in sorted((ROOT / "scenarios").rglob("*.yaml")):
        data = load_yaml(path, what="scenario file").data
        items = data.get("scenarios", []) if isinstance(data, dict) else []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            opening = [(str(t["role"]), str(t["text"])) for t in item.get("prefix") or []]
            if not opening and item.get("opening_line"):
                opening = [("customer", str(item["opening_line"]))]
            if not opening:
                continue
            out.append(opening)
            for criterion in item.get("success_criteria") or []:
                if isinstance(criterion, dict) and criterion.get("example"):
                    out.append([*opening, ("agent", str(criterion["example"]))])
    return out


def episode_dialogues(paths: Sequence[Path]) -> list[list[tuple[str, str]]]:
    """The dialogue before each agent turn of each episode in the given `episodes.jsonl` files."""
    speakers = {"customer_message": "customer", "agent_message": "agent"}
    out: list[list[tuple[str, str]]] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            dialogue: list[tuple[str, str]] = []
            for event in json.loads(line).get("events", []):
                who = speakers.get(event.get("type"))
                if who == "agent":
                    out.append(list(dialogue))
                if who is not None:
                    dialogue.append((who, str(event.get("text", ""))))
    return [d for d in out if d]


def by_lines(embedder: BertEmbedder, queries: Sequence[str]) -> NDArray[np.float32]:
    """Each query's lines embedded alone, averaged with their token counts as weights, normalised."""
    lines = sorted({line for q in queries for line in q.split("\n")})
    vectors = embedder.embed(lines)
    row = {line: i for i, line in enumerate(lines)}
    tokens = {line: len(e.ids) for line, e in zip(lines, embedder.tokenizer.encode_batch(lines), strict=True)}
    out = np.zeros((len(queries), embedder.dimensions), dtype=np.float32)
    for i, query in enumerate(queries):
        parts = query.split("\n")
        total = sum((vectors[row[p]] * tokens[p] for p in parts), np.zeros(embedder.dimensions, dtype=np.float32))
        out[i] = total / max(float(np.linalg.norm(total)), 1e-12)
    return out


def agreement(
    reference: NDArray[np.float32], other: NDArray[np.float32], strategies: NDArray[np.float32], k: int, floor: float
) -> str:
    ref_scores, scores = reference @ strategies.T, other @ strategies.T
    same_top = same_shown = 0
    for a, b in zip(ref_scores, scores, strict=True):
        top_a, top_b = np.argsort(-a, kind="stable")[:k], np.argsort(-b, kind="stable")[:k]
        same_top += set(top_a.tolist()) == set(top_b.tolist())
        same_shown += [i for i in top_a if a[i] >= floor] == [i for i in top_b if b[i] >= floor]
    n = len(ref_scores)
    gap = float(np.abs(ref_scores - scores).max())
    return f"top-{k} same set {same_top / n:7.1%}   shown same {same_shown / n:7.1%}   largest score change {gap:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=Path, nargs="*", default=[], help="episodes.jsonl files: more queries.")
    parser.add_argument("--library", nargs="*", default=[], help="Run or library folders: more strategies.")
    parser.add_argument("--k", type=int, default=3, help="Strategies shown per turn, at most.")
    parser.add_argument("--floor", type=float, default=0.4, help="Lowest score shown.")
    args = parser.parse_args()

    situations = [text for _, text in SITUATIONS]
    for folder in args.library:
        situations += [s.situation for s in LibraryStore(library_folder(folder)).load().strategies]
    dialogues = scenario_dialogues() + episode_dialogues(args.episodes)
    dialogues += [[("customer" if i % 2 == 0 else "agent", t) for i, t in enumerate(c)] for c in CONVERSATIONS]
    queries = list(dict.fromkeys(situation_text(d) for d in dialogues))
    embedder = load_embedder()
    tokens = [len(e.ids) for e in embedder.tokenizer.encode_batch(queries)]
    print(
        f"{len(dict.fromkeys(situations))} strategies, {len(queries)} queries "
        f"({np.mean(tokens):.0f} tokens on average, {max(tokens)} at most), k {args.k}, floor {args.floor}"
    )
    strategies = embedder.embed(list(dict.fromkeys(situations)))
    alone = np.stack([embedder.embed([q])[0] for q in queries])

    async def at_once() -> list[NDArray[np.float32]]:
        return await asyncio.gather(*(embedder.aembed([q]) for q in queries))

    served = np.concatenate(asyncio.run(at_once()))
    print(f"served (micro-batched) vs alone: {agreement(alone, served, strategies, args.k, args.floor)}")
    lines = by_lines(embedder, queries)
    print(f"per-line vectors vs whole query: {agreement(alone, lines, strategies, args.k, args.floor)}")


if __name__ == "__main__":
    main()
