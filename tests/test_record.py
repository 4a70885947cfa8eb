"""The typed run record (benchmark/record.py): every committed record reads back and writes byte-for-byte the same,
a new run's record is the file the runner wrote before the type existed, old layouts load, bad files are refused.

The golden records are the committed quick reference (results/reference/quick/runs), trained by the pre-type code.
"""
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark.fileio import sha256_file
from benchmark.record import RecordError, RunContext, RunRecord, as_record, schema_markdown
from benchmark.results import RunStore
from benchmark.runner import RunSpec, _freeze
from benchmark.settings import settings_of

REPO = Path(__file__).resolve().parent.parent
REF = REPO / "results" / "reference" / "quick" / "runs"
REF_FILES = sorted(REF.glob("*.json"))


def _ref(pattern: str) -> Path:
    return sorted(REF.glob(pattern))[0]


def _schema1(role: str) -> dict:
    """A record as the first harness (516fc8c) wrote it: student_arch for every role, base_lr, top-level env."""
    student = role == "student"
    final = {"epoch": 1, "overall": 50.0, "per_class_acc": [90.0, 10.0], "group_sizes": {"head": 1, "tail": 1}}
    return {"run_id": f"old_{role}", "status": "ok", "reason": None, "role": role, "suite": "toy",
            "dataset": "fmnist-lt", "imbalance_factor": 10.0, "data_seed": 0, "data_options": {}, "num_classes": 2,
            "class_counts": [100, 10], "seed": 1, "student_arch": "tiny" if student else "small",
            "teacher_arch": "small" if student else None, "teacher_run_id": "old_teacher" if student else None,
            "method": "kd" if student else "ce", "method_params": {"temperature": 4.0} if student else {},
            "recipe": {"epochs": 1, "lr": 0.1}, "base_lr": 0.05 if student else None, "config": {"name": "toy"},
            "created": "2026-01-01T00:00:00+0000", "device": "cpu", "torch": "2", "torchvision": "0", "timm": "1",
            "python": "3.11", "ltkd_bench": "0.1.0", "git_commit": "a" * 40, "git_dirty": False, "hostname": "h",
            "world_size": 1, "final": final, "best": final, "epochs": 1, "history": [{"epoch": 1, "loss": 1.0}],
            "wall_time_s": 1.0, "train_time_s": 1.0, "images_per_s": 110.0, "resumed_from": None}


# ----------------------------------------------------------------------------- committed records


@pytest.mark.parametrize("path", REF_FILES, ids=[p.stem[-20:] for p in REF_FILES])
def test_every_committed_record_reads_back_and_writes_the_same_bytes(path):
    rec = RunRecord.load(path)
    assert rec.dumps() == path.read_text()
    assert RunRecord.from_json(json.loads(rec.dumps())) == rec


@pytest.mark.parametrize("pattern", ["*_teacher_s0_*.json", "*-cifar_cnn_tiny_kd_s1_*.json"])
def test_committed_record_attributes_are_its_stored_values(pattern):
    path = _ref(pattern)
    raw = json.loads(path.read_text())
    rec = RunRecord.load(path)
    for key, value in raw.items():
        assert getattr(rec, "arch" if key == "student_arch" else key) == value, key
    assert rec.schema == 2 and rec.extra == {} and rec.verified is None and rec.reference_dir is None
    assert rec.predictions_sha256 == sha256_file(path.with_suffix(".predictions.npz"))
    assert rec.teacher == ("cifar_cnn_small") and rec.ok


def test_teacher_and_student_keys_differ_as_the_runner_wrote_them():
    teacher, student = RunRecord.load(_ref("*_teacher_s0_*.json")), RunRecord.load(_ref("*_kd_s0_*.json"))
    assert teacher.is_teacher and "student_arch" not in teacher.to_json() and "teacher_recipe" not in teacher
    assert student.is_student and student["student_arch"] == student.arch == "cifar_cnn_tiny"
    assert student.teacher_recipe == teacher.recipe and student.teacher_run_id == teacher.run_id


def test_store_loads_records_as_the_type():
    recs = RunStore(REF.parent).records()
    assert len(recs) == len(REF_FILES) and all(isinstance(r, RunRecord) for r in recs)
    assert RunStore(REF.parent).load(REF_FILES[0].stem) == RunRecord.load(REF_FILES[0])


