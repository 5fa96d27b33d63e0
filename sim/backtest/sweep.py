"""Parameter sweeps: many backtests as Ray tasks, ranked, the best re-run on held-out data.

The data is split in time: the first ``1 - holdout_fraction`` of the candles
is the **in-sample** period every parameter set is backtested on; the rest is
the **held-out** period, never seen while ranking. The ``top`` sets by the
ranking metric are then backtested on the held-out period (with
``warmup_bars`` candles before it to warm the strategy's indicators; intents
during warm-up are dropped). Comparing the two columns shows how much of the
in-sample result was fitted to noise.

Parameter specs (``--grid`` on the command line), one per parameter:
``name=v1,v2,v3`` (choices; each value parsed as YAML, so ``1``, ``0.5``,
``true`` and ``"1"`` keep their types) or ``name=lo..hi`` (a range, random
search only: integers if both ends are integers, else uniform floats).
Without ``random`` every combination of the choices runs; with ``random=N``, N
distinct combinations are drawn with the sweep's seed.

The tasks run on a local Ray started for the sweep, or on an existing cluster
(``address``) so that a sweep can use many machines; the result records the
nodes its tasks ran on.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tradetree.core import ConfigError, ControlError, StrategyConfig, TradetreeError
from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.data import CandleSeries, align_series
from tradetree.sim.backtest.engine import prepare_data
from tradetree.sim.backtest.prepare import PreparedMarket

__all__ = [
    "ParamRange",
    "SweepSpec",
    "SweepRow",
    "SweepResult",
    "parse_param_spec",
    "parameter_sets",
    "run_sweep",
    "RANK_METRICS",
    "sweep_markdown",
    "sweep_rows_for_csv",
    "where_it_ran",
    "SWEEP_NAMESPACE",
]

# Sweep tasks are anonymous, so any namespace works; a fixed one keeps them out of the tree's.
SWEEP_NAMESPACE = "tradetree-sweep"

RANK_METRICS = ("sharpe", "sortino", "net_pnl", "return_pct", "profit_factor", "win_rate")


@dataclass(frozen=True)
class ParamRange:
    lo: float
    hi: float
    integer: bool


@dataclass(frozen=True)
class SweepSpec:
    """Choices and ranges per parameter; ``random`` = how many sets to draw (None: the full grid)."""

    choices: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, ParamRange] = field(default_factory=dict)
    random: int | None = None
    seed: int = 1


def parse_param_spec(spec: str) -> tuple[str, list[Any] | ParamRange]:
    """``'name=v1,v2'`` -> ``(name, [v1, v2])``; ``'name=lo..hi'`` -> ``(name, ParamRange)``.

    Raises:
        ConfigError: no ``=``, an empty name or value list, or a bad range.
    """
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise ConfigError(f"parameter spec {spec!r}: expected name=v1,v2,... or name=lo..hi")
    if ".." in values and "," not in values:
        lo_text, hi_text = values.split("..", 1)
        try:
            lo, hi = yaml.safe_load(lo_text), yaml.safe_load(hi_text)
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) or lo > hi:
                raise ValueError
        except (ValueError, yaml.YAMLError):
            raise ConfigError(f"parameter spec {spec!r}: a range needs two numbers lo..hi with lo <= hi") from None
        return name, ParamRange(float(lo), float(hi), isinstance(lo, int) and isinstance(hi, int))
    try:
        parsed = [yaml.safe_load(v.strip()) for v in values.split(",") if v.strip()]
    except yaml.YAMLError as exc:
        raise ConfigError(f"parameter spec {spec!r}: {exc}") from None
    if not parsed:
        raise ConfigError(f"parameter spec {spec!r}: no values")
    return name, parsed


def parameter_sets(spec: SweepSpec) -> list[dict[str, Any]]:
    """The parameter sets to run, deterministic for ``spec.seed``.

    Raises:
        ConfigError: ranges without ``random``, or nothing to sweep.
    """
    if not spec.choices and not spec.ranges:
        raise ConfigError("nothing to sweep: give at least one parameter")
    if spec.random is None:
        if spec.ranges:
            raise ConfigError(f"ranges ({', '.join(spec.ranges)}) need random search (--random N)")
        names = list(spec.choices)
        return [dict(zip(names, combo)) for combo in itertools.product(*(spec.choices[n] for n in names))]
    rng = random.Random(spec.seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    total = math.prod(len(v) for v in spec.choices.values()) if not spec.ranges else None
    wanted = spec.random if total is None else min(spec.random, total)
    attempts = 0
    while len(out) < wanted and attempts < 100 * max(wanted, 1):
        attempts += 1
        params: dict[str, Any] = {n: rng.choice(v) for n, v in spec.choices.items()}
        for n, r in spec.ranges.items():
            params[n] = rng.randint(int(r.lo), int(r.hi)) if r.integer else rng.uniform(r.lo, r.hi)
        key = repr(sorted(params.items()))
        if key not in seen:
            seen.add(key)
            out.append(params)
    return out


@dataclass(frozen=True)
class SweepRow:
    """One parameter set: its in-sample metrics, and held-out metrics if it made the top."""

    params: dict[str, Any]
    in_sample: dict[str, Any] | None
    held_out: dict[str, Any] | None = None
    error: str = ""


@dataclass(frozen=True)
class SweepResult:
    """Rows ranked by ``metric`` (best first; failed and undefined ones last)."""

    strategy_id: str
    metric: str
    rows: list[SweepRow]
    split_ms: int
    in_sample_bars: int
    held_out_bars: int
    top: int
    elapsed_secs: float
    task_cpu_secs: float = 0.0  # CPU time of every task together (the sweep's CPU use over its wall time)
    tasks_per_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> backtest tasks it ran
    ray_address: str = ""  # the cluster attached to; "" for a local Ray (or the one already running)

    def top_rows(self) -> list[SweepRow]:
        return [r for r in self.rows if r.held_out is not None]

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.tasks_per_node))

    @property
    def backtests(self) -> int:
        return sum(self.tasks_per_node.values())


def where_it_ran(result: SweepResult) -> str:
    """``'ran 24 backtests on 3 nodes of the Ray cluster at HOST:PORT'``."""
    n = len(result.tasks_per_node)
    where = f"of the Ray cluster at {result.ray_address}" if result.ray_address else "of the local Ray"
    return f"ran {result.backtests} backtests on {n} node{'' if n == 1 else 's'} {where}"


def _backtest_task(strategy_config: dict, params: dict,
                   window: tuple[dict[str, CandleSeries], PreparedMarket | None],
                   config: dict, trade_from_ms: int | None) -> dict:
    """One backtest (runs in a Ray worker): metrics, or the error that stopped it.

    ``window`` is the candles and their preparation, made once by the driver and read from Ray's
    object store: the arrays are views of the shared memory, not copies.
    """
    from tradetree.sim.backtest.engine import run_backtest

    series, prepared = window
    cpu0 = time.process_time()
    try:
        sc = StrategyConfig.model_validate({**strategy_config, "params": {**strategy_config["params"], **params}})
        result = run_backtest(sc, series, BacktestConfig.model_validate(config), trade_from_ms=trade_from_ms,
                              prepared=prepared)
    except (TradetreeError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "cpu_secs": time.process_time() - cpu0}
    return {"metrics": result.metrics.as_dict(), "run_secs": result.timings.get("run_secs", 0.0),
            "prep_secs": result.timings.get("prep_secs", 0.0), "cpu_secs": time.process_time() - cpu0}


def _backtest_on_node(*args: Any) -> dict:
    """``_backtest_task`` and the Ray node it ran on: the proof that a sweep used the cluster."""
    import ray

    return {**_backtest_task(*args), "node_id": ray.get_runtime_context().get_node_id()}


def _node_deal() -> list[Any]:
    """Scheduling strategies to deal tasks round-robin over the nodes, one turn per CPU; [] for one node.

    Left to itself Ray keeps handing short tasks to the first worker that is up (it reuses the
    lease) while the other nodes are still starting theirs: 12 tasks over two 1-CPU nodes ran 11
    and 1. Soft affinity that spills when its node is full keeps the deal a preference: a busy,
    dead or removed node's tasks run elsewhere instead of waiting for it.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cpus = {n["NodeID"]: int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")}
    cpus = {node: c for node, c in cpus.items() if c >= 1}
    if len(cpus) < 2:
        return []
    order = [node for turn in range(max(cpus.values())) for node, c in sorted(cpus.items()) if c > turn]
    try:
        return [NodeAffinitySchedulingStrategy(node, soft=True, _spill_on_unavailable=True) for node in order]
    except TypeError:  # a Ray without the (private) spill option: let its scheduler spread instead
        return ["SPREAD"]


