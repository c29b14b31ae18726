"""The commands: ``ensemble.build``, ``ensemble.predict``, and the sweep's ensemble step."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import SMOKE, copy_run, run_cli

pytestmark = pytest.mark.ray  # the shared sweep starts a local Ray


def test_the_sweep_prints_the_combiner_table_and_the_test_comparison(sweep):
    out = sweep.stdout
    assert "ensemble: combiners by 3-fold CV on validation (auroc" in out
    for name in ("mean", "greedy", "logistic", "mlp"):
        assert f"  {name} " in out
    assert "ensemble: test split" in out and "best single (" in out and "auroc 95% CI" in out
    # The leaderboard came first: the ensemble lines follow the written files.
    assert out.index("leaderboard.parquet") < out.index("ensemble: bundle written to")


def test_build_cli_rebuilds_into_another_folder(sweep, tmp_path):
    from ensemble.build import main

    out_dir = tmp_path / "bundle"
    rc, out, err = run_cli(main, [str(sweep.run_dir), "--top-k", "3", "--selection", "top_k", "--out", str(out_dir), "--n-boot", "50"])
    assert rc == 0, err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert len(manifest["members"]) == 3 and "ensemble: 3 of 4 usable trials" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) >= {"test.ensemble.auroc", "test.best_single.auroc", "val_cv.ensemble.auroc"}
    board = pd.read_csv(out_dir / "report" / "leaderboard.csv")
    assert board["kind"].tolist().count("member") == 3 and board["kind"].tolist().count("ensemble") == 1
    assert board.loc[board["kind"] == "combiner", "chosen"].sum() == 1


def test_build_cli_on_a_folder_that_is_no_sweep_says_so_in_one_line(tmp_path):
    from ensemble.build import main

    rc, _, err = run_cli(main, [str(tmp_path)])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not a finished sweep" in err


def test_predict_on_a_folder_of_pngs_writes_one_row_per_image(sweep, tmp_path):
    from ensemble.predict import main

    out_csv = tmp_path / "predictions.csv"
    rc, out, err = run_cli(main, [str(sweep.bundle), str(sweep.images), "--out", str(out_csv), "--batch-size", "16"])
    assert rc == 0, err
    pngs = sorted(str(p) for p in sweep.images.rglob("*.png"))
    frame = pd.read_csv(out_csv)
    assert frame.columns.tolist() == ["path", "prob_normal", "prob_pneumonia", "predicted"]
    assert sorted(frame["path"]) == pngs and len(frame) == 64
    assert np.allclose(frame[["prob_normal", "prob_pneumonia"]].sum(1), 1.0, atol=1e-5)
    assert set(frame["predicted"]) <= {"normal", "pneumonia"}
    # A binary bundle decides at the threshold its ensemble chose on validation, not at 0.5.
    thr = json.loads((sweep.bundle / "manifest.json").read_text())["combiner"]["state"]["threshold"]
    assert 0.0 <= thr <= 1.0
    # The threshold is one of the validation images' probabilities (Youden's J), and these images include
    # them: a probability at the threshold is written rounded (6 digits), so it may read as either side.
    clear = (frame["prob_pneumonia"] - thr).abs() > 1e-5
    decided = np.where(frame["prob_pneumonia"] >= thr, "pneumonia", "normal")
    assert (frame["predicted"] == decided)[clear].all() and clear.sum() >= 60
    assert f"64 predictions written to {out_csv}" in out and f"probability >= {thr:.4g}" in out


def test_predict_takes_a_csv_of_paths_and_prints_without_out(sweep, tmp_path):
    import shutil

    from ensemble.predict import main

    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    pngs = sorted(sweep.images.rglob("*.png"))[:3]
    for p in pngs:
        shutil.copy(p, folder / "sub" / p.name)
    # Relative paths in the CSV are taken from the CSV's folder.
    pd.DataFrame({"path": [f"sub/{p.name}" for p in pngs]}).to_csv(folder / "list.csv", index=False)
    rc, out, err = run_cli(main, [str(sweep.bundle), str(folder / "list.csv"), str(pngs[0]), "--tta"])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "path,prob_normal,prob_pneumonia,predicted" and len(lines) == 1 + 4
    assert lines[1].startswith(str(folder / "sub" / pngs[0].name))


def test_predict_on_a_missing_input_says_which(sweep, tmp_path):
    from ensemble.predict import main

    rc, out, err = run_cli(main, [str(sweep.bundle), str(tmp_path / "nope.png")])
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "nope.png: no such file or folder" in err
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rc, _, err = run_cli(main, [str(sweep.bundle), str(tmp_path / "bad.png")])
    assert rc == 2 and "bad.png: not a readable image" in err and len(err.strip().splitlines()) == 1


def test_a_failing_ensemble_step_keeps_the_sweep_and_exits_non_zero(sweep, tmp_path, capsys):
    from search._leaderboard import leaderboard  # noqa: F401 - the module _report imports
    from search._run import _report
    from search._space import load_space

    run = copy_run(sweep.run_dir, tmp_path / "smoke")
    space = yaml.safe_load((run / "space.yaml").read_text())
    space["ensemble"] = {"combiners": ["mean", "stack"]}
    (run / "space.yaml").write_text(yaml.safe_dump(space))
    frame = pd.read_parquet(run / "leaderboard.parquet")
    before = (run / "leaderboard.parquet").read_bytes()
    smoke = load_space(SMOKE, overrides=[f"data.root={sweep.images}"])
    rc = _report(frame, smoke, paths=[str(run / "leaderboard.parquet")], seconds=1.0, ensemble=True, run_dir=str(run))
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medsweep: error: ensemble step: ") and "Unknown combiner 'stack'" in err[0]
    assert "trial_id" in captured.out  # the leaderboard table was printed
    assert (run / "leaderboard.parquet").read_bytes() == before and not (run / "ensemble").exists()
    # --no-ensemble: no step, status 0.
    rc = _report(frame, smoke, paths=[], seconds=1.0, ensemble=False, run_dir=str(run))
    assert rc == 0 and "ensemble: skipped (--no-ensemble)" in capsys.readouterr().out


def test_build_never_replaces_a_folder_that_is_not_a_bundle(sweep, tmp_path):
    from ensemble.build import main

    run = copy_run(sweep.run_dir, tmp_path / "smoke")
    before = sorted(p.name for p in run.iterdir())
    for target in (run, tmp_path):  # the sweep itself, and a folder holding it
        rc, _, err = run_cli(main, [str(run), "--top-k", "2", "--out", str(target)])
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "--out" in err
    assert sorted(p.name for p in run.iterdir()) == before
