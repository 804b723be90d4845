"""Embedded model speed: server start-up, tokens/s, per-agent latency, queueing.

    python bench/bench_embedded.py [--runs 3] [--max-tokens 128] [--n-ctx 8192]

Everything goes through the real path an agent uses: ``EmbeddedServer`` (llama.cpp's
OpenAI-compatible server on 127.0.0.1) and the ``openai`` AsyncOpenAI client,
non-streaming, temperature 0. The baseline, in the same run, is llama-cpp-python's
``Llama.create_chat_completion`` called in-process with the same model, context
and threads: the ratio is what the HTTP server + SDK add. The server is stopped
before the baseline loads, so the two never share the 2 cores.
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

from pliny.config import LocalModel
from pliny.embedded import EmbeddedServer, default_model_path, default_threads

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
AGENT_MESSAGES = [{"role": "system", "content": AGENT_SYSTEM},
                  {"role": "user", "content": AGENT_TASK}]


def _note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _msgs(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _call_stats(latency: float, usage: Any) -> dict[str, float]:
    return {"latency_s": latency, "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "tokens_per_s": usage.completion_tokens / latency}


def _summary(calls: list[dict[str, float]]) -> dict[str, Any]:
    tokens = sum(c["completion_tokens"] for c in calls)
    seconds = sum(c["latency_s"] for c in calls)
    return {"calls": calls, "tokens_per_s": tokens / seconds,
            "latency_median_s": statistics.median(c["latency_s"] for c in calls),
            "prompt_tokens": statistics.median(c["prompt_tokens"] for c in calls),
            "completion_tokens": statistics.median(c["completion_tokens"] for c in calls)}


# -- through the server --------------------------------------------------------
async def _server_call(client: AsyncOpenAI, model: str, messages: list[dict[str, str]],
                       max_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    reply = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0)  # type: ignore[arg-type]
    return _call_stats(time.perf_counter() - start, reply.usage)


async def _server_suite(srv: EmbeddedServer, args: argparse.Namespace) -> dict[str, Any]:
    client = AsyncOpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0, timeout=300)
    await _server_call(client, srv.model_alias, _msgs("Hi"), 4)  # warm-up
    _note("server: generation prompts")
    gen = [await _server_call(client, srv.model_alias, _msgs(p), args.max_tokens)
           for p in GEN_PROMPTS]
    agent = [await _server_call(client, srv.model_alias, AGENT_MESSAGES, args.max_tokens)
             for _ in range(args.runs)]
    # Parallel agents on one local model: the server runs them one at a time.
    _note(f"server: {args.parallel} agents at once")
    start = time.perf_counter()
    together = await asyncio.gather(*(
        _server_call(client, srv.model_alias, AGENT_MESSAGES, args.max_tokens)
        for _ in range(args.parallel)))
    wall = time.perf_counter() - start
    return {"generation": _summary(gen), "agent": _summary(agent),
            "parallel": {"agents": args.parallel, "wall_s": wall,
                         "sum_of_single_s": sum(c["latency_s"] for c in agent[:1]) * args.parallel,
                         "latencies_s": [c["latency_s"] for c in together]}}


def bench_server(args: argparse.Namespace) -> dict[str, Any]:
    local = LocalModel(n_ctx=args.n_ctx, startup_timeout=120)
    starts = []
    _note("server: start-ups")
    for _ in range(args.runs):  # start-up = spawn + load + first healthy GET /v1/models
        t0 = time.perf_counter()
        with EmbeddedServer(local):
            starts.append(time.perf_counter() - t0)
    with EmbeddedServer(local) as srv:
        result = asyncio.run(_server_suite(srv, args))
    result["startup_s"] = {"runs": starts, "median": statistics.median(starts)}
    return result


# -- in-process baseline -----------------------------------------------------------
def bench_direct(args: argparse.Namespace) -> dict[str, Any]:
    from llama_cpp import Llama

    _note("in-process baseline")
    t0 = time.perf_counter()
    llm = Llama(model_path=str(default_model_path()), n_ctx=args.n_ctx,
                n_threads=default_threads(), n_threads_batch=default_threads(), verbose=False)
    load = time.perf_counter() - t0

    def call(messages: list[dict[str, str]], max_tokens: int) -> dict[str, float]:
        start = time.perf_counter()
        out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
                                         temperature=0)
        usage = argparse.Namespace(**out["usage"])  # type: ignore[index]
        return _call_stats(time.perf_counter() - start, usage)

    call(_msgs("Hi"), 4)
    gen = [call(_msgs(p), args.max_tokens) for p in GEN_PROMPTS]
    agent = [call(AGENT_MESSAGES, args.max_tokens) for _ in range(args.runs)]
    llm.close()
    return {"load_s": load, "generation": _summary(gen), "agent": _summary(agent)}


# -- report ------------------------------------------------------------------------
def _table(server: dict[str, Any], direct: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="embedded model: SmolLM2-135M-Instruct Q4_1, llama.cpp, CPU")
    for col in ("measure", "server + openai SDK", "in-process Llama", "server / direct"):
        table.add_column(col, justify="right" if col != "measure" else "left")

    def row(name: str, a: float, b: float, fmt: str) -> None:
        table.add_row(name, format(a, fmt), format(b, fmt), f"{a / b:.2f}x")

    row("start-up / load (s, median)", server["startup_s"]["median"], direct["load_s"], ".2f")
    row("generation tokens/s", server["generation"]["tokens_per_s"],
        direct["generation"]["tokens_per_s"], ".1f")
    row("agent call latency (s, median)", server["agent"]["latency_median_s"],
        direct["agent"]["latency_median_s"], ".2f")
    row("agent call tokens/s", server["agent"]["tokens_per_s"],
        direct["agent"]["tokens_per_s"], ".1f")
    Console().print(table)
    par = server["parallel"]
    print(f"agent prompt: {server['agent']['prompt_tokens']:.0f} prompt tokens, "
          f"{server['agent']['completion_tokens']:.0f} completion tokens (median)")
    print(f"{par['agents']} agents at once: wall {par['wall_s']:.2f} s, latencies "
          + ", ".join(f"{x:.2f}" for x in sorted(par["latencies_s"]))
          + " s (one model: they queue)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="agent calls and start-ups")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=LocalModel().n_ctx)
    parser.add_argument("--parallel", type=int, default=3, help="agents sent at once")
    parser.add_argument("--out", type=Path, default=RESULTS / "embedded.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    server = bench_server(args)
    direct = bench_direct(args)
    _table(server, direct)
    doc = {"machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                       "cpus": os.cpu_count(), "threads": default_threads(),
                       # llama.cpp threads spin-wait: other load on the box skews everything
                       "loadavg_1m": {"before": load_before, "after": os.getloadavg()[0]}},
           "settings": {"n_ctx": args.n_ctx, "max_tokens": args.max_tokens, "runs": args.runs},
           "server": server, "direct": direct,
           "overhead_ratio": {
               "agent_latency": server["agent"]["latency_median_s"]
               / direct["agent"]["latency_median_s"],
               "tokens_per_s": server["generation"]["tokens_per_s"]
               / direct["generation"]["tokens_per_s"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
