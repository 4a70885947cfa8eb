"""One typed run record: what ``runs/<run_id>.json`` holds, built once from a spec and its training result.

:class:`RunRecord` is the project's largest contract: the runner writes it, and the reports, the verdict, the
CI gate, ``eval`` and the reference reuse read it, always through its attributes. ``to_json`` writes the keys
in the order the runner always wrote them (a record is byte-for-byte what it was before this type existed);
``from_json`` reads every record format this project has written:

* schema 1 (the first harness): ``student_arch`` for every role, ``base_lr``, the environment (versions,
  device, git state) as top-level keys; no ``code`` or ``effective`` block;
* schema 2 (current): ``arch``, ``student_lr``, ``code`` / ``env`` / ``effective`` blocks.

The schema is recognised from the keys and kept in :attr:`RunRecord.schema` (never written, so new records
stay identical to the old ones). Missing fields of older records get their documented defaults; keys this
version does not know are kept in :attr:`RunRecord.extra` and written back after the known ones (a record
of a newer version survives a copy by this one). ``docs/records.md`` is rendered from the fields
(:func:`schema_markdown`; ``python -m benchmark.record docs/records.md`` rewrites it).
"""
import dataclasses
import json
import os
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from .fileio import atomic_write_text

__all__ = ["RunRecord", "RecordError", "RunContext", "SCHEMA_VERSION", "as_record", "as_records", "schema_markdown",
           "main"]

SCHEMA_VERSION = 2  # the layout to_json writes (see the module docstring for 1)
_SCHEMA_KEY = "schema"  # reserved: a future layout that states its version; one above SCHEMA_VERSION is refused
_V1_CODE_KEYS = {"ltkd_bench": "version", "git_commit": "git_commit", "git_dirty": "git_dirty"}
_V1_ENV_KEYS = ("device", "torch", "torchvision", "timm", "python", "hostname", "world_size")
_REQUIRED = ("run_id", "status", "role", "dataset", "method", "seed", "arch")
_EVAL_KEYS = ("epoch", "overall", "per_class_acc", "group_sizes")  # what an ok record's final / best must hold


class RecordError(ValueError):
    """A run record that cannot be read: one line naming the file (when known) and the field."""


def _f(doc: str, default: Any = None, *, when: str = "always", stored: bool = True, factory: Any = None) -> Any:
    """A record field with its one-line ``doc``, when it is written (``when``) and whether it is written at all."""
    meta = {"doc": doc, "when": when, "stored": stored}
    if factory is not None:
        return field(default_factory=factory, metadata=meta, compare=stored)
    return field(default=default, metadata=meta, compare=stored)


def _required(doc: str) -> Any:
    """A field every record file has (None only in a partial record read by :func:`as_record`)."""
    return field(default=None, metadata={"doc": doc, "when": "always", "stored": True, "required": True})


@dataclass(frozen=True)
class RunContext:
    """What every record of one grid shares: the suite, code, machine and device it ran on."""

    suite: str
    code: Dict[str, Any]
    env: Dict[str, Any]
    config: Dict[str, Any]
    device: str  # e.g. ``cuda:0`` or ``cpu``
    deterministic: bool


