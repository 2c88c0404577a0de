"""TensorBoard and pandas-style tools read what `wsdscope export` writes.

Records a short session with a decay branch and periodic probes with the real `wsdscope`
binary (WSDSCOPE_BIN, default target/release/wsdscope), exports it with `--format tensorboard`
and `--format csv`, and checks the exports against h5py's view of the session: the event files
through TensorBoard's own reader (`EventAccumulator`), every tag's count, steps and values
(float32), and the CSVs through the csv module, every cell exactly. Also exports a session
while `record` is still writing it: the export is a consistent prefix of the final session and
the recording finishes unharmed.

Needs the `tensorboard` package; scripts/test installs it and sets
WSDSCOPE_REQUIRE_TENSORBOARD=1, under which a missing package fails these tests.
"""
import csv
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("WSDSCOPE_BIN", str(ROOT / "target" / "release" / "wsdscope"))
SMALL = ["--hidden", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1", "--ffn", "64",
         "--vocab", "64", "--seq", "16", "--batch", "4", "--threads", "1"]

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError as e:  # pragma: no cover - depends on the environment
    if os.environ.get("WSDSCOPE_REQUIRE_TENSORBOARD"):
        raise
    pytest.skip(f"the tensorboard package is not installed ({e}); pip install tensorboard",
                allow_module_level=True)

# The documented names (docs/session-format.md): dataset -> (CSV column, TensorBoard tag).
STEP = {"loss": "loss/train", "lr": "lr", "grad_norm": "norm/grad",
        "update_norm": "norm/update", "param_norm": "norm/param",
        "tokens_per_s": "perf/tokens_per_s", "step_ms": "perf/step_ms",
        "grad_cos": "geometry/grad_cos", "d1": "geometry/d1", "d2": "geometry/d2",
        "curvature": "geometry/curvature"}
PHASES = ["warmup", "stable", "decay"]


