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
        assert h.attrs["format_version"] == 3
        assert h.attrs["event_schema_version"] == 1
        assert str(h.attrs["producer"]).startswith("wsdscope ")
        config = json.loads(h.attrs["config"])
        assert config == start["config"]
        # Every run slot exists from the start; run_ids lists the ones that have started.
        assert h.attrs["run_slots"] == len(h["runs"]) == 32
        assert list(h["run_ids"][:]) == [0]
        r = h["runs/0"]
        info = json.loads(bytes(r["info"][:]))
        assert info == start
        assert info["name"] == "trunk" and info["parent"] is None and info["fork_step"] is None
        assert info["model"]["layers"] == 2
        assert h["runs/1/info"].shape == (0,), "unused slot"
        assert h["runs/1/step"].shape == (0,)
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
        assert info["param_groups"] == ["embedding", "hidden", "norm"]
        groups = r["grad_norm_per_group"][:]
        np.testing.assert_allclose(np.sqrt((groups ** 2).sum(axis=1)), r["grad_norm"][:], rtol=1e-12)
        tracked = info["tracked_tensors"]
        assert tracked[0] == "model.embed_tokens.weight"
        np.testing.assert_array_equal(r["max_update"][:], [s["max_update"] for s in steps])
        # Periodic probes: one table per kind under probes/, every run's rows with a run
        # column, the same as the streamed events.
        probes = [e for e in events if e["type"] == "probe"]
        assert {p["probe"] for p in probes} == {"sharpness", "noise", "slice", "landscape"}
        assert set(h["probes"].keys()) == {"sharpness", "noise", "slice", "landscape", "interp"}
        sharp = [p for p in probes if p["probe"] == "sharpness"]
        g = h["probes/sharpness"]
        assert list(g["run"][:]) == [0] * len(sharp)
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


