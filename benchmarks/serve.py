"""What `coachlab serve` costs: latency added and throughput kept, against the client talking to the stub directly.

One run starts the loopback `OpenAIStub` (a model server with a fixed latency) in this process and
`coachlab serve` as a separate process in front of it, once per retriever kind, over a library of
16 approved strategies: `lexical` (BM25), `embedding` (the offline all-MiniLM-L6-v2 in numpy; needs
`coachlab models fetch all-minilm-l6-v2`) and `openai` (an embeddings endpoint: the stub's own,
which answers at once, so the row shows the proxy with a fast embedding server). A minimal
keep-alive HTTP/1.1 client (it costs next to nothing per call, so it is never the bottleneck) posts
chat requests at 1, 16 and 64 concurrent clients, first straight to the stub, then through the
proxy, and prints per level the latency percentiles of both, what the proxy added, and the
throughput of both. Clients start spread over one model latency, so requests do not arrive in
lockstep. Every request is a different conversation (a ticket number changes), so the proxy's
query cache never helps: each request is retrieved afresh. The proxy's log gives the time spent
retrieving, and the proxy process's CPU time (Linux `/proc`) per request is printed beside it: on
a shared machine the wall-clock figures depend on what else runs, the CPU cost much less, so the
load average is printed before and after.

Run:
    .venv/bin/python benchmarks/serve.py                       # three retrievers, 1 s model latency, ~3 min
    .venv/bin/python benchmarks/serve.py --latency 0.1 --kinds lexical --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx

from coachlab.library import LibraryStore
from coachlab.schema import AuditStatus, Strategy
from coachlab.testing.openai_stub import OpenAIStub

SITUATIONS = [
    ("late-parcel", "When the customer complains that a parcel is late and asks where it is"),
    ("refund-late", "When the customer wants a refund because a delivery came too late"),
    ("double-charge", "When the customer was charged twice for the same order"),
    ("roaming", "When the customer disputes roaming charges on a phone bill"),
    ("password", "When the customer cannot log in or reset a password"),
    ("cancel-flight", "When a flight was cancelled and the customer needs to get home today"),
    ("lost-bag", "When the customer's checked bag did not arrive at the destination"),
    ("card-blocked", "When the customer's bank card was blocked while travelling"),
    ("repeat", "When the customer repeats the same complaint a second time"),
    ("angry", "When the customer is angry and threatens to leave for a competitor"),
    ("policy-no", "When the customer asks for something the policy does not allow"),
    ("slow-internet", "When the customer's home internet is slow every evening"),
    ("wrong-item", "When the customer received the wrong item in a parcel"),
    ("upgrade", "When the customer asks for a free upgrade as compensation"),
    ("fee-waive", "When the customer asks to waive a late payment fee"),
    ("handover", "When the customer asks to speak to a manager or a human"),
]
CONVERSATIONS = [
    [
        "My parcel for order A-100 is five days late. Where is it?",
        "I'm sorry. Let me check the tracking.",
        "It has said out for delivery for three days. I want my money back.",
    ],
    [
        "I was charged twice for my subscription this month.",
        "Let me look at your billing record.",
        "Both charges are on my statement, please reverse one.",
    ],
    [
        "My flight to Lisbon was cancelled and I need to be home tonight.",
        "I can look at other flights for you.",
        "Anything today is fine, I have to get back for work.",
    ],
    [
        "I can't log in, the reset email never arrives.",
        "Which address should I send it to?",
        "The same one as always, I have tried five times.",
    ],
    [
        "My internet is slow every evening, it has been weeks.",
        "Sorry about that. Did you restart the router?",
        "Yes, many times. I am paying for 500 Mbit and get 20.",
    ],
    [
        "I got a blue kettle but I ordered the red one.",
        "Apologies, I can send a replacement.",
        "Fine, but I do not want to pay for returning the wrong one.",
    ],
]
SYSTEM = (
    "You are the customer-service agent of Acme. Be brief, friendly and precise. Never promise what the "
    "records do not show. Refund shipping when a parcel is two or more days late. Escalate billing errors "
    "over 100 EUR to the billing team. Offer a callback when the customer asks for a human."
)


@dataclass(frozen=True)
class Run:
    """One measured run at one concurrency level."""

    latencies: list[float]
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def make_library(root: Path, kind: str, embeddings_url: str) -> Path:
    now = datetime.now(UTC)
    strategies = [
        Strategy(
            id=sid, situation=text, guidance=f"Guidance for {sid}: name the next step and when it happens."
        ).with_status(AuditStatus.APPROVED, by="bench", at=now)
        for sid, text in SITUATIONS
    ]
    run = root / kind
    LibraryStore(run / "library").commit(strategies, note="benchmark")
    endpoint = f", endpoint: {{model: e, base_url: '{embeddings_url}', api_key_env: null}}" if kind == "openai" else ""
    (run / "experiment.yaml").write_text(f"name: bench\nretrieval: {{kind: {kind}, k: 3{endpoint}}}\n")
    return run


def request_bytes(index: int) -> bytes:
    lines = CONVERSATIONS[index % len(CONVERSATIONS)]
    messages = [{"role": "system", "content": SYSTEM}]
    for i, text in enumerate(lines):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']} (ticket {100000 + index})"}
    body = json.dumps({"model": "bench", "messages": messages}).encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def drive(port: int, clients: int, seconds: float, start: int, *, spread: float = 0.0) -> Run:
    """`clients` keep-alive connections, each posting its next request as soon as the last is answered.

    Client `i` starts `i / clients * spread` seconds late, so that with a fixed model latency the
    requests arrive spread over the cycle instead of all at once (real traffic is not in lockstep).
    """
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    latencies: list[float] = []
    counter = iter(range(start, start + 10**9))
    began = time.perf_counter()
    stop = began + seconds

    async def client(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(i / clients * spread)
        while time.perf_counter() < stop:
            request = request_bytes(next(counter))
            sent = time.perf_counter()
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
            if not head[0].startswith("http/1.1 200"):
                raise RuntimeError(f"request failed: {head[0]}")
            length = next(int(x.split(":")[1]) for x in head if x.startswith("content-length:"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - sent)

    try:
        await asyncio.gather(*(client(i, r, w) for i, (r, w) in enumerate(connections)))
    finally:
        for _, writer in connections:
            writer.close()
    return Run(latencies, time.perf_counter() - began)


def start_proxy(run: Path, upstream: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from coachlab.cli import main; main()", "serve", str(run)]
    command += ["--upstream", upstream, "--port", str(port), "--log-file", str(log)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"coachlab serve failed: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), or NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""


def row(kind: str, level: int, direct: Run, proxied: Run, retrieval: float, cpu: float) -> str:
    added = (proxied.pct(0.5) - direct.pct(0.5), proxied.pct(0.99) - direct.pct(0.99))
    return (
        f"{kind:<10}{level:>8}{direct.pct(0.5):>11.1f}/{direct.pct(0.99):<8.1f}"
        f"{proxied.pct(0.5):>10.1f}/{proxied.pct(0.99):<8.1f}{added[0]:>10.1f}/{added[1]:<8.1f}"
        f"{direct.rate:>10.1f}{proxied.rate:>9.1f}{proxied.rate / direct.rate:>8.1%}{retrieval:>12.1f} ms"
        f"{cpu * 1000:>11.1f} ms"
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0, help="The stub's fixed latency (a model's reply time).")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64], help="Concurrent clients.")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["lexical", "embedding", "openai"],
        help="Retrievers: lexical (BM25), embedding (offline MiniLM), openai (an embeddings endpoint: the stub's).",
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="Duration of each measured run.")
    args = parser.parse_args()

    print(f"stub latency {args.latency * 1000:.0f} ms, {os.cpu_count()} CPUs, {args.seconds:g} s per run, {load()}")
    print(
        f"{'retriever':<10}{'clients':>8}{'direct p50/p99 ms':>20}{'proxy p50/p99 ms':>19}{'added p50/p99 ms':>19}"
        f"{'direct/s':>10}{'proxy/s':>9}{'ratio':>8}{'retrieval p50':>15}{'proxy CPU/req':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp, OpenAIStub(latency_s=args.latency, keep=8) as stub:
        start = 0
        for kind in args.kinds:
            run = make_library(Path(tmp), kind, stub.url)
            port, log = free_port(), Path(tmp) / f"{kind}.jsonl"
            proxy = start_proxy(run, stub.url, port, log)
            try:
                asyncio.run(drive(port, 4, min(2.0, args.seconds), 10**8))  # warm up: models, connections
                for level in args.levels:
                    start += 10**6
                    direct = asyncio.run(drive(stub.port, level, args.seconds, start, spread=args.latency))
                    skip = sum(1 for _ in log.open()) if log.exists() else 0
                    cpu = cpu_seconds(proxy.pid)
                    proxied = asyncio.run(drive(port, level, args.seconds, start + 10**5, spread=args.latency))
                    cpu = (cpu_seconds(proxy.pid) - cpu) / max(len(proxied.latencies), 1)
                    lines = [json.loads(x) for x in log.read_text().splitlines()[skip:]]
                    retrieval = statistics.median(x["retrieval_ms"] for x in lines) if lines else float("nan")
                    print(row(kind, level, direct, proxied, retrieval, cpu), flush=True)
            finally:
                proxy.terminate()
                proxy.wait(timeout=20)
    print(load())


if __name__ == "__main__":
    main()
