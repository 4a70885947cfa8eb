"""Rank intervals of a leaderboard table (benchmark/ranks.py): joint bootstrap, ranks, tied set, md/csv columns.

Predictions are synthetic with chosen per-class accuracies (tests/test_reporting.py helpers), so which row
is best, which rows are tied and which are clearly apart is known by construction.
"""
from pathlib import Path

import numpy as np
import pytest

from benchmark import paired, ranks
from test_reporting import balanced_targets, correct_per_class, predictions, read_csv, report, write_run

TAIL = [7, 8, 9]  # paired.tail_classes of the 10-class profile write_run records


def _pred(target: np.ndarray, head: float, tail: float, seed: int) -> np.ndarray:
    """Predictions with accuracy ``head`` on classes 0-6 and ``tail`` on 7-9 (images picked by ``seed``)."""
    return predictions(target, correct_per_class(target, np.array([head] * 7 + [tail] * 3), seed))


def _abcd(target: np.ndarray, seeds=(0,)) -> list:
    """A clearly best (90%), B and C tied (70%, other images), D worst overall (50%) but best on the tail."""
    spec = [(0.9, 0.7), (0.7, 0.7), (0.7, 0.7), (0.5, 0.95)]
    return [{s: _pred(target, h, t, seed=100 * i + s) for s in seeds} for i, (h, t) in enumerate(spec)]


def test_ranks_of_ties_share_the_minimum_rank():
    assert ranks.ranks_of(np.array([3.0, 5.0, 5.0, 1.0])).tolist() == [3, 1, 1, 4]
    assert ranks.ranks_of(np.array([[1.0, 2.0], [2.0, 1.0]])).tolist() == [[2, 1], [1, 2]]
    assert ranks.ranks_of(np.array([0.3, 0.1 + 0.2])).tolist() == [1, 1]  # equal up to float rounding


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_constructed_ranks_intervals_and_tied_set(seeds):
    target = balanced_targets(10, per_class=1000)
    res = ranks.rank_rows(_abcd(target, seeds), target, TAIL)
    overall = [(r.point, r.lo, r.hi) for r in res["overall"].ranks]
    # C's point rank: B and C have exactly equal accuracy (same counts per class): both 2 (minimum rank)
    assert overall == [(1, 1, 1), (2, 2, 3), (2, 2, 3), (4, 4, 4)]
    assert res["overall"].best == 0 and res["overall"].tied == (0,)
    tail = [(r.point, r.lo, r.hi) for r in res["tail"].ranks]
    assert tail[3] == (1, 1, 1) and all(t[0] == 2 and (t[1], t[2]) == (2, 4) for t in tail[:3])
    assert res["tail"].best == 3 and res["tail"].tied == (3,)


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_rows_tied_at_the_top_are_all_in_the_tied_set(seeds):
    target = balanced_targets(10, per_class=1000)
    _, b, c, d = _abcd(target, seeds)
    res = ranks.rank_rows([b, c, d], target, TAIL)
    assert [(r.point, r.lo, r.hi) for r in res["overall"].ranks] == [(1, 1, 2), (1, 1, 2), (3, 3, 3)]
    assert res["overall"].tied == (0, 1)


def test_identical_rows_share_their_rank_in_every_resample():
    """The resampling is joint: two rows with the same predictions are never told apart (independent
    draws per row would give them [2, 3])."""
    target = balanced_targets(10, per_class=1000)
    a, b, _, d = _abcd(target)
    res = ranks.rank_rows([a, b, dict(b), d], target, TAIL)
    assert [(r.point, r.lo, r.hi) for r in res["overall"].ranks] == [(1, 1, 1), (2, 2, 2), (2, 2, 2), (4, 4, 4)]


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_joint_bootstrap_is_the_paired_bootstrap_of_every_pair(seeds):
    """Any two rows' differences in the joint resamples are the Δ bootstrap of paired.py (same draws)."""
    target = balanced_targets(10, per_class=300, seed=3)
    rows = _abcd(target, seeds)
    point, boot, has_tail = ranks.joint_bootstrap(rows, target, TAIL, n_resamples=900, seed=4)
    assert has_tail
    q = [(1 - paired.LEVEL) / 2 * 100, (1 + paired.LEVEL) / 2 * 100]
    for i, j in ((0, 1), (2, 3)):
        ref = paired.paired_bootstrap(rows[i], rows[j], target, TAIL, n_resamples=900, seed=4, strategy="images")
        for k, iv in enumerate((ref.overall, ref.tail)):
            lo, hi = np.percentile(boot[k, :, i] - boot[k, :, j], q)
            assert point[k, i] - point[k, j] == pytest.approx(iv.diff, abs=1e-9)
            assert (lo, hi) == pytest.approx((iv.lo, iv.hi), abs=1e-9)