def export(session, fmt, out):
    p = subprocess.run([BIN, "export", str(session), "--format", fmt, "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stderr


def run_dirs(h):
    """run id -> (info, the export's directory / file stem for it)."""
    out = {}
    for k in h["run_ids"][:]:
        info = json.loads(bytes(h[f"runs/{k}/info"][:]))
        name = "".join(c if c.isascii() and (c.isalnum() or c in "._@+") else "-"
                       for c in info["name"])
        while "--" in name:
            name = name.replace("--", "-")
        name = name.strip("-")[:64].rstrip("-")
        out[int(k)] = (info, f"run{k}-{name}" if name else f"run{k}")
    return out


def expected(h, k, info, n=None, m=None):
    """Every series of run k as the export should write it, from h5py: column -> (tag,
    steps, values), NaN left out. n, m: how many step and eval rows to take."""
    r = h[f"runs/{k}"]
    step = r["step"][:n]
    cols = {"tokens": ("tokens", step, r["tokens"][:n].astype(float)),
            "phase": ("phase", step, r["phase"][:n].astype(float))}
    for name, tag in STEP.items():
        cols[name] = (tag, step, r[name][:n])
    wide = [("grad_norm_per_layer", "norm/grad_layer/", [str(i) for i in range(info["model"]["layers"])]),
            ("grad_norm_per_group", "norm/grad_group/", info["param_groups"]),
            ("max_update", "max_update/", info["tracked_tensors"])]
    for ds, tag, names in wide:
        data = r[ds][:n]
        for j, c in enumerate(names):
            cols[f"{ds}.{c}"] = (tag + c, step, data[:, j])
    cols["val_loss"] = ("loss/val", r["eval/step"][:m], r["eval/val_loss"][:m])
    for probe in h["probes"]:
        t = h[f"probes/{probe}"]
        rows = t["run"][:] == k
        if not rows.any():
            continue
        for scalar in t:
            if scalar in ("run", "seq", "step"):
                continue
            cols[f"probe.{probe}.{scalar}"] = (f"probe/{probe}/{scalar}", t["step"][:][rows],
                                               t[scalar][:][rows])
    out = {}
    for c, (tag, s, v) in cols.items():
        keep = ~np.isnan(v)
        if keep.any():
            out[c] = (tag, s[keep], v[keep])
    return out


def read_tb(d):
    acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    f = d / "s.h5"
    cmd = [BIN, "record", "--out", str(f), *SMALL, "--steps", "60", "--eval-every", "10",
           "--probe-every", "5", "--fork-at", "30", "--branch-decay", "exp:0.5"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return f


def test_tensorboard_reads_every_quantity(session, tmp_path):
    out = tmp_path / "tb"
    said = export(session, "tensorboard", out)
    assert "2 run directories" in said, said
    with h5py.File(session, "r", swmr=True) as h:
        created = datetime.strptime(h.attrs["created"], "%Y-%m-%dT%H:%M:%SZ") \
            .replace(tzinfo=timezone.utc).timestamp()
        runs = run_dirs(h)
        assert sorted(p.name for p in out.iterdir()) == sorted(d for _, d in runs.values())
        assert runs[0][1] == "run0-trunk"
        total_s = sum(np.nansum(h[f"runs/{k}/step_ms"][:]) / 1e3 for k in runs) + \
            sum(np.nansum(h[f"probes/{p}/seconds"][:]) for p in h["probes"])
        for k, (info, name) in runs.items():
            acc = read_tb(out / name)
            want = expected(h, k, info)
            assert any(c.startswith("probe.sharpness.") for c in want), "no probes recorded"
            assert "probe.sharpness.lambda_max" in want and "val_loss" in want
            tags = set(acc.Tags()["scalars"])
            assert tags == {tag for tag, _, _ in want.values()}, \
                tags ^ {tag for tag, _, _ in want.values()}
            for c, (tag, steps, values) in want.items():
                got = acc.Scalars(tag)
                assert len(got) == len(steps), (k, tag, len(got), len(steps))
                np.testing.assert_array_equal([e.step for e in got], steps, err_msg=tag)
                np.testing.assert_allclose([e.value for e in got], values.astype(np.float32),
                                           rtol=1e-6, err_msg=tag)
            # Wall times: from the session's start, never backwards within a step series,
            # within the session's recorded training and probe time.
            walls = [e.wall_time for e in acc.Scalars("loss/train")]
            assert walls == sorted(walls)
            assert created <= walls[0] and walls[-1] <= created + total_s + 1e-3, \
                (created, walls[0], walls[-1], total_s)


def test_csv_holds_every_quantity_exactly(session, tmp_path):
    out = tmp_path / "csv"
    export(session, "csv", out)
    with h5py.File(session, "r", swmr=True) as h:
        runs = run_dirs(h)
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{d}.csv" for _, d in runs.values())
        for k, (info, name) in runs.items():
            check_csv(out / f"{name}.csv", h, k, info)


def check_csv(path, h, k, info, n=None, m=None):
    """The CSV of run k against h5py's first n step rows and m eval rows; returns its rows."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    r = h[f"runs/{k}"]
    steps = r["step"][:n]
    want = expected(h, k, info, n, m)
    header = list(rows[0].keys()) if rows else []
    assert header[:3] == ["step", "tokens", "phase"]
    assert set(want) - {"tokens", "phase"} <= set(header), set(want) - set(header)
    # One row per step, in order; tokens and phase from the step rows.
    assert [int(x["step"]) for x in rows] == list(steps)
    np.testing.assert_array_equal([int(x["tokens"]) for x in rows], r["tokens"][:n])
    assert [x["phase"] for x in rows] == [PHASES[p] for p in r["phase"][:n]]
    for c, (_, s, v) in want.items():
        if c in ("tokens", "phase"):
            continue
        got = {int(x["step"]): float(x[c]) for x in rows if x[c] != ""}
        # Every value exactly (full precision), at its step, and nothing elsewhere.
        assert got == dict(zip(s.tolist(), v.tolist())), c
    return rows


def test_export_of_a_session_being_recorded(tmp_path):
    f = tmp_path / "live.h5"
    cmd = [BIN, "record", "--out", str(f), *SMALL, "--steps", "3000", "--eval-every", "50",
           "--probe-every", "10", "--fork-at", "100", "--branch-decay", "exp:0.5"]
    err = tmp_path / "stderr.txt"
    with open(err, "w") as e:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=e)
    try:
        t0 = time.monotonic()
        exports = []
        while len(exports) < 4:
            assert p.poll() is None, f"the recording ended before the exports: {err.read_text()}"
            assert time.monotonic() - t0 < 300, "the session never grew"
            n = 0
            if f.exists():
                try:
                    with h5py.File(f, "r", swmr=True) as h:
                        n = len(h["runs/0/step"])
                except OSError:
                    pass
            if n >= 120 * (len(exports) + 1):
                i = len(exports)
                export(f, "csv", tmp_path / f"csv{i}")
                export(f, "tensorboard", tmp_path / f"tb{i}")
                exports.append(i)
            time.sleep(0.05)
        assert p.wait(timeout=600) == 0, err.read_text()
    finally:
        if p.poll() is None:
            p.kill()
    with h5py.File(f, "r") as h:
        runs = run_dirs(h)
        assert len(h["runs/0/step"]) == 3000, "the recording did not finish whole"
        log = [json.loads(x)["event"] for x in bytes(h["events"][:]).decode().splitlines()]
        assert sorted(e["run"] for e in log if e["type"] == "end") == [0, 1]
        for i in exports:
            csv_dir, tb_dir = tmp_path / f"csv{i}", tmp_path / f"tb{i}"
            got = sorted(p.name for p in csv_dir.iterdir())
            assert "run0-trunk.csv" in got
            for k, (info, name) in runs.items():
                path = csv_dir / f"{name}.csv"
                if not path.exists():
                    assert k != 0
                    continue
                # The exported steps are the final session's first rows, exactly.
                with open(path, newline="") as fh:
                    n = sum(1 for _ in csv.DictReader(fh))
                r = h[f"runs/{k}"]
                m = int(np.searchsorted(r["eval/step"][:], r["step"][n - 1], side="right")) \
                    if n else 0
                rows = check_csv_prefix(path, h, k, info, n, m)
                if k == 0:
                    assert 120 * (i + 1) <= len(rows) < 3000, (i, len(rows))
                # The event files hold the same prefix.
                acc = read_tb(tb_dir / name)
                assert [e.step for e in acc.Scalars("loss/train")] == list(r["step"][:n])


def check_csv_prefix(path, h, k, info, n, m):
    """The CSV of run k against h5py's first n step rows; the evals and probe results of its
    last step may or may not have reached the file when it was exported."""
    rows = check_csv_steps(path, h, k, n)
    last = int(h[f"runs/{k}/step"][n - 1]) if n else 0
    for c, (_, s, v) in expected(h, k, info, n, m).items():
        if c in ("tokens", "phase"):
            continue
        got = {int(x["step"]): float(x[c]) for x in rows if c in x and x[c] != ""}
        want = dict(zip(s.tolist(), v.tolist()))
        if c == "val_loss" or c.startswith("probe."):
            want = {st: x for st, x in want.items() if st < last or (st == last and st in got)}
        assert got == want, (c, k)
    return rows


def check_csv_steps(path, h, k, n):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    r = h[f"runs/{k}"]
    steps = [int(x["step"]) for x in rows if x["phase"] != ""]
    assert steps == list(r["step"][:n])
    assert [int(x["step"]) for x in rows] == sorted(int(x["step"]) for x in rows)
    for name in STEP:
        got = [float(x[name]) if x[name] != "" else np.nan for x in rows if x["phase"] != ""]
        np.testing.assert_array_equal(got, r[name][:n], err_msg=name)
    return rows


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-v"]))
