"""h5py reads what wsdscope records.

Runs the real `wsdscope` binary (WSDSCOPE_BIN, default target/release/wsdscope), captures the
events it streams with --jsonl, and checks the session file with h5py against them: the
documented groups, datasets, attributes and event log (docs/session-format.md). Also SIGKILLs a
recording and opens what is left with h5py (swmr=True).
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("WSDSCOPE_BIN", str(ROOT / "target" / "release" / "wsdscope"))
SMALL = ["--hidden", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1", "--ffn", "64",
         "--vocab", "64", "--seq", "16", "--batch", "4", "--threads", "1"]


def record(out, *extra):
    cmd = [BIN, "record", "--out", str(out), *SMALL, "--jsonl", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def test_h5py_reads_runs_metrics_and_attributes(tmp_path):
    f = tmp_path / "s.h5"
    events = record(f, "--steps", "40", "--eval-every", "10", "--probe-every", "5")
    steps = [e for e in events if e["type"] == "step"]
    evals = [e for e in events if e["type"] == "eval"]
    start = events[0]
    assert start["type"] == "run_start"

    with h5py.File(f, "r", swmr=True) as h:
        assert h.attrs["format_version"] == 2
        assert h.attrs["event_schema_version"] == 1
        assert str(h.attrs["producer"]).startswith("wsdscope ")
        config = json.loads(h.attrs["config"])
        assert config == start["config"]
        assert list(h["runs"].keys()) == ["0"]
        r = h["runs/0"]
        assert r.attrs["name"] == "trunk"
        assert r.attrs["parent"] == -1 and r.attrs["fork_step"] == -1
        assert r.attrs["layers"] == 2
        assert json.loads(r.attrs["phases"]) == start["phases"]
        assert json.loads(r.attrs["model"])["params"] == start["model"]["params"]
        np.testing.assert_array_equal(r["step"][:], [s["step"] for s in steps])
        np.testing.assert_array_equal(r["tokens"][:], [s["tokens"] for s in steps])
        for name in ["loss", "lr", "grad_norm", "update_norm", "param_norm", "tokens_per_s", "step_ms"]:
            np.testing.assert_array_equal(r[name][:], [s[name] for s in steps], err_msg=name)
        phases = {"warmup": 0, "stable": 1, "decay": 2}
        np.testing.assert_array_equal(r["phase"][:], [phases[s["phase"]] for s in steps])
        per_layer = r["grad_norm_per_layer"][:]
        assert per_layer.shape == (40, 2)
        np.testing.assert_array_equal(per_layer, [s["grad_norm_per_layer"] for s in steps])
        # Each layer's norm is part of the global norm.
        assert np.all((per_layer ** 2).sum(axis=1) <= r["grad_norm"][:] ** 2 * (1 + 1e-12))
        # Step geometry (NaN where a step has none: the first), per-group norms, max |Δθ|.
        for name, key in [("grad_cos", "cos"), ("d1", "d1"), ("d2", "d2"), ("curvature", "curvature")]:
            want = [s["geometry"][key] if s["geometry"] else np.nan for s in steps]
            np.testing.assert_array_equal(r[name][:], want, err_msg=name)
        assert np.isnan(r["grad_cos"][0]) and np.all(np.abs(r["grad_cos"][1:]) <= 1)
        assert json.loads(r.attrs["param_groups"]) == ["embedding", "hidden", "norm"]
        groups = r["grad_norm_per_group"][:]
        np.testing.assert_allclose(np.sqrt((groups ** 2).sum(axis=1)), r["grad_norm"][:], rtol=1e-12)
        tracked = json.loads(r.attrs["tracked_tensors"])
        assert tracked[0] == "model.embed_tokens.weight"
        np.testing.assert_array_equal(r["max_update"][:], [s["max_update"] for s in steps])
        # Periodic probes: scalars in runs/0/probes/<probe>, the same as the streamed events.
        probes = [e for e in events if e["type"] == "probe"]
        assert {p["probe"] for p in probes} == {"sharpness", "noise", "slice", "landscape"}
        sharp = [p for p in probes if p["probe"] == "sharpness"]
        g = r["probes/sharpness"]
        np.testing.assert_array_equal(g["step"][:], [p["step"] for p in sharp])
        np.testing.assert_array_equal(g["lambda_max"][:], [p["scalars"]["lambda_max"] for p in sharp])
        np.testing.assert_allclose(g["threshold"][:] * g["lr"][:], 38.0)
        land = next(p for p in probes if p["probe"] == "landscape")
        assert len(land["series"]["loss"]) == len(land["series"]["x"]) ** 2
        np.testing.assert_array_equal(r["eval/step"][:], [e["step"] for e in evals])
        np.testing.assert_array_equal(r["eval/val_loss"][:], [e["val_loss"] for e in evals])
        # The event log holds every event that is not a step or an eval, in order, with seq.
        log = [json.loads(line) for line in bytes(h["events"][:]).decode().splitlines()]
        others = [e for e in events if e["type"] not in ("step", "eval")]
        assert [entry["event"] for entry in log] == others
        seqs = [entry["seq"] for entry in log] + list(r["seq"][:]) + list(r["eval/seq"][:])
        assert sorted(seqs) == list(range(len(events)))
        # Datasets are chunked and extendable; integer columns are compressed.
        assert r["loss"].chunks is not None and r["loss"].maxshape == (None,)
        assert r["step"].compression == "gzip" and r["step"].shuffle


def test_h5py_opens_a_sigkilled_recording(tmp_path):
    f = tmp_path / "killed.h5"
    cmd = [BIN, "record", "--out", str(f), *SMALL, "--steps", "1000000", "--jsonl"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    t0 = None
    for line in p.stdout:
        e = json.loads(line)
        if e["type"] == "step":
            now = time.monotonic()
            t0 = t0 or now
            seen.append((now, e["step"]))
            if now - t0 > 2.5:
                break
    p.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    p.wait()
    must_have = max(s for t, s in seen if t + 1.0 <= killed)
    with h5py.File(f, "r", swmr=True) as h:
        steps = h["runs/0/step"][:]
        assert len(steps) > 0 and steps[-1] >= must_have, (len(steps), must_have)
        np.testing.assert_array_equal(steps, np.arange(1, len(steps) + 1))
        assert len(h["runs/0/loss"]) == len(steps)


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-v"]))