def test_point_accuracies_are_the_mean_over_seeds():
    target = balanced_targets(10, per_class=100)
    rows = _abcd(target, (0, 1))
    point, _, _ = ranks.joint_bootstrap(rows, target, TAIL, n_resamples=10)
    for i, row in enumerate(rows):
        acc = [[(row[s][target == c] == c).mean() * 100 for c in range(10)] for s in (0, 1)]
        assert point[0, i] == pytest.approx(np.mean([(row[s] == target).mean() * 100 for s in (0, 1)]))
        assert point[1, i] == pytest.approx(np.mean([np.mean(a[7:]) for a in acc]))


def test_tied_rule_is_the_paired_difference_not_the_rank_interval():
    """Row 1 is never ranked first (row 0 or row 2 is always above it), yet its difference to the best row
    swings from -1 to +1: by the stated rule (paired interval includes 0) it is tied with the best."""
    boot = np.array([[10.0, 9.0, 8.0], [8.0, 9.0, 10.0]] * 500)
    res = ranks._ranking(np.array([10.0, 9.0, 8.0]), boot, 0.95)
    assert [(r.point, r.lo, r.hi) for r in res.ranks] == [(1, 1, 3), (2, 2, 2), (3, 1, 3)]
    assert res.best == 0 and res.tied == (0, 1, 2)


def test_rank_bounds_are_whole_ranks_rounded_outwards():
    """2.5% of resamples put row 0 second: the 97.5% quantile falls between ranks 1 and 2 and is rounded to 2."""
    boot = np.array([[2.0, 1.0]] * 975 + [[1.0, 2.0]] * 25)
    res = ranks._ranking(np.array([2.0, 1.0]), boot, 0.95)
    assert [(r.point, r.lo, r.hi) for r in res.ranks] == [(1, 1, 2), (2, 1, 2)]


def test_no_tail_class_in_the_test_set_ranks_overall_only():
    target = balanced_targets(10, per_class=100)
    res = ranks.rank_rows(_abcd(target), target, [])
    assert set(res) == {"overall"}


def test_rows_with_other_seeds_are_refused():
    target = balanced_targets(10, per_class=100)
    a, b, _, _ = _abcd(target, (0, 1))
    with pytest.raises(ValueError, match="same seeds"):
        ranks.rank_rows([a, {0: b[0]}], target, TAIL)


def test_predictions_of_another_length_are_refused():
    target = balanced_targets(10, per_class=100)
    a, b, _, _ = _abcd(target)
    with pytest.raises(ValueError, match="not predictions on the same test set"):
        ranks.rank_rows([a, {0: b[0][:-1]}], target, TAIL)


def test_no_rows_is_refused():
    with pytest.raises(ValueError, match="no rows to rank"):
        ranks.rank_rows([], np.arange(3), TAIL)


# ----------------------------------------------------------------------------- leaderboard.md / .csv

def _table_folder(out: Path, seeds=(0,)) -> None:
    """teacher, A (best), B = C (tied), D, plus E without predictions and F trained with other seeds."""
    target = balanced_targets(10, per_class=1000)
    preds = _abcd(target, seeds)
    for s in seeds:
        write_run(out, "teacher", s, role="teacher", pred=preds[0][s], target=target)
        for name, row in zip("ABCD", preds):
            write_run(out, name, s, pred=row[s], target=target)
        write_run(out, "E", s, pred=preds[0][s], target=target, save_predictions=False)
    for s in (7, 8):
        write_run(out, "F", s, pred=preds[0][seeds[0]], target=target)