def test_h5py_reads_the_noise_scale_the_steps_report(tmp_path):
    # 8 sequences of 128 tokens: two 512-token leaves a step, so the noise scale comes from
    # the steps themselves, a report every 10 steps (and at every place the planner probes).
    f = tmp_path / "noise.h5"
    pairs = dict(zip(SMALL[::2], SMALL[1::2]), **{"--seq": "128", "--batch": "8"})
    cmd = [BIN, "record", "--out", str(f), *[x for kv in pairs.items() for x in kv],
           "--steps", "60", "--jsonl"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    reports = [e for e in events if e["type"] == "probe" and e["probe"] == "noise"]
    with h5py.File(f, "r", swmr=True) as h:
        t = h["probes/noise"]
        steps = t["step"][:]
        np.testing.assert_array_equal(steps, [e["step"] for e in reports])
        assert set(range(10, 61, 10)) <= set(steps)
        # Each row averages the steps since the one before, over the step's two leaves.
        np.testing.assert_array_equal(t["steps"][:], np.diff(np.concatenate([[0], steps])))
        assert np.all(t["micro_batches"][:] == 2)
        np.testing.assert_allclose(t["b_simple"][:], t["trace"][:] / t["g_sq"][:], rtol=1e-12)
        # What a notebook does with it: the run's B_simple from the summed estimates.
        weights = t["steps"][:]
        avg = (weights * t["trace"][:]).sum() / (weights * t["g_sq"][:]).sum()
        assert 0 < avg and np.isfinite(avg)
        assert np.all(t["seconds"][:] < 0.01), "no pass of its own"


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


def _compare_with_stream(h, events):
    """Every streamed event is in the file: steps and evals in their runs' datasets, the rest
    in the event log, with seq giving back the stream's order."""
    log = [json.loads(line)["event"] for line in bytes(h["events"][:]).decode().splitlines()]
    assert log == [e for e in events if e["type"] not in ("step", "eval")]
    runs = sorted({e["run"] for e in events})
    assert sorted(h["run_ids"][:]) == runs
    for run in runs:
        r = h[f"runs/{run}"]
        steps = [e for e in events if e["type"] == "step" and e["run"] == run]
        evals = [e for e in events if e["type"] == "eval" and e["run"] == run]
        np.testing.assert_array_equal(r["step"][:], [s["step"] for s in steps])
        np.testing.assert_array_equal(r["loss"][:], [s["loss"] for s in steps])
        np.testing.assert_array_equal(r["eval/val_loss"][:], [e["val_loss"] for e in evals])
    n = len(log) + sum(len(h[f"runs/{k}/seq"]) + len(h[f"runs/{k}/eval/seq"]) for k in runs)
    assert n == len(events)


def test_readers_never_harm_a_live_recording(tmp_path):
    """A notebook holds the live file open with swmr=True for the whole run, re-reading it as
    it grows, while other readers open and close it (with and without swmr) at any moment:
    through periodic probes every 10 steps, two forks and the runs' ends, the recording goes
    on to its end and every event is in the file."""
    f = tmp_path / "live.h5"
    cmd = [BIN, "record", "--out", str(f), *SMALL, "--jsonl", "--steps", "3000",
           "--probe-every", "10", "--fork-at", "800,1600", "--branch-decay", "exp:300",
           "--eval-every", "100"]
    stream, log = tmp_path / "events.jsonl", tmp_path / "stderr.txt"
    with open(stream, "w") as out, open(log, "w") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
    t0 = time.monotonic()
    while not f.exists():
        assert p.poll() is None, log.read_text()
        assert time.monotonic() - t0 < 60, "the session file never appeared"
        time.sleep(0.01)
    held = h5py.File(f, "r", swmr=True)
    seen_steps, seen_runs, plain_opens, swmr_opens = 0, 0, 0, 0
    while p.poll() is None:
        held["events"].refresh()
        held["run_ids"].refresh()
        ids = list(held["run_ids"][:])
        seen_runs = max(seen_runs, len(ids))
        for k in ids:
            held[f"runs/{k}/step"].refresh()
        held["runs/0/step"].refresh()
        seen_steps = max(seen_steps, len(held["runs/0/step"]))
        # Short-lived readers, as a second notebook cell or a plotting script would open.
        try:
            with h5py.File(f, "r", swmr=True) as other:
                other["events"][:]
                swmr_opens += 1
        except OSError:
            pass
        try:
            with h5py.File(f, "r") as other:
                other.attrs["format_version"]
                plain_opens += 1
        except OSError:
            pass  # HDF5 may refuse a non-SWMR open of a live SWMR file; the writer is unaffected.
        time.sleep(0.05)
    assert p.wait() == 0, log.read_text()
    events = [json.loads(line) for line in stream.read_text().splitlines()]
    assert seen_steps > 0 and swmr_opens > 0, (seen_steps, swmr_opens)
    # The reader that held the file open the whole time sees the complete session.
    for name in ["events", "run_ids", "runs/0/step", "runs/1/step", "runs/2/step",
                 "runs/0/loss", "runs/1/loss", "runs/2/loss", "runs/0/eval/val_loss",
                 "runs/1/eval/val_loss", "runs/2/eval/val_loss", "runs/0/seq",
                 "runs/1/seq", "runs/2/seq", "runs/0/eval/seq", "runs/1/eval/seq",
                 "runs/2/eval/seq"]:
        held[name].refresh()
    _compare_with_stream(held, events)
    held.close()
    kinds = {e["probe"] for e in events if e["type"] == "probe"}
    assert kinds >= {"sharpness", "noise", "slice", "landscape", "interp"}, kinds
    assert [e["run"] for e in events if e["type"] == "end"] == [1, 2, 0] or \
        sorted(e["run"] for e in events if e["type"] == "end") == [0, 1, 2]
    with h5py.File(f, "r") as h:
        _compare_with_stream(h, events)
    print(f"held reader saw {seen_steps} steps, {seen_runs} runs; {swmr_opens} SWMR and "
          f"{plain_opens} plain opens during the run")
