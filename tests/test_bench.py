"""Smoke test of ``python -m ce_fast.bench`` (the README's main job): a tiny
run end to end, its JSON and its tables. Speed itself is never asserted."""

import json

from ce_fast import bench


def test_bench_cli_small_run(tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["--shapes", "64x10", "--dtypes", "float32", "--threads", "1", "--repeats", "1"]
    argv += ["--no-peers", "--no-reference", "--tiny", "4x3", "--json", str(out)]
    assert bench.main(argv) == 0
    data = json.loads(out.read_text())
    (row,) = data["results"]
    assert (row["N"], row["C"], row["dtype"], row["threads"]) == (64, 10, "float32", 1)
    assert {"copy", "read", "loss", "grad out=", "grad fresh"} <= set(row["median_s"])
    (tiny,) = data["tiny"]
    assert (tiny["N"], tiny["C"]) == (4, 3)
    assert all(v > 0 for v in tiny["median_s"].values())
    text = capsys.readouterr().out
    assert "64 x 10" in text and "tiny calls  4 x 3" in text and "vs np.exp" in text