@dataclass(kw_only=True)
class RunRecord:
    """One run (teacher or student): its settings, provenance and results, as stored in ``runs/<run_id>.json``."""

    # identity and outcome (field order = key order in the file)
    run_id: str = _required("readable prefix + hash of the effective settings; the file is `runs/<run_id>.json`")
    status: str = _required("`ok` or `failed`")
    reason: Optional[str] = _f("why the run failed (`Type: message`); null when ok")
    failure_kind: Optional[str] = _f("`deterministic` (a rerun fails the same way) or `error`; null when ok")
    role: str = _required("`teacher` or `student`")
    suite: Optional[str] = _f("the suite (config name) that ran it")
    dataset: str = _required("registered dataset name, e.g. `fmnist-lt`")
    imbalance_factor: Optional[float] = _f("long-tail imbalance factor (head / tail images); null: the split's own")
    data_seed: Optional[int] = _f("seed of the long-tailed subsampling")
    data_options: Dict[str, Any] = _f("dataset build options, e.g. `{\"n_max\": 3000}`", factory=dict)
    seed: int = _required("training seed")
    arch: str = _required("the network this run trained (`student_arch` in schema 1)")
    teacher_arch: Optional[str] = _f("the student's teacher; a teacher run names its own arch")
    teacher_run_id: Optional[str] = _f("run id of the student's teacher; null for a teacher")
    method: str = _required("method name (`ce` for a teacher)")
    method_params: Dict[str, Any] = _f("the method's effective hyper-parameters", factory=dict)
    recipe: Dict[str, Any] = _f("the effective training recipe, as the device ran it", factory=dict)
    student_lr: Optional[float] = _f("the pair's student learning rate (`base_lr` in schema 1); null: recipe lr")
    created: Optional[str] = _f("when the record was written, `%Y-%m-%dT%H:%M:%S%z`")
    code: Optional[Dict[str, Any]] = _f("code provenance: `family`, `fingerprint`, `version`, `git_commit`, "
                                        "`git_dirty`")
    env: Optional[Dict[str, Any]] = _f("machine: `device`, `torch`, `torchvision`, `timm`, `python`, `hostname`, "
                                       "`world_size`, `threads`")
    effective: Optional[Dict[str, Any]] = _f("what the device used: `device`, `amp_dtype`, `channels_last`, "
                                             "`compile`, `fused_sgd`, `deterministic`, `cell_size`")
    config: Optional[Dict[str, Any]] = _f("the whole suite config the run came from")
    init: Optional[Dict[str, Any]] = _f("a teacher started from weights: `origin`, `sha256`, `finetuned`",
                                        when="teachers started from weights")
    teacher_recipe: Optional[Dict[str, Any]] = _f("the teacher's recipe (null when its record was missing)",
                                                  when="students")
    num_classes: Optional[int] = _f("number of classes", when="runs whose data was built")
    class_counts: Optional[List[int]] = _f("training images per class", when="runs whose data was built")
    final: Optional[Dict[str, Any]] = _f("last epoch's evaluation: `epoch`, `overall`, `per_class_acc`, "
                                         "`per_class_test_count`, group accuracies, `group_sizes`",
                                         when="runs that trained")
    best: Optional[Dict[str, Any]] = _f("the evaluation of the best epoch (same keys as `final`)",
                                        when="runs that trained")
    epochs: Optional[int] = _f("epochs completed", when="runs that trained")
    history: Optional[List[Dict[str, Any]]] = _f("one row per epoch: `epoch`, `lr`, `train_acc`, mean losses "
                                                 "(`loss`, `loss_<term>`), test metrics when evaluated; epoch 1's "
                                                 "row also `first_loss`, the first step's loss",
                                                 when="runs that trained")
    wall_time_s: Optional[float] = _f("wall-clock seconds of the cell", when="runs that trained")
    train_time_s: Optional[float] = _f("seconds spent training", when="runs that trained")
    images_per_s: Optional[float] = _f("training throughput", when="runs that trained")
    resumed_from: Optional[Dict[str, Any]] = _f("the checkpoint the run resumed from (`epoch`, ...); null if none",
                                                when="runs that trained")
    predictions_sha256: Optional[str] = _f("SHA-256 of `runs/<run_id>.predictions.npz` (benchmark.integrity)",
                                           when="runs that stored predictions")
    copied_from: Optional[Dict[str, Any]] = _f("a teacher copied from the committed reference: `reference`, "
                                               "`weights_sha256`", when="teachers adopted from the reference")
    extra: Dict[str, Any] = _f("keys this version does not know, kept and written back after the known ones",
                               when="records of another version", factory=dict)
    # in memory only (never written)
    schema: int = _f("the layout the record was read in (1 or 2); new records are 2", SCHEMA_VERSION, stored=False)
    verified: Optional[bool] = _f("set by benchmark.integrity: True recomputed from predictions, False none to "
                                  "check, null not checked", stored=False)
    reference_dir: Optional[str] = _f("set by benchmark.reference: the reference folder this record was read from",
                                      stored=False)

    # ------------------------------------------------------------------ build once
    @classmethod
    def from_run(cls, spec: Any, result: Any, ctx: RunContext, *, status: str, reason: Optional[str] = None,
                 failure_kind: Optional[str] = None, data: Any = None, init: Optional[Dict[str, Any]] = None,
                 teacher_recipe: Optional[Dict[str, Any]] = None) -> "RunRecord":
        """The record of ``spec`` (a :class:`~benchmark.runner.RunSpec`) and its ``result`` (a ``TrainResult``, or
        None when it never trained); ``data``: its training data (None when it was never built)."""
        recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(spec.recipe).items()}
        student = spec.role == "student"
        return cls(
            run_id=spec.run_id, status=status, reason=reason, failure_kind=failure_kind, role=spec.role,
            suite=ctx.suite, dataset=spec.dataset, imbalance_factor=spec.imbalance_factor, data_seed=spec.data_seed,
            data_options=dict(spec.data_options), seed=spec.seed, arch=spec.arch,
            teacher_arch=spec.teacher_arch if student else spec.arch, teacher_run_id=spec.teacher_id,
            method=spec.method, method_params=dict(spec.method_params), recipe=recipe, student_lr=spec.student_lr,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), code=ctx.code, env=ctx.env,
            effective=_effective(ctx, recipe, result), config=ctx.config, init=init,
            teacher_recipe=teacher_recipe if student else None, **_data_fields(data), **_result_fields(result))

    # ------------------------------------------------------------------ views
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def is_student(self) -> bool:
        return self.role == "student"

    @property
    def is_teacher(self) -> bool:
        return self.role == "teacher"

    @property
    def teacher(self) -> Optional[str]:
        """A student's teacher; for a teacher run, its own architecture (the teacher of its table)."""
        return self.teacher_arch if self.is_student else self.arch

    @property
    def code_family(self) -> Optional[str]:
        """``code.family``; None for records written before code families existed."""
        return self.code.get("family") if isinstance(self.code, Mapping) else None

    def result_problem(self) -> Optional[str]:
        """Why an ok record cannot be reported (results missing, or an evaluation lacking a key), else None."""
        if not self.ok:
            return None
        missing = [n for n in ("final", "best", "class_counts") if getattr(self, n) is None]
        if missing:
            return f"missing {', '.join(missing)} (an ok run record holds its results)"
        for part in ("final", "best"):
            absent = [k for k in _EVAL_KEYS if k not in getattr(self, part)]
            if absent:
                return f"'{part}' lacks {', '.join(absent)}"
        return None

    def result(self, part: str = "final") -> Dict[str, Any]:
        """The ``final`` or ``best`` evaluation ({} when the run never trained)."""
        if part not in ("final", "best"):
            raise ValueError(f"unknown result part '{part}'; use 'final' or 'best'")
        return getattr(self, part) or {}

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> Dict[str, Any]:
        """The record as the runner writes it: keys in their order, conditional ones only when they apply."""
        out: Dict[str, Any] = {}
        for f in _stored_fields():
            if f.name != "extra" and _written(self, f.name):
                if f.name == "teacher_recipe":
                    out["student_arch"] = self.arch  # students also name their arch, as schema 1 did
                out[f.name] = getattr(self, f.name)
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    def dumps(self) -> str:
        """The file's text: ``to_json`` indented by one, newline-terminated."""
        return json.dumps(self.to_json(), indent=1, sort_keys=False, default=_json_default) + "\n"

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the record to ``path`` atomically."""
        return atomic_write_text(path, self.dumps())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "RunRecord":
        """The record in ``path``; RecordError naming the file when it is not JSON or not a run record."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise RecordError(f"{path}: not a readable JSON run record ({type(err).__name__}: "
                              f"{' '.join(str(err).split())})") from None
        return cls.from_json(data, source=path)

    @classmethod
    def from_json(cls, data: Any, source: Union[str, os.PathLike, None] = None, *,
                  required: Iterable[str] = _REQUIRED) -> "RunRecord":
        """A record of any schema this project wrote; RecordError (one line: ``source`` and the field) when a
        ``required`` field is missing or a field has the wrong type."""
        where, fix = (f"{source}: ", "; fix or delete the file") if source is not None else ("", "")
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}a JSON {type(data).__name__}, not a run record (an object)")
        schema = _schema_of(data, where)
        known = _upgrade(data) if schema == 1 else dict(data)
        known.pop(_SCHEMA_KEY, None)
        fields = {f.name: f for f in _stored_fields() if f.name != "extra"}
        problem = _missing(known, required) or _wrong_type(known, fields)
        if problem:
            raise RecordError(f"{where}{problem}{fix}")
        extra = {k: v for k, v in known.items() if k not in fields and k != "student_arch"}
        return cls(**{k: v for k, v in known.items() if k in fields}, extra=extra, schema=schema)

    # ------------------------------------------------------------------ read-only mapping view (older callers)
    def __getitem__(self, key: str) -> Any:
        """``rec["final"]``: the stored JSON value of ``key`` (for code written when records were dicts)."""
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()


