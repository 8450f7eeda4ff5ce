"""python -m benchmarks: run every benchmark, write one report (JSON and Markdown).

python -m benchmarks [--runs N] [--only NAME ...] [--out DIR]

Each benchmark runs as its own process (`python -m benchmarks.NAME`), several times; its
printed figures are parsed and reported as the median of the runs, with the spread, and as
ratios where a comparison exists (swarm vs bare SDK calls, cached vs uncached LLM cost).
The report goes to benchmarks/results/<date>-<host>.json and .md, with the command, the
machine (cores, CPU model, Python) and the date. The soak (`benchmarks.soak`) and the
stress run (`benchmarks.stress`) are separate commands: they take minutes and write their
own results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
NUM = r"([-+]?[\d,]*\.?\d+)"


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str
    pattern: str
    unit: str
    target: str = ""


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str
    what: str
    args: tuple[str, ...]
    runs: int
    figures: tuple[Figure, ...]
    timeout_s: float = 900.0


BENCHES = (
    Bench(
        "gateway",
        "paper gateway order round trip",
        ("--orders", "200"),
        3,
        (
            Figure("connect", rf"connect \(handshake \+ full sync\): {NUM} ms", "ms"),
            Figure("round trip p50", rf"p50 {NUM} ms", "ms", "< 5 ms"),
            Figure("round trip p99", rf"p99 {NUM} ms", "ms", "< 20 ms"),
            Figure("max order rate (pacing off)", rf"{NUM} orders/s", "orders/s"),
        ),
    ),
    Bench(
        "gate",
        "pre-trade gate evaluations",
        ("--n", "100000"),
        3,
        (Figure("evaluations", rf"{NUM} evaluations/s", "/s", ">= 20,000/s"),),
    ),
    Bench(
        "swarm",
        "swarm fan-out vs bare SDK (50 instances, 500 ms calls)",
        (),
        3,
        (
            Figure("one call", rf"one call: {NUM} ms", "ms"),
            Figure("50 bare SDK calls", rf"bare SDK calls at once: {NUM} s", "s"),
            Figure("swarm of 50", rf"answered\): {NUM} s", "s"),
            Figure("swarm vs bare", rf"{NUM}% vs bare", "%", "within 10%"),
            Figure("peak RSS", rf"peak RSS: {NUM} MB", "MB"),
        ),
    ),
    Bench(
        "cycle",
        "cycle overhead, 10 symbols, offline provider; RSS of both processes",
        ("--cycles", "120"),
        1,
        (
            Figure("cycle p50", rf"p50 {NUM} ms", "ms"),
            Figure("cycle p95", rf"p95 {NUM} ms", "ms", "< 50 ms"),
            Figure("daemon RSS after 10 cycles", rf"daemon RSS after 10 cycles {NUM} MB", "MB"),
            Figure("daemon RSS growth", rf"daemon RSS .*\({NUM}%", "%", "< 5%"),
            Figure("watchdog RSS after 10 cycles", rf"watchdog RSS after 10 cycles {NUM} MB", "MB"),
            Figure("watchdog RSS growth", rf"watchdog RSS .*\({NUM}%", "%", "< 5%"),
        ),
    ),
    Bench(
        "watchdog",
        "watchdog: SIGKILL of the main loop with 20 positions open",
        (),
        3,
        (
            Figure("SIGKILL -> HALTED", rf"SIGKILL -> breaker HALTED: {NUM} ms", "ms"),
            Figure("SIGKILL -> flat", rf"SIGKILL -> flat at the gateway: {NUM} ms", "ms", "< 1 s"),
            Figure("trip -> flat", rf"trip -> flat: {NUM} ms", "ms", "< 1000 ms"),
        ),
    ),
    Bench(
        "db",
        "database writes through the single writer",
        ("--runs", "1"),
        3,
        (
            Figure("queued writes", rf"{NUM} writes/s \(median", "writes/s"),
            Figure("awaited write p50", rf"awaited writes .*p50 {NUM} ms", "ms"),
            Figure("awaited write p99", rf"awaited writes .*p99 {NUM} ms", "ms"),
        ),
    ),
    Bench(
        "cli",
        "CLI start-up (new process each)",
        ("--runs", "3"),
        1,
        (
            Figure("python -c pass", rf"python -c pass: {NUM} ms", "ms"),
            Figure("--help", rf"runtime --help: {NUM} ms", "ms"),
            Figure("status", rf"runtime status: {NUM} ms", "ms"),
            Figure("breaker", rf"runtime breaker: {NUM} ms", "ms"),
        ),
    ),
    Bench(
        "llm_cost",
        "LLM cost per cycle (local API server, real SDK)",
        (),
        1,
        (
            Figure(
                "10 instances cached+warm-up / uncached",
                rf" 10 instances, cached \+ warm-up: .* = {NUM}% of uncached",
                "%",
            ),
            Figure(
                "50 instances cached+warm-up / uncached",
                rf" 50 instances, cached \+ warm-up: .* = {NUM}% of uncached",
                "%",
                "<= 40%",
            ),
            Figure(
                "50 instances cached all at once / uncached",
                rf" 50 instances, cached, all at once: .* = {NUM}% of uncached",
                "%",
            ),
            Figure("50 instances uncached $/cycle", rf" 50 instances, .* vs \${NUM} uncached", "$"),
            Figure(
                "50 instances cached+warm-up $/cycle",
                rf" 50 instances, cached \+ warm-up: \${NUM}",
                "$",
            ),
        ),
    ),
)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _run(bench: Bench, runs: int) -> dict[str, Any]:
    values: dict[str, list[float]] = {f.name: [] for f in bench.figures}
    failures: list[str] = []
    walls = []
    last = ""
    for i in range(runs):
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", f"benchmarks.{bench.name}", *bench.args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=bench.timeout_s,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"run {i + 1}: timed out after {bench.timeout_s:g}s")
            continue
        walls.append(time.monotonic() - t0)
        last = done.stdout
        if done.returncode != 0:
            failures.append(f"run {i + 1}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
            continue
        for f in bench.figures:
            m = re.search(f.pattern, done.stdout)
            if m:
                values[f.name].append(float(m.group(1).replace(",", "")))
            else:
                failures.append(f"run {i + 1}: {f.name!r} not found in the output")
    figures = []
    for f in bench.figures:
        v = values[f.name]
        figures.append(
            {
                "name": f.name,
                "unit": f.unit,
                "target": f.target,
                "median": statistics.median(v) if v else None,
                "min": min(v) if v else None,
                "max": max(v) if v else None,
                "runs": v,
            }
        )
    return {
        "name": bench.name,
        "what": bench.what,
        "command": " ".join(["python -m", f"benchmarks.{bench.name}", *bench.args]),
        "runs": runs,
        "wall_s": [round(w, 1) for w in walls],
        "figures": figures,
        "failures": failures,
        "last_output": last,
    }


def _ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def med(bench: str, name: str) -> float | None:
        for r in results:
            if r["name"] == bench:
                for f in r["figures"]:
                    if f["name"] == name:
                        return f["median"]  # type: ignore[no-any-return]
        return None

    out = []
    for label, a, b, target in (
        (
            "swarm / 50 bare SDK calls",
            ("swarm", "swarm of 50"),
            ("swarm", "50 bare SDK calls"),
            "<= 1.10",
        ),
        (
            "LLM $/cycle, 50 instances, cached / uncached",
            ("llm_cost", "50 instances cached+warm-up $/cycle"),
            ("llm_cost", "50 instances uncached $/cycle"),
            "<= 0.40",
        ),
        ("CLI status / python -c pass", ("cli", "status"), ("cli", "python -c pass"), ""),
    ):
        x, y = med(*a), med(*b)
        if x is not None and y:
            out.append({"ratio": label, "value": round(x / y, 3), "target": target})
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _soak_and_stress(directory: str) -> list[str]:
    out = []
    for path in sorted(Path(directory).glob("soak-*.json")):
        r = json.loads(path.read_text())
        growth = ", ".join(
            f"{role} RSS {p['growth'].get('rss_growth_pct', '-')}% over "
            f"{p['growth'].get('over_s', '-')} s"
            for role, p in r["processes"].items()
        )
        out.append(
            f"- `{path.name}`: seed {r['seed']}, {r['duration_s'] / 60:.1f} min, "
            f"{len(r['faults'])} faults, {len(r['trips'])} trips "
            f"({sum(1 for t in r['trips'] if not t['explained_by'])} unexplained), books "
            f"balance: {r['books_balance']}, {growth}; ok: {r['ok']}"
        )
    for path in sorted(Path(directory).glob("stress-*.json")):
        f = json.loads(path.read_text())
        out.append(
            f"- `{path.name}`: accepted {f['accepted_per_s']}/s, refused {f['refused_per_s']}/s "
            f"({f['refusals_unrecorded']} unrecorded), most sent in 1 s "
            f"{f['max_sent_in_any_1s']} (limit {f['limits']['max_orders_per_second']}), error "
            f"100: {f['error_100']}, cancel to Cancelled median "
            f"{f['cancel_to_cancelled_s_median']} s, heartbeat max age "
            f"{f['heartbeat_max_age_s']} s"
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Benchmarks {report['date']}",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['host']}, {m['cores']} cores, {m['cpu']}, Python {m['python']}, "
        f"{m['platform']}; load average at start {m['load_avg_at_start']}",
        f"- date: {report['date']}; each figure is the median of the runs shown (min-max)",
        "",
        "| benchmark | figure | median | min-max | runs | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["benchmarks"]:
        for f in r["figures"]:
            lines.append(
                f"| {r['name']} | {f['name']} | {_fmt(f['median'])} {f['unit']} | "
                f"{_fmt(f['min'])}-{_fmt(f['max'])} | {len(f['runs'])} | {f['target']} |"
            )
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    for x in report["ratios"]:
        lines.append(f"| {x['ratio']} | {x['value']} | {x['target']} |")
    failures = [f"{r['name']}: {f}" for r in report["benchmarks"] for f in r["failures"]]
    if failures:
        lines += ["", "Failures:", *[f"- {f}" for f in failures]]
    extra = _soak_and_stress(report.get("results_dir", str(RESULTS)))
    if extra:
        lines += [
            "",
            "Soak and stress (their own commands; latest results in this directory):",
            *extra,
        ]
    lines += ["", "Commands:", *[f"- `{r['command']}` ({r['what']})" for r in report["benchmarks"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="runs of each (default: per benchmark)")
    p.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks of today's report for this host (rerun a few)",
    )
    args = p.parse_args()
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "date": started.isoformat(timespec="seconds"),
        "machine": _machine(),
        "benchmarks": [],
    }
    for bench in BENCHES:
        if args.only and bench.name not in args.only:
            continue
        print(f"== {bench.name}: {bench.what}", flush=True)
        result = _run(bench, args.runs or bench.runs)
        report["benchmarks"].append(result)
        for f in result["figures"]:
            print(f"   {f['name']}: {_fmt(f['median'])} {f['unit']} {f['runs']}", flush=True)
        for failure in result["failures"]:
            print(f"   ! {failure}", flush=True)
    report["duration_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{started.date().isoformat()}-{platform.node()}"
    if args.merge and Path(f"{stem}.json").exists():
        old = json.loads(Path(f"{stem}.json").read_text())
        fresh = {r["name"]: r for r in report["benchmarks"]}
        report["benchmarks"] = [fresh.pop(r["name"], r) for r in old["benchmarks"]]
        report["benchmarks"] += list(fresh.values())
        report["command"] = f"{old['command']}; {report['command']}"
    report["ratios"] = _ratios(report["benchmarks"])
    report["results_dir"] = str(args.out)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    Path(f"{stem}.md").write_text(md)
    print()
    print(md)
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