# ----------------------------------------------------------------------------- built once, from spec and result


def _spec_of(raw: dict) -> RunSpec:
    """The RunSpec the runner expanded for a committed record (its run id proves it is the same spec)."""
    student = raw["role"] == "student"
    return RunSpec(raw["role"], raw["dataset"], raw["imbalance_factor"], raw["data_seed"], raw["arch"],
                   raw["method"], _freeze(raw["method_params"]), raw["seed"], _freeze(raw["recipe"]),
                   raw["student_lr"], raw["teacher_arch"] if student else None, raw["teacher_run_id"],
                   _freeze(raw["data_options"]))


def _rebuilt(path: Path, monkeypatch) -> RunRecord:
    """A committed record built again through RunRecord.from_run from its spec, result, data and context."""
    raw = json.loads(path.read_text())
    spec = _spec_of(raw)
    assert spec.run_id == raw["run_id"]
    result = SimpleNamespace(final=raw["final"], best=raw["best"], epochs_completed=raw["epochs"],
                             history=raw["history"], wall_time_s=raw["wall_time_s"], train_time_s=raw["train_time_s"],
                             images_per_s=raw["images_per_s"], resumed_from=raw["resumed_from"],
                             cell_size=raw["effective"]["cell_size"])
    ctx = RunContext(suite=raw["suite"], code=raw["code"], env=raw["env"], config=raw["config"],
                     device=raw["effective"]["device"], deterministic=raw["effective"]["deterministic"])
    data = SimpleNamespace(num_classes=raw["num_classes"], class_counts=tuple(raw["class_counts"]))
    monkeypatch.setattr(time, "strftime", lambda fmt: raw["created"])
    rec = RunRecord.from_run(spec, result, ctx, status="ok", data=data, teacher_recipe=raw.get("teacher_recipe"))
    rec.predictions_sha256 = raw["predictions_sha256"]  # the runner adds it once the predictions are on disk
    return rec


@pytest.mark.parametrize("pattern", ["*_teacher_s1_*.json", "*-cifar_cnn_tiny_dkd_s2_*.json"])
def test_a_new_run_writes_the_bytes_the_pre_type_runner_wrote(pattern, monkeypatch):
    path = _ref(pattern)
    assert _rebuilt(path, monkeypatch).dumps() == path.read_text()


def test_a_run_that_failed_before_its_data_writes_no_result_keys(monkeypatch):
    spec = _spec_of(json.loads(_ref("*_kd_s0_*.json").read_text()))
    ctx = RunContext(suite="quick", code={"family": "3"}, env={}, config={}, device="cuda:0", deterministic=False)
    rec = RunRecord.from_run(spec, None, ctx, status="failed", reason="RuntimeError: x", failure_kind="error")
    keys = list(rec.to_json())
    assert keys[-3:] == ["config", "student_arch", "teacher_recipe"] and "final" not in keys
    assert "num_classes" not in keys and "predictions_sha256" not in keys and "init" not in keys
    assert rec.effective == {"device": "cuda:0", "amp_dtype": None, "channels_last": True, "compile": False,
                             "fused_sgd": True, "deterministic": False, "cell_size": None}
    assert RunRecord.from_json(rec.to_json()) == rec


# ----------------------------------------------------------------------------- older and newer layouts


