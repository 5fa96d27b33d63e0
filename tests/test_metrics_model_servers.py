"""The model servers' section of the Prometheus snapshot (crafted snapshots, no Ray)."""

from __future__ import annotations

from tests.test_metrics import parse, scrape, value
from tradetree.telemetry.gather import actor_ids

COMPONENTS = {"strategies": {"VSD_BTC": "okx"}, "model_servers": {"vol_btc": "ModelServer[vol_btc]",
                                                                  "vol_eth": "ModelServer[vol_eth]"}}


def _snapshot(stats: dict) -> dict:
    return {"ts_ms": 1_700_000_000_000, "gather_secs": 0.01, "components": COMPONENTS, "stats": stats,
            "up": {name: name in stats for name in actor_ids(COMPONENTS)}}


def test_the_exporter_reads_every_model_server():
    assert actor_ids(COMPONENTS)[-2:] == ["ModelServer[vol_btc]", "ModelServer[vol_eth]"]


def test_state_predictions_and_failed_batches_per_model():
    stats = {"ModelServer[vol_btc]": {"name": "vol_btc", "state": "serving", "version": "v3",
                                      "predictions_served": 1234, "batches_failed": 2}}
    samples = parse(scrape(_snapshot(stats)))
    assert value(samples, "tradetree_model_server_state", model="vol_btc", state="serving") == 1
    assert value(samples, "tradetree_model_server_state", model="vol_btc", state="stopped") == 0
    assert value(samples, "tradetree_model_server_predictions_total", model="vol_btc") == 1234
    assert value(samples, "tradetree_model_server_batches_failed_total", model="vol_btc") == 2
    # vol_eth did not answer: no samples of its own, only its "up" gauge says so
    assert not [k for k in samples if ("model", "vol_eth") in k[1]]
    assert value(samples, "tradetree_up", component="ModelServer[vol_eth]") == 0


def test_an_unknown_state_is_no_label():
    stats = {"ModelServer[vol_btc]": {"state": "weird <free text>", "predictions_served": 0, "batches_failed": 0}}
    samples = parse(scrape(_snapshot(stats)))
    states = {dict(labels)["state"]: v for name, labels in samples if name == "tradetree_model_server_state"
              for v in [samples[(name, labels)]]}
    assert states == {"unstarted": 0, "serving": 0, "stopped": 0}