# ----------------------------------------------------------------------------- helpers


def _stored_fields() -> List[dataclasses.Field]:
    """The fields a record file holds, in its key order (the in-memory marks left out)."""
    return [f for f in dataclasses.fields(RunRecord) if f.metadata.get("stored", True)]


_CONDITIONAL = {  # field -> when it is written (to_json), as the runner always wrote them
    "init": lambda r: r.init is not None,
    "teacher_recipe": lambda r: r.is_student,
    "num_classes": lambda r: r.class_counts is not None,
    "class_counts": lambda r: r.class_counts is not None,
    "predictions_sha256": lambda r: r.predictions_sha256 is not None,
    "copied_from": lambda r: r.copied_from is not None,
}
_RESULT_KEYS = ("final", "best", "epochs", "history", "wall_time_s", "train_time_s", "images_per_s", "resumed_from")


def _written(rec: RunRecord, name: str) -> bool:
    """Whether ``to_json`` writes field ``name`` for ``rec`` (result keys: only for a run that trained)."""
    if name in _RESULT_KEYS:
        return rec.final is not None
    test = _CONDITIONAL.get(name)
    return test(rec) if test is not None else True


def _data_fields(data: Any) -> Dict[str, Any]:
    """``num_classes`` and ``class_counts`` of a run's training data (none when it was never built)."""
    return {} if data is None else {"num_classes": data.num_classes, "class_counts": list(data.class_counts)}