def test_schema_1_student_loads_into_current_names():
    rec = RunRecord.from_json(_schema1("student"))
    assert (rec.schema, rec.arch, rec.student_lr, rec.teacher) == (1, "tiny", 0.05, "small")
    assert rec.code == {"version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False} and rec.code_family is None
    assert rec.env == {"device": "cpu", "torch": "2", "torchvision": "0", "timm": "1", "python": "3.11",
                       "hostname": "h", "world_size": 1}
    assert rec.extra == {} and rec.effective is None and rec.failure_kind is None
    assert settings_of(rec)["base_lr"] == 0.05 and settings_of(rec)["student"] == "tiny"


def test_schema_1_teacher_is_its_own_teacher_and_is_written_in_schema_2():
    rec = RunRecord.from_json(_schema1("teacher"))
    assert rec.arch == rec.teacher == "small" and rec.teacher_arch is None
    out = rec.to_json()
    assert "student_arch" not in out and "base_lr" not in out and "torch" not in out and out["arch"] == "small"
    assert RunRecord.from_json(out).schema == 2


def test_partial_dict_gets_documented_defaults():
    rec = as_record({"run_id": "a", "role": "student", "dataset": "d", "imbalance_factor": 100})
    assert rec.data_options == {} and rec.recipe == {} and rec.final is None and rec.result("best") == {}
    assert rec.seed is None and rec.imbalance_factor == 100 and isinstance(rec.imbalance_factor, int)


def test_unknown_keys_are_kept_and_written_back_after_the_known_ones():
    raw = json.loads(_ref("*_kd_s0_*.json").read_text())
    raw = {"added_by_a_newer_version": {"x": 1}, **raw, "zz_last": [1]}
    rec = RunRecord.from_json(raw)
    assert rec.extra == {"added_by_a_newer_version": {"x": 1}, "zz_last": [1]}
    assert list(rec.to_json())[-2:] == ["added_by_a_newer_version", "zz_last"]
    assert RunRecord.from_json(rec.to_json()) == rec


def test_a_newer_schema_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**_schema1("student"), "schema": 3}))
    with pytest.raises(RecordError, match=r"r\.json: field 'schema' is 3: written by a newer ltkd-bench"):
        RunRecord.load(path)


def test_a_schema_that_is_not_an_integer_is_refused():
    with pytest.raises(RecordError, match=r"^field 'schema' is str \"2\", expected integer$"):
        RunRecord.from_json({**_schema1("student"), "schema": "2"})


# ----------------------------------------------------------------------------- malformed records


def _bad_file(tmp_path: Path, **changes) -> Path:
    raw = json.loads(_ref("*_kd_s0_*.json").read_text())
    raw.update(changes)
    path = tmp_path / f"{raw['run_id']}.json"
    path.write_text(json.dumps({k: v for k, v in raw.items() if v is not ...}))
    return path


def test_a_field_of_the_wrong_type_is_one_line_naming_file_and_field(tmp_path):
    path = _bad_file(tmp_path, seed="0")
    with pytest.raises(RecordError) as err:
        RunRecord.load(path)
    msg = str(err.value)
    assert msg == f"{path}: field 'seed' is str \"0\", expected integer; fix or delete the file"


def test_a_bool_is_not_an_integer(tmp_path):
    with pytest.raises(RecordError, match="field 'num_classes' is bool true, expected integer or null"):
        RunRecord.load(_bad_file(tmp_path, num_classes=True))


def test_a_missing_required_field_is_named(tmp_path):
    with pytest.raises(RecordError, match=r"_s0_\w+\.json: missing method \(not a run record of this schema\); fix"):
        RunRecord.load(_bad_file(tmp_path, method=...))


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"run_id": "cut", "status": "ok"')
    with pytest.raises(RecordError, match=r"cut\.json: not a readable JSON run record \(JSONDecodeError"):
        RunRecord.load(path)


def test_the_store_skips_a_wrongly_typed_record_with_one_warning_naming_the_field(tmp_path):
    (tmp_path / "runs").mkdir()
    path = _bad_file(tmp_path / "runs", recipe=[1, 2])
    with pytest.warns(RuntimeWarning, match=r"\.json: skipped, field 'recipe' is list \[1, 2\], expected object"):
        assert RunStore(tmp_path).records() == []
    assert path.exists()


# ----------------------------------------------------------------------------- the schema page


def test_docs_records_md_is_generated_from_the_type():
    text = (REPO / "docs" / "records.md").read_text()
    assert text == schema_markdown(), "docs/records.md is stale: run `python -m benchmark.record docs/records.md`"
    assert "| `seed` | integer | always | required | training seed |" in text
    assert "[docs/records.md](records.md)" in (REPO / "docs" / "architecture.md").read_text()


def test_every_written_key_of_a_committed_record_is_documented():
    text = schema_markdown()
    for path in (_ref("*_teacher_s0_*.json"), _ref("*_kd_s0_*.json")):
        for key in json.loads(path.read_text()):
            assert f"| `{key}` |" in text, key
