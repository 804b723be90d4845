"""Embedded model speed: server start-up, tokens/s, per-agent latency, queueing.

    python bench/bench_embedded.py [--runs 3] [--max-tokens 128] [--n-ctx 8192] [--threads N]

Everything goes through the real path an agent uses: ``EmbeddedServer`` (llama.cpp's
OpenAI-compatible server on 127.0.0.1) and the ``openai`` AsyncOpenAI client,
non-streaming, temperature 0. The baseline, in the same run, is llama-cpp-python's
``Llama.create_chat_completion`` called in-process with the same model, context
and threads: the ratio is what the HTTP server + SDK add. Each request runs on
both sides back to back (never at once), alternating which goes first, so load
from other processes hits both alike. llama.cpp threads spin-wait, so a busy box
makes every figure noisy: the 1-minute load average is recorded with the results.
Results go to ``bench/results/embedded.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from pliny.config.settings import LocalModel
from pliny.llm.embedded import EmbeddedServer, default_model_path, default_threads

RESULTS = Path(__file__).parent / "results"
GEN_PROMPTS = [
    "Write a detailed, multi-paragraph explanation of how a bicycle works.",
    "Describe, step by step, how to plan a week-long hiking trip.",
    "Explain the water cycle to a ten-year-old, with examples.",
    "Write a short story about a lighthouse keeper and a storm.",
]
# A typical agent request as the engine builds it: role + framework + task + context.
AGENT_SYSTEM = (
    "You are the Research agent of the R-I-S-E framework (Research, Identify, Synthesize, "
    "Execute), running inside Pliny, a multi-agent orchestration system. Your phase is "
    "Research. Other agents run in parallel with you and read your output in later phases, "
    "so be factual and concise and do not invent sources. Write your findings as a short "
    "markdown document with the sections: Summary, Key facts, Open questions. Each key fact "
    "is one line. If the task is ambiguous, state the assumption you made in one line. "
    "Never include secrets, credentials or personal data. Keep the whole answer under 200 "
    "words. The workspace is a small git repository; you may refer to its files by path. "
)
AGENT_TASK = (
    "Task: the team is adding a command-line tool that converts CSV files to JSON. "
    "Research what a robust converter must handle: header rows, quoting and escaped quotes, "
    "embedded newlines, different delimiters (comma, semicolon, tab), character encodings "
    "(UTF-8 with and without BOM, Latin-1), very large files that do not fit in memory, "
    "empty fields versus missing fields, type inference for numbers and booleans, and error "
    "reporting with line numbers. The existing repository contains README.md, a pyproject.toml "
    "and an empty src/csv2json/__init__.py. Previous phase output: none (this is the first "
    "phase). Constraints: Python 3.11, standard library preferred, streaming output. "
    "List the facts the Identify phase will need to choose an approach."
)
AGENT_MESSAGES = [
    {"role": "system", "content": AGENT_SYSTEM},
    {"role": "user", "content": AGENT_TASK},
]


def _note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _msgs(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _call_stats(latency: float, usage: Any) -> dict[str, float]:
    return {
        "latency_s": latency,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "tokens_per_s": usage.completion_tokens / latency,
    }


def _summary(calls: list[dict[str, float]]) -> dict[str, Any]:
    tokens = sum(c["completion_tokens"] for c in calls)
    seconds = sum(c["latency_s"] for c in calls)
    return {
        "calls": calls,
        "tokens_per_s": tokens / seconds,
        "latency_median_s": statistics.median(c["latency_s"] for c in calls),
        "prompt_tokens": statistics.median(c["prompt_tokens"] for c in calls),
        "completion_tokens": statistics.median(c["completion_tokens"] for c in calls),
    }


# -- measurements -------------------------------------------------------------------
def startups(local: LocalModel, runs: int) -> list[float]:
    """Spawn + model load + first healthy GET /v1/models, through EmbeddedServer."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with EmbeddedServer(local):
            times.append(time.perf_counter() - t0)
    return times


def load_direct(local: LocalModel, threads: int) -> tuple[Any, float]:
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(
        model_path=str(default_model_path()),
        n_ctx=local.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    return llm, time.perf_counter() - t0


async def via_server(
    client: AsyncOpenAI, model: str, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, float]:
    start = time.perf_counter()
    reply = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0
    )  # type: ignore[arg-type]
    return _call_stats(time.perf_counter() - start, reply.usage)


def via_direct(llm: Any, messages: list[dict[str, str]], max_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0)
    return _call_stats(time.perf_counter() - start, argparse.Namespace(**out["usage"]))