def _result_fields(result: Any) -> Dict[str, Any]:
    """The fields a ``TrainResult`` fills: evaluations, history, timings, resume point (none when never trained)."""
    if result is None:
        return {}
    return {"final": result.final, "best": result.best, "epochs": result.epochs_completed, "history": result.history,
            "wall_time_s": result.wall_time_s, "train_time_s": result.train_time_s,
            "images_per_s": result.images_per_s, "resumed_from": result.resumed_from}


def _effective(ctx: RunContext, recipe: Mapping[str, Any], result: Any) -> Dict[str, Any]:
    """What the device actually used for a run (precision, layout, compile, fused SGD, cell size)."""
    return {"device": ctx.device, "amp_dtype": "bfloat16" if recipe.get("amp") else None,
            "channels_last": recipe.get("channels_last"), "compile": recipe.get("compile"),
            "fused_sgd": ctx.device.split(":")[0] == "cuda", "deterministic": ctx.deterministic,
            "cell_size": result.cell_size if result is not None else None}


def _schema_of(data: Mapping[str, Any], where: str) -> int:
    """1 for the first harness's layout (no ``arch`` key), else the stated or current schema."""
    stated = data.get(_SCHEMA_KEY)
    if stated is not None and not _fits(stated, int):
        raise RecordError(f"{where}field 'schema' is {type(stated).__name__} {_short(stated)}, expected integer")
    if stated is not None and stated > SCHEMA_VERSION:
        raise RecordError(f"{where}field 'schema' is {stated}: written by a newer ltkd-bench than this one "
                          f"(schema {SCHEMA_VERSION}); upgrade ltkd-bench to read it")
    if stated is not None:
        return stated
    return 1 if "arch" not in data and "student_arch" in data else SCHEMA_VERSION


def _upgrade(data: Mapping[str, Any]) -> Dict[str, Any]:
    """A schema-1 record in schema-2 names: ``arch``, ``student_lr``, ``code`` and ``env`` blocks."""
    out = {k: v for k, v in data.items() if k not in _V1_CODE_KEYS and k not in _V1_ENV_KEYS and k != "base_lr"}
    out["arch"] = data["student_arch"]
    out.setdefault("student_lr", data.get("base_lr"))
    if "code" not in data and any(k in data for k in _V1_CODE_KEYS):
        out["code"] = {new: data.get(old) for old, new in _V1_CODE_KEYS.items()}
    if "env" not in data and any(k in data for k in _V1_ENV_KEYS):
        out["env"] = {k: data.get(k) for k in _V1_ENV_KEYS}
    return out