def _unreachable_driver(address: str | None, auth: str, exc: BaseException) -> ControlError:
    """Why a cluster's workers found this (live) driver, the owner of the candles, "dead"."""
    causes = ["the cluster's nodes cannot connect back to this machine (run the sweep on a node of the cluster)"]
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":  # attach_ray sets it when it finds a token
        # A driver with token auth on refuses the workers of a cluster without it, which send none.
        causes.insert(0, "the cluster runs without token authentication while this process uses a token: set "
                         "RAY_AUTH_MODE=disabled here, or start the cluster with the same token")
    return ControlError(f"the workers of the Ray cluster at {address} could not read the candles from this process "
                        f"({type(exc).__name__}; auth: {auth}). Likely: " + "; or ".join(causes) + ".")


def _sort_key(metric: str) -> Callable[[SweepRow], tuple]:
    def key(row: SweepRow) -> tuple:
        value = (row.in_sample or {}).get(metric)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return (1, 0.0)
        return (0, -float(value))

    return key


def run_sweep(
    strategy_config: StrategyConfig,
    data: CandleSeries | Mapping[str, CandleSeries],
    config: BacktestConfig,
    spec: SweepSpec,
    *,
    holdout_fraction: float = 0.25,
    top: int = 5,
    metric: str = "sharpe",
    warmup_bars: int = 500,
    num_cpus: int = 2,
    progress: Callable[[int, int], None] | None = None,
    address: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    attach_timeout_secs: float = 30.0,
) -> SweepResult:
    """Backtest every parameter set of ``spec`` in-sample as Ray tasks, rank, re-run the ``top`` held-out.

    Uses the Ray this process is already attached to, if any. Otherwise, with
    ``address`` (a cluster's GCS ``host:port``), attaches to that cluster for
    the sweep and disconnects after, leaving the cluster running; without it,
    starts a local Ray of ``num_cpus`` (``$RAY_ADDRESS`` is not consulted here:
    the CLI resolves it) and shuts it down again. ``runtime_env`` is given to
    every task (Ray's task-level runtime env: ``pip``, ``env_vars``, remote
    ``working_dir``/``py_modules`` URIs; Ray uploads local directories only at
    ``ray.init``, which ``attach_ray`` does not take). ``progress(done, total)``
    is called as tasks finish. The two windows (in-sample, and held-out with its
    warm-up) are prepared once here and put in the object store; every task
    reads them from there.

    Raises:
        ConfigError: a bad metric, fraction, spec or runtime env, or data too short to split.
        ControlError: ``address`` cannot be attached to within ``attach_timeout_secs``.
    """
    import ray

    if metric not in RANK_METRICS:
        raise ConfigError(f"unknown ranking metric {metric!r} (use one of {', '.join(RANK_METRICS)})")
    if not 0 < holdout_fraction < 1:
        raise ConfigError("holdout_fraction must be between 0 and 1")
    if top < 1:
        raise ConfigError("top must be at least 1")
    sets = parameter_sets(spec)
    if isinstance(data, CandleSeries):
        if len(strategy_config.symbols) != 1:
            raise ConfigError("give one candle series per symbol")
        data = {strategy_config.symbols[0]: data}
    try:
        series = align_series(dict(data))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    n = len(next(iter(series.values())))
    split = int(round(n * (1 - holdout_fraction)))
    if split < 2 or n - split < 2:
        raise ConfigError(f"{n} candles cannot be split {1 - holdout_fraction:.0%} / {holdout_fraction:.0%}")
    split_ms = int(next(iter(series.values())).ts_ms[split])
    task = ray.remote(num_cpus=1)(_backtest_on_node)
    if runtime_env:
        try:  # Ray validates here, before anything is started or attached to
            task = task.options(runtime_env=runtime_env)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"runtime env {runtime_env!r}: {exc}") from None
    t0 = time.perf_counter()
    started = attached = False
    auth = ""
    if not ray.is_initialized():
        if address:
            from tradetree.supervisor import attach_ray

            # Never num_cpus: a cluster's resources are its own (Ray refuses them when attaching).
            auth = attach_ray(address, SWEEP_NAMESPACE, timeout_secs=attach_timeout_secs)
            attached = True
        else:
            # "local" so that a $RAY_ADDRESS in the environment cannot turn this into an attach.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            started = True
    try:
        start = max(0, split - warmup_bars)
        windows = {}
        for name, (lo, hi) in {"in_sample": (0, split), "held_out": (start, None)}.items():
            window = {k: s.slice(lo, hi) for k, s in series.items()}
            try:
                prepared = prepare_data(strategy_config, window, config)
            except (TradetreeError, ValueError):
                prepared = None  # every task reports the error itself
            windows[name] = ray.put((window, prepared))
        sc = strategy_config.model_dump(mode="json", by_alias=True)
        cfg = config.model_dump(mode="json")
        total = len(sets) + min(top, len(sets))
        done = [0]
        deal = itertools.cycle(_node_deal() or [None])

        def submit(params: dict, window: Any, trade_from_ms: int | None) -> Any:
            strategy = next(deal)
            t = task if strategy is None else task.options(scheduling_strategy=strategy)
            return t.remote(sc, params, window, cfg, trade_from_ms)

        def collect(refs: list) -> list[dict]:
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done[0] += len(ready)
                if progress is not None:
                    progress(done[0], total)
            try:
                return ray.get(list(refs))
            except ray.exceptions.OwnerDiedError as exc:
                if not attached:
                    raise
                raise _unreachable_driver(address, auth, exc) from None

        in_sample = collect([submit(p, windows["in_sample"], None) for p in sets])
        rows = [SweepRow(p, r.get("metrics"), None, r.get("error", "")) for p, r in zip(sets, in_sample)]
        rows.sort(key=_sort_key(metric))
        best = [r for r in rows if r.in_sample is not None][:top]
        held = collect([submit(r.params, windows["held_out"], split_ms) for r in best])
        cpu = sum(r.get("cpu_secs", 0.0) for r in in_sample + held)
        per_node = dict(Counter(r["node_id"] for r in in_sample + held))
        evaluated = {id(r): h for r, h in zip(best, held)}
        rows = [
            SweepRow(r.params, r.in_sample, evaluated[id(r)].get("metrics"), evaluated[id(r)].get("error", r.error))
            if id(r) in evaluated else r
            for r in rows
        ]
    finally:
        # In a driver attached to a cluster, ray.shutdown() only disconnects: the cluster runs on.
        if started or attached:
            ray.shutdown()
    return SweepResult(strategy_config.id, metric, rows, split_ms, split, n - split, top, time.perf_counter() - t0,
                       task_cpu_secs=cpu, tasks_per_node=per_node, ray_address=(address or "") if attached else "")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def sweep_markdown(result: SweepResult, *, rows: int = 30) -> str:
    """The ranking and the in-sample vs held-out table, as Markdown."""
    m = result.metric
    per_node = ", ".join(f"`{node[:12]}` {count}" for node, count in sorted(result.tasks_per_node.items()))
    lines = [
        f"# Sweep: {result.strategy_id}",
        "",
        f"{len(result.rows)} parameter sets, ranked by in-sample `{m}` on {result.in_sample_bars} bars; the top "
        f"{len(result.top_rows())} re-run on the held-out {result.held_out_bars} bars from {result.split_ms} "
        f"({result.elapsed_secs:.1f} s).",
        "",
        f"The sweep {where_it_ran(result)} (backtests per node: {per_node}).",
        "",
        "## In-sample vs held-out (overfitting check)",
        "",
        f"| rank | params | in-sample {m} | held-out {m} | in-sample net P&L | held-out net P&L | "
        "in-sample trips | held-out trips |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rank, r in enumerate(result.rows, start=1):
        if r.held_out is None:
            continue
        i, h = r.in_sample or {}, r.held_out or {}
        lines.append(f"| {rank} | `{r.params}` | {_fmt(i.get(m))} | {_fmt(h.get(m))} | {_fmt(i.get('net_pnl'))} | "
                     f"{_fmt(h.get('net_pnl'))} | {_fmt(i.get('round_trips'))} | {_fmt(h.get('round_trips'))} |")
    top = result.top_rows()
    ins: list[float] = [r.in_sample[m] for r in top if r.in_sample and r.in_sample.get(m) is not None]
    outs: list[float] = [r.held_out[m] for r in top if r.held_out and r.held_out.get(m) is not None]
    if ins and outs:
        lines += ["", f"Mean `{m}` of the top sets: in-sample {_fmt(sum(ins) / len(ins))}, held-out "
                      f"{_fmt(sum(outs) / len(outs))}."]
    lines += ["", "## Ranking (in-sample)", "", f"| rank | params | {m} | net P&L | round trips | error |",
              "|---:|---|---:|---:|---:|---|"]
    for rank, r in enumerate(result.rows[:rows], start=1):
        i = r.in_sample or {}
        lines.append(f"| {rank} | `{r.params}` | {_fmt(i.get(m))} | {_fmt(i.get('net_pnl'))} | "
                     f"{_fmt(i.get('round_trips'))} | {r.error} |")
    return "\n".join(lines) + "\n"


def sweep_rows_for_csv(result: SweepResult) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of ``sweep.csv``: one row per parameter set, in rank order."""
    names = sorted({k for r in result.rows for k in r.params})
    keys = ("sharpe", "sortino", "net_pnl", "return_pct", "max_drawdown_pct", "win_rate", "round_trips", "fees")
    header = ["rank", *names, *(f"is_{k}" for k in keys), *(f"ho_{k}" for k in keys), "error"]
    out: list[list[Any]] = []
    for rank, r in enumerate(result.rows, start=1):
        i, h = r.in_sample or {}, r.held_out or {}
        out.append([rank, *(r.params.get(n, "") for n in names), *(i.get(k, "") for k in keys),
                    *(h.get(k, "") if r.held_out is not None else "" for k in keys), r.error])
    return header, out

