"""tgi-cpu's engine against plain llama.cpp, measured side by side in one run.

1. Throughput: tokens/s of ``LlamaEngine.generate`` (with each token's log-probability) against
   ``Llama.generate`` (llama.cpp's own sampler, no log-probabilities) on the same model, prompt and
   context settings, alternating, greedy, so both produce the same tokens. Target ratio >= 0.95.
2. Prefix reuse: a session of ``--steps`` steps where each prompt is the previous prompt plus the previous
   step; the time of the last step against the first, with prefix reuse on and forced off.

    uv run --frozen python bench/bench_tgi_cpu.py [--quick] [--model tiny] [--rounds 7]

Prints a table and writes bench/results/tgi_cpu.json (``--quick``: one thread, 3 rounds of 64 tokens,
sessions of 5 steps, bench/results/quick/tgi_cpu.json). Exits with status 1 if a figure is empty (zero,
NaN).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _harness import empty_measurements
from rich.console import Console
from rich.table import Table

from trigreason.services.tgi_cpu import LlamaEngine, SamplingParams, available_cpus, resolve_model_path

RESULTS = Path(__file__).parent / "results" / "tgi_cpu.json"
QUICK_RESULTS = Path(__file__).parent / "results" / "quick" / "tgi_cpu.json"
PROMPT = (
    "<|im_start|>user\nWrite a long story about a robot who learns to paint.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
QUESTION = (
    "<|im_start|>user\nA train travels 60 km in 45 minutes. At the same speed, how far does it travel in "
    "2 hours? Reason step by step.<|im_end|>\n<|im_start|>assistant\n"
)


def plain_decode(llm: Any, tokens: list[int], n: int) -> tuple[int, float]:
    """Greedy ``Llama.generate``: llama.cpp samples in C and no log-probability is computed."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    started = time.perf_counter()
    count = 0
    for token in llm.generate(tokens, temp=0.0):
        count += 1
        if count == n or llama_cpp.llama_vocab_is_eog(vocab, token):  # where the engine stops too
            break
    return count, time.perf_counter() - started


def engine_decode(engine: LlamaEngine, tokens: list[int], n: int) -> tuple[int, float]:
    started = time.perf_counter()
    gen = engine.generate(tokens, SamplingParams(max_new_tokens=n))
    assert all(t.logprob <= 0 for t in gen.tokens)
    return len(gen.tokens), time.perf_counter() - started


def throughput(engine: LlamaEngine, llm: Any, *, tokens: int, rounds: int) -> dict[str, Any]:
    prompt = engine.tokenize(PROMPT)
    engine_decode(engine, prompt, 8)  # warm-up: page in the weights, fill caches
    plain_decode(llm, prompt, 8)
    mine: list[float] = []
    plain: list[float] = []
    counts: list[tuple[int, int]] = []
    for r in range(rounds):
        # Alternate who goes first so that neither always runs on a warmer (or busier) machine.
        order = ("engine", "plain") if r % 2 == 0 else ("plain", "engine")
        got: dict[str, tuple[int, float]] = {}
        for who in order:
            got[who] = (
                engine_decode(engine, prompt, tokens)
                if who == "engine"
                else plain_decode(llm, prompt, tokens)
            )
        mine.append(got["engine"][0] / got["engine"][1])
        plain.append(got["plain"][0] / got["plain"][1])
        counts.append((got["engine"][0], got["plain"][0]))
    engine_median, plain_median = statistics.median(mine), statistics.median(plain)
    # Each round's two runs are seconds apart and share whatever else the machine is doing: the median of
    # the per-round ratios is the robust figure on a shared machine.
    paired = [m / p for m, p in zip(mine, plain, strict=True)]
    return {
        "new_tokens": tokens,
        "rounds": rounds,
        "generated_tokens": counts,
        "engine_tok_s": mine,
        "plain_tok_s": plain,
        "engine_tok_s_median": engine_median,
        "plain_tok_s_median": plain_median,
        "ratio_of_medians": engine_median / plain_median,
        "paired_ratios": paired,
        "ratio": statistics.median(paired),
        "target": 0.95,
    }


def record_session(engine: LlamaEngine, *, steps: int, step_tokens: int) -> list[str]:
    """The prompts of one reasoning session: each is the previous prompt plus the step generated from it."""
    engine.reset_cache()
    prompts = [QUESTION]
    for _ in range(steps - 1):
        gen = engine.generate(prompts[-1], SamplingParams(max_new_tokens=step_tokens))
        prompts.append(prompts[-1] + gen.text + "\n\n")
    return prompts


def replay_session(engine: LlamaEngine, prompts: list[str], *, step_tokens: int) -> list[dict[str, Any]]:
    """Run the recorded prompts in order from an empty cache, as a worker serving that session would."""
    engine.reset_cache()
    out = []
    for prompt in prompts:
        started = time.perf_counter()
        gen = engine.generate(prompt, SamplingParams(max_new_tokens=step_tokens))
        out.append(
            {
                "seconds": time.perf_counter() - started,
                "prefill_s": gen.prefill_s,
                "input_length": gen.input_length,
                "cached_tokens": gen.cached_tokens,
                "generated": len(gen.tokens),
            }
        )
    return out