def _missing(known: Mapping[str, Any], required: Iterable[str]) -> Optional[str]:
    """``missing a, b (...)`` for the required fields ``known`` lacks, else None."""
    missing = [n for n in required if n not in known]
    return f"missing {', '.join(missing)} (not a run record of this schema)" if missing else None


def _wrong_type(known: Mapping[str, Any], fields: Mapping[str, dataclasses.Field]) -> Optional[str]:
    """``field 'seed' is str "0", expected integer`` for the first field whose value does not fit, else None."""
    for name, value in known.items():
        if name in fields and not _fits(value, fields[name].type):
            return (f"field '{name}' is {type(value).__name__} {_short(value)}, expected "
                    f"{_type_name(fields[name].type)}")
    return None


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a field annotation (a bool is no int; an int is a float)."""
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {dict: dict, list: list}.get(origin, tp))


def _type_name(tp: Any) -> str:
    """A JSON-flavoured name of a field annotation: ``string or null``, ``array of integer``, ``object``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"array of {_type_name(args[0])}" if args and args[0] is not Any else "array"
    if origin is dict:
        return "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}.get(tp, "any")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_default(obj: Any) -> Any:
    """numpy arrays and scalars as lists / numbers, paths as strings (what a TrainResult may carry)."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def as_record(rec: Union[RunRecord, Mapping[str, Any]]) -> RunRecord:
    """``rec`` itself, or a plain dict (a test's, a notebook's) read with :meth:`RunRecord.from_json`; a partial
    dict is accepted (its missing fields are None), field types are still checked."""
    return rec if isinstance(rec, RunRecord) else RunRecord.from_json(rec, required=())


def as_records(recs: Iterable[Union[RunRecord, Mapping[str, Any]]]) -> List[RunRecord]:
    return [as_record(r) for r in recs]


# ----------------------------------------------------------------------------- docs/records.md


_DOC_INTRO = (
    "Each run writes `runs/<run_id>.json`, one JSON object: a `benchmark.record.RunRecord`. Keys are written in this "
    "order; a key whose *written* column is not *always* is absent where it does not apply. This is schema {v}; "
    "`RunRecord.from_json` also reads schema 1 (the first harness: `student_arch` for every role, `base_lr`, "
    "versions and git state as top-level keys), giving missing fields their defaults. Keys this version does not "
    "know are kept (`RunRecord.extra`) and written back after these, in their order; a field of the wrong type is "
    "refused with one line naming the file and the field.")
_STUDENT_ARCH_LINE = ("| `student_arch` | string | students | = `arch` | the student's architecture (schema 1 wrote "
                      "it for every role) |")


def schema_markdown() -> str:
    """``docs/records.md``: every field of :class:`RunRecord` with its JSON type, when it is written and its doc."""
    lines = ["# Run records", "", "<!-- generated by `python -m benchmark.record docs/records.md` from "
             "benchmark/record.py: edit the fields' docs there, not this file -->", "",
             _DOC_INTRO.format(v=SCHEMA_VERSION), "", "| key | type | written | default | meaning |",
             "|---|---|---|---|---|"]
    for f in _stored_fields():
        if f.name == "teacher_recipe":
            lines.append(_STUDENT_ARCH_LINE)  # written just before it (RunRecord.to_json)
        if f.name != "extra":
            lines.append(_field_line(f))
    lines += ["", "In memory only (never written): " + "; ".join(
        f"`{f.name}` ({f.metadata['doc']})" for f in dataclasses.fields(RunRecord)
        if not f.metadata.get("stored", True)) + ".", ""]
    return "\n".join(lines)


def _field_line(f: dataclasses.Field) -> str:
    if f.metadata.get("required"):
        default = "required"
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f"`{json.dumps(f.default_factory())}`"  # type: ignore[misc]
    else:
        default = f"`{json.dumps(f.default)}`"
    return f"| `{f.name}` | {_type_name(f.type)} | {f.metadata['when']} | {default} | {f.metadata['doc']} |"


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m benchmark.record [PATH]``: print the schema page, or write it to PATH atomically."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        atomic_write_text(argv[0], schema_markdown())
    else:
        print(schema_markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
