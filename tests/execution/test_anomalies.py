"""Which findings are alerted now: anomaly dedup and the poll outage alert."""

from __future__ import annotations

from tradetree.execution.anomalies import PollHealth, PollHealthAlert, dedup_anomalies, step_poll_health


def test_an_anomaly_is_alerted_when_it_appears_or_changes_not_while_it_persists():
    first = dedup_anomalies({}, {"c1": "over applied"}, {"c1": "over_applied"})
    assert first.fresh == {"c1": "over applied"}
    again = dedup_anomalies(first.remembered, {"c1": "over applied"}, {"c1": "over_applied"})
    assert again.fresh == {}
    changed = dedup_anomalies(again.remembered, {"c1": "over applied by 2"}, {"c1": "over_applied"})
    assert changed.fresh == {"c1": "over applied by 2"}


def test_a_failed_lookup_is_no_all_clear_but_a_clean_cycle_is():
    seen = dedup_anomalies({}, {"c1": "unknown at venue"}, {"c1": "unknown_at_venue"}).remembered
    blind = dedup_anomalies(seen, {}, {"c1": "lookup_failed"})
    assert blind.fresh == {} and blind.remembered == {"c1": "unknown at venue"}
    back = dedup_anomalies(blind.remembered, {"c1": "unknown at venue"}, {"c1": "unknown_at_venue"})
    assert back.fresh == {}  # the same anomaly after the blind cycle: not alerted twice
    cleared = dedup_anomalies(back.remembered, {}, {"c1": "open"})
    assert cleared.remembered == {}
    assert dedup_anomalies(cleared.remembered, {"c1": "unknown at venue"}, {}).fresh == {"c1": "unknown at venue"}


def test_a_poll_outage_is_alerted_once_at_the_threshold_and_its_end_once():
    state, alerts = PollHealth(), []
    for ok in (False, False, False, False, True, True):
        step = step_poll_health(state, ok, alert_cycles=3)
        state = step.state
        alerts.append((step.alert, step.failures))
    assert alerts == [
        (PollHealthAlert.NONE, 1), (PollHealthAlert.NONE, 2), (PollHealthAlert.FAILING, 3),
        (PollHealthAlert.NONE, 4), (PollHealthAlert.RECOVERED, 4), (PollHealthAlert.NONE, 0),
    ]


def test_a_short_outage_below_the_threshold_ends_silently():
    step = step_poll_health(PollHealth(failures_in_row=1), False, alert_cycles=3)
    assert step.alert is PollHealthAlert.NONE
    end = step_poll_health(step.state, True, alert_cycles=3)
    assert end.alert is PollHealthAlert.NONE and end.state == PollHealth()