def prefix_reuse(engine: LlamaEngine, *, steps: int, step_tokens: int, rounds: int) -> dict[str, Any]:
    # The same prompts both ways, so step N is the same work with reuse on and off.
    prompts = record_session(engine, steps=steps, step_tokens=step_tokens)
    runs: dict[str, list[list[dict[str, Any]]]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            engine.prefix_reuse = mode == "on"
            runs[mode].append(replay_session(engine, prompts, step_tokens=step_tokens))
    engine.prefix_reuse = True
    result: dict[str, Any] = {"steps": steps, "step_tokens": step_tokens, "rounds": rounds}
    for mode, sessions in runs.items():
        first = statistics.median(s[0]["seconds"] for s in sessions)
        last = statistics.median(s[-1]["seconds"] for s in sessions)
        result[mode] = {
            "step1_s": first,
            "last_step_s": last,
            "last_over_first": last / first,
            "last_step_prefill_s": statistics.median(s[-1]["prefill_s"] for s in sessions),
            "last_step_input_tokens": sessions[0][-1]["input_length"],
            "last_step_cached_tokens": sessions[0][-1]["cached_tokens"],
            "sessions": sessions,
        }
    result["last_step_speedup"] = result["off"]["last_step_s"] / result["on"]["last_step_s"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 thread, 3 rounds, 5-step sessions")
    parser.add_argument("--model", default="tiny", help="tiny, srm, lrm, a GGUF path or hf://REPO/FILE")
    parser.add_argument("--threads", type=int, default=None, help="threads (all CPUs; --quick 1)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=512, help="prompt tokens per llama_decode (both sides)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per throughput run (128)")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (7)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the prefix-reuse session (10)")
    parser.add_argument("--step-tokens", type=int, default=32)
    parser.add_argument("--session-rounds", type=int, default=None, help="prefix-reuse rounds (3)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    # One thread in --quick: on a shared, busy machine (CI) two llama.cpp threads wait on each other at
    # every barrier and a run can take minutes; the ratio compares both sides at the same thread count.
    args.threads = args.threads or (1 if args.quick else available_cpus())
    args.tokens = args.tokens or (64 if args.quick else 128)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.steps = args.steps or (5 if args.quick else 10)
    args.session_rounds = args.session_rounds or (2 if args.quick else 3)
    args.out = args.out or (QUICK_RESULTS if args.quick else RESULTS)

    from llama_cpp import Llama

    console = Console()
    path = resolve_model_path(args.model)
    console.print(
        f"model {path} ({path.stat().st_size / 2**20:.0f} MiB), {args.threads} threads, ctx {args.ctx}"
    )
    engine = LlamaEngine(
        path, n_ctx=args.ctx, n_threads=args.threads, n_batch=args.batch, model_id=args.model
    )
    # The same context settings as the engine (flash attention included), so only the decode loop differs.
    llm = Llama(
        model_path=str(path),
        n_ctx=args.ctx,
        n_batch=args.batch,
        n_ubatch=args.batch,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        flash_attn=True,
        logits_all=False,
        verbose=False,
    )
    try:
        tput = throughput(engine, llm, tokens=args.tokens, rounds=args.rounds)
        reuse = prefix_reuse(
            engine, steps=args.steps, step_tokens=args.step_tokens, rounds=args.session_rounds
        )
    finally:
        llm.close()
        engine.close()

    table = Table(title=f"tgi-cpu engine vs llama.cpp — {path.name}, {args.threads} threads")
    table.caption = "throughput ratio: median of the per-round engine/plain ratios (the runs alternate)"
    table.add_column("measure")
    table.add_column("median", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row("plain llama.cpp decode (no logprobs)", f"{tput['plain_tok_s_median']:.1f} tok/s", "")
    ok = "[green]" if tput["ratio"] >= tput["target"] else "[red]"
    table.add_row(
        "engine with per-token logprobs",
        f"{tput['engine_tok_s_median']:.1f} tok/s",
        f"{ok}{tput['ratio']:.3f}[/] (target >= {tput['target']})",
    )
    for mode in ("on", "off"):
        m = reuse[mode]
        table.add_row(f"step 1, prefix reuse {mode}", f"{m['step1_s'] * 1000:.0f} ms", "")
        tokens = f"{m['last_step_input_tokens']} prompt tokens, {m['last_step_cached_tokens']} cached"
        table.add_row(
            f"step {args.steps} ({tokens}), reuse {mode}",
            f"{m['last_step_s'] * 1000:.0f} ms",
            f"{m['last_over_first']:.2f}x step 1",
        )
    table.add_row(f"step {args.steps}: reuse off / reuse on", "", f"{reuse['last_step_speedup']:.2f}x")
    console.print(table)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "tgi_cpu",
        "model": args.model,
        "model_file": path.name,
        "threads": args.threads,
        "ctx": args.ctx,
        "batch": args.batch,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "throughput": tput,
        "prefix_reuse": reuse,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    values: dict[str, object] = {
        "engine tok/s": tput["engine_tok_s_median"],
        "plain tok/s": tput["plain_tok_s_median"],
        "engine / plain": tput["ratio"],
        "last step, reuse on": reuse["on"]["last_step_s"],
        "last step, reuse off": reuse["off"]["last_step_s"],
        "last step cached tokens, reuse on": reuse["on"]["last_step_cached_tokens"],
    }
    bad = empty_measurements(values)
    for label in bad:
        console.print(f"[bold red]empty measurement: {label} = {values[label]!r}[/]")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