def _line(md: str, name: str) -> str:
    return next(ln for ln in md.splitlines() if ln.startswith(f"| {name} "))


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_leaderboard_md_shows_ranks_and_the_tied_set(tmp_path, seeds):
    _table_folder(tmp_path, seeds)
    md = report(tmp_path)
    header = next(ln for ln in md.splitlines() if ln.startswith("| method "))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "rank overall" in cols and "rank tail" in cols
    cells = {n: [c.strip() for c in _line(md, n).strip("|").split("|")] for n in "ABCDEF"}
    at = cols.index("rank overall")
    assert cells["A"][at] == "1 [1, 1]" and cells["B"][at] == cells["C"][at] == "2 [2, 3]"
    assert cells["D"][at] == "4 [4, 4]" and cells["D"][at + 1] == "1 [1, 1]"
    assert cells["E"][at] == cells["E"][at + 1] == cells["F"][at] == "—"
    teacher_line = next(ln for ln in md.splitlines() if ln.startswith("| **teacher"))
    teacher = [c.strip() for c in teacher_line.strip("|").split("|")]
    assert teacher[at] == teacher[at + 1] == "—"
    tied = next(ln for ln in md.splitlines() if ln.startswith("Tied with the best"))
    assert "includes 0" in tied and "overall: A (best); tail: D (best)." in tied and "4 student rows ranked" in tied
    assert "E (no stored predictions)" in md and "F (other seeds (7, 8))" in md
    assert "rank overall / rank tail" in md  # the header paragraph explains them


def test_leaderboard_csv_has_the_rank_columns(tmp_path):
    _table_folder(tmp_path)
    report(tmp_path)
    rows = {r["method"]: r for r in read_csv(tmp_path)}
    names = ["rank_overall", "rank_overall_lo", "rank_overall_hi", "rank_tail", "rank_tail_lo", "rank_tail_hi"]
    assert set(names) <= set(rows["A"])
    assert [rows["B"][n] for n in names] == ["2", "2", "3", "2", "2", "4"]
    assert [rows["A"][n] for n in names[:3]] == ["1", "1", "1"] and rows["D"]["rank_tail"] == "1"
    assert rows["A"]["tied_best_overall"] == "True" and rows["B"]["tied_best_overall"] == "False"
    assert all(rows[m][n] == "" for m in ("E", "F", "teacher (ce)") for n in names)


def test_a_table_with_one_ranked_row_shows_no_ranks(tmp_path):
    target = balanced_targets(10, per_class=100)
    write_run(tmp_path, "A", pred=_pred(target, 0.9, 0.7, 0), target=target)
    write_run(tmp_path, "E", pred=_pred(target, 0.9, 0.7, 0), target=target, save_predictions=False)
    md = report(tmp_path)
    assert not any(ln.startswith("Tied with the best") for ln in md.splitlines()) and "1 [1, 1]" not in md


def test_rows_of_one_method_with_other_settings_are_ranked_apart(tmp_path):
    target = balanced_targets(10, per_class=1000)
    best, worse = _pred(target, 0.9, 0.9, 0), _pred(target, 0.6, 0.6, 1)
    write_run(tmp_path, "A", pred=best, target=target, params={"t": 4.0})
    write_run(tmp_path, "A", pred=worse, target=target, params={"t": 2.0})
    md = report(tmp_path)
    ranked = sorted((r["rank_overall"], r["settings"]) for r in read_csv(tmp_path))
    assert [rank for rank, _ in ranked] == ["1", "2"]
    tied = next(ln for ln in md.splitlines() if ln.startswith("Tied with the best"))
    assert f"overall: A `{ranked[0][1]}` (best);" in tied  # a repeated name carries its settings label
