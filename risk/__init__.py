"""Risk decisions: the freshness gate, limits, the duplicate-close guard, the monitor's rules,
today's P&L and the kill switch's wind-down planner.

Everything here is pure: plain functions and small state machines over
snapshots the caller reads, no Redis, Ray or venue I/O. The hosts do the
reading and the acting: ``actors.risk_monitor`` runs the rules on a timer,
``actors.kill_switch`` carries out the wind-down ``kill_switch.plan_wind_down``
plans (deciding as ``kill_run`` says), ``actors.gate_inputs`` reads the
gate's inputs, and ``core.store.RedisStore`` keeps the kill records and the
day P&L baselines.

In the order path (``actors.strategy_host``), call the gate first and the limits second::

    inputs = await read_gate_inputs(store, control_state, venue, strategy_id,
                                    last_market_data_ms, now_ms)
    reasons = freshness_gate.check(intent, inputs, cfg) or pre_trade.check(intent, pre_inputs, cfg)
    if reasons:
        return deny(intent, reasons, ts_ms=now_ms, checked_by=host_name)
"""

# The folder sits at the repository root but installs as tradetree.risk; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.risk":
    raise ImportError(f"import tradetree.risk, not {__name__}")

from tradetree.risk.config import RiskConfig, instrument_key
from tradetree.risk.day_pnl import candidate_baselines, utc_day
from tradetree.risk.freshness_gate import GateInputs, applicable_breakers, deny, unknown_inputs, unknown_reason
from tradetree.risk.freshness_gate import check as check_freshness
from tradetree.risk.kill_run import (
    VENUE_RESIDUAL_PREFIX,
    LeaseVerdict,
    StepRefused,
    action_phase,
    classify_failure,
    clip_refusal,
    done_note,
    global_kill_targets,
    iteration_cap,
    lease_verdict,
    next_delay,
    pending_kills,
    plan_progress,
    scope_residual,
    stall_reason,
    start_run,
    stuck_reason,
    timeout_reason,
)
from tradetree.risk.kill_switch import (
    CancelOrders,
    KillPhase,
    KillProgress,
    KillState,
    KillStep,
    KillSwitchConfig,
    StepOutcome,
    SubmitClip,
    kill_scope,
    order_is_settled,
    plan_wind_down,
)
from tradetree.risk.monitor import (
    UnreadableOrderEvent,
    batch_caught_up,
    loop_fresh_probe,
    loss_limits_set,
    needs_strategy_states,
    parse_order_event,
    pause_reason,
    should_persist_cursor,
)
from tradetree.risk.pre_trade import PreTradeInputs, duplicate_close_reasons, fmt_decimal, in_flight_size, limit_reasons
from tradetree.risk.pre_trade import check as check_pre_trade
from tradetree.risk.pre_trade_inputs import (
    DAILY_PNL_UNKNOWN,
    choose_marks,
    explain,
    input_needs,
    loss_scope,
    mark_keys,
    mark_unknown_reason,
    pending_by_instrument,
)
from tradetree.risk.root_supervision import (
    ROOT_ALERT_KEY,
    RootAlarm,
    RootAlert,
    RootLatch,
    parse_heartbeat_ms,
    root_alarm_step,
    root_heartbeat_age_secs,
    root_unsupervised_reason,
)
from tradetree.risk.rules import (
    GLOBAL_LOSS,
    GLOBAL_NOTIONAL,
    ExposureMonitor,
    FlipDetector,
    LossMonitor,
    RejectionStreak,
    Trip,
    breaker_alert,
    daily_pnl_by_strategy,
    pause_targets,
    paused_summary,
    rejection_streak_of,
    strategy_breaker,
)
from tradetree.risk.strategy_states import (
    SUPERVISOR,
    StartPlan,
    host_probes,
    kill_switch_owns,
    pause_plan,
    pause_source,
    start_plan,
    supervisor_may_release,
    unreadable_states,
)

__all__ = [
    "check_freshness",
    "check_pre_trade",
    "GLOBAL_LOSS",
    "GLOBAL_NOTIONAL",
    "ExposureMonitor",
    "FlipDetector",
    "GateInputs",
    "LossMonitor",
    "PreTradeInputs",
    "RejectionStreak",
    "RiskConfig",
    "Trip",
    "applicable_breakers",
    "daily_pnl_by_strategy",
    "deny",
    "duplicate_close_reasons",
    "in_flight_size",
    "instrument_key",
    "limit_reasons",
    "strategy_breaker",
    "unknown_inputs",
    "unknown_reason",
    "CancelOrders",
    "DAILY_PNL_UNKNOWN",
    "KillPhase",
    "KillProgress",
    "KillState",
    "KillStep",
    "KillSwitchConfig",
    "LeaseVerdict",
    "SUPERVISOR",
    "StartPlan",
    "StepOutcome",
    "StepRefused",
    "SubmitClip",
    "UnreadableOrderEvent",
    "action_phase",
    "batch_caught_up",
    "breaker_alert",
    "candidate_baselines",
    "choose_marks",
    "classify_failure",
    "clip_refusal",
    "done_note",
    "explain",
    "fmt_decimal",
    "global_kill_targets",
    "host_probes",
    "input_needs",
    "iteration_cap",
    "kill_scope",
    "kill_switch_owns",
    "lease_verdict",
    "loop_fresh_probe",
    "loss_limits_set",
    "loss_scope",
    "mark_keys",
    "mark_unknown_reason",
    "needs_strategy_states",
    "next_delay",
    "order_is_settled",
    "parse_order_event",
    "pause_plan",
    "pause_reason",
    "pause_source",
    "pause_targets",
    "paused_summary",
    "pending_by_instrument",
    "VENUE_RESIDUAL_PREFIX",
    "pending_kills",
    "scope_residual",
    "plan_progress",
    "plan_wind_down",
    "rejection_streak_of",
    "should_persist_cursor",
    "stall_reason",
    "start_plan",
    "start_run",
    "stuck_reason",
    "supervisor_may_release",
    "unreadable_states",
    "timeout_reason",
    "utc_day",
    "ROOT_ALERT_KEY",
    "RootAlarm",
    "RootAlert",
    "RootLatch",
    "parse_heartbeat_ms",
    "root_alarm_step",
    "root_heartbeat_age_secs",
    "root_unsupervised_reason",
]