async def paired(srv: EmbeddedServer, llm: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Each request once through the server and once in-process, back to back, in
    alternating order, so load drifting on the box hits both sides alike."""
    client = AsyncOpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0, timeout=300)
    cases = [("generation", _msgs(p)) for p in GEN_PROMPTS]
    cases += [("agent", AGENT_MESSAGES)] * args.runs
    out: dict[str, dict[str, list[dict[str, float]]]] = {
        side: {"generation": [], "agent": []} for side in ("server", "direct")
    }
    await via_server(client, srv.model_alias, _msgs("Hi"), 4)  # warm-up both
    via_direct(llm, _msgs("Hi"), 4)
    for i, (kind, messages) in enumerate(cases):
        _note(f"{kind} {i + 1}/{len(cases)}")
        server_first = i % 2 == 0
        if not server_first:
            out["direct"][kind].append(via_direct(llm, messages, args.max_tokens))
        out["server"][kind].append(
            await via_server(client, srv.model_alias, messages, args.max_tokens)
        )
        if server_first:
            out["direct"][kind].append(via_direct(llm, messages, args.max_tokens))
    return {
        side: {kind: _summary(calls) for kind, calls in kinds.items()}
        for side, kinds in out.items()
    }


async def queued(srv: EmbeddedServer, args: argparse.Namespace) -> dict[str, Any]:
    """Parallel agents on one local model: the server runs them one at a time."""
    client = AsyncOpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0, timeout=300)
    _note(f"{args.parallel} agents at once")
    start = time.perf_counter()
    calls = await asyncio.gather(
        *(
            via_server(client, srv.model_alias, AGENT_MESSAGES, args.max_tokens)
            for _ in range(args.parallel)
        )
    )
    return {
        "agents": args.parallel,
        "wall_s": time.perf_counter() - start,
        "latencies_s": sorted(c["latency_s"] for c in calls),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    local = LocalModel(n_ctx=args.n_ctx, n_threads=args.threads, startup_timeout=120)
    _note("server start-ups")
    starts = startups(local, args.runs)
    llm, load = load_direct(local, args.threads)
    with EmbeddedServer(local) as srv:
        result = asyncio.run(paired(srv, llm, args))
        result["queued"] = asyncio.run(queued(srv, args))
    llm.close()
    result["server"]["startup_s"] = {"runs": starts, "median": statistics.median(starts)}
    result["direct"]["load_s"] = load
    return result


# -- report ------------------------------------------------------------------------
def _table(result: dict[str, Any]) -> None:
    server, direct = result["server"], result["direct"]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="embedded model: SmolLM2-135M-Instruct Q4_1, llama.cpp, CPU")
    for col in ("measure", "server + openai SDK", "in-process Llama", "server / direct"):
        table.add_column(col, justify="right" if col != "measure" else "left")

    def row(name: str, a: float, b: float, fmt: str) -> None:
        table.add_row(name, format(a, fmt), format(b, fmt), f"{a / b:.2f}x")

    row("start-up / load (s, median)", server["startup_s"]["median"], direct["load_s"], ".2f")
    row(
        "generation tokens/s",
        server["generation"]["tokens_per_s"],
        direct["generation"]["tokens_per_s"],
        ".1f",
    )
    row(
        "agent call latency (s, median)",
        server["agent"]["latency_median_s"],
        direct["agent"]["latency_median_s"],
        ".2f",
    )
    row(
        "agent call tokens/s",
        server["agent"]["tokens_per_s"],
        direct["agent"]["tokens_per_s"],
        ".1f",
    )
    Console().print(table)
    par = result["queued"]
    print(
        f"agent prompt: {server['agent']['prompt_tokens']:.0f} prompt tokens, "
        f"{server['agent']['completion_tokens']:.0f} completion tokens (median)"
    )
    print(
        f"{par['agents']} agents at once: wall {par['wall_s']:.2f} s, latencies "
        + ", ".join(f"{x:.2f}" for x in par["latencies_s"])
        + " s (one model: they queue)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="agent calls and start-ups")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=LocalModel().n_ctx)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--parallel", type=int, default=3, help="agents sent at once")
    parser.add_argument("--out", type=Path, default=RESULTS / "embedded.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    result = run(args)
    _table(result)
    server, direct = result["server"], result["direct"]
    doc = {
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            # llama.cpp threads spin-wait: other load on the box skews everything
            "loadavg_1m": {"before": load_before, "after": os.getloadavg()[0]},
        },
        "settings": {
            "n_ctx": args.n_ctx,
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "runs": args.runs,
        },
        **result,
        "overhead_ratio": {
            "agent_latency": server["agent"]["latency_median_s"]
            / direct["agent"]["latency_median_s"],
            "tokens_per_s": server["generation"]["tokens_per_s"]
            / direct["generation"]["tokens_per_s"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
