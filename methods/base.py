"""The method interface: a distillation method is its loss terms and hyper-parameters.

The harness owns the loop, devices, precision, data and checkpoints. A method gets the student's
and teacher's outputs for a batch and returns named loss terms, which the harness sums and logs.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import (AbstractSet, Any, Callable, ClassVar, Dict, FrozenSet, Iterable, List, Literal, Mapping, Optional,
                    Sequence, Set, Tuple)

import torch
from torch import Tensor, nn

from ltkd_core.errors import unknown_name
from ltkd_core.outputs import DEFAULT_NEEDS, FIELD_NEEDS, NEEDS, Outputs

__all__ = ["Outputs", "MethodContext", "Method", "as_target", "linear_warmup", "NEEDS", "DEFAULT_NEEDS",
           "EPOCH_KINDS", "Need", "ALWAYS_FILLED", "FIELD_NEEDS", "KEYWORD_NEEDS", "filled_fields", "forward_keywords",
           "LossTerms", "check_loss_terms"]

#: One entry of ``Method.needs`` (one of ``NEEDS``), for type checkers.
Need = Literal["logits", "features", "feature_maps", "preact_maps", "index"]
# What ``forward(student, teacher, target, epoch)`` receives for a method's ``needs`` (student and teacher alike;
# these three sets partition ``NEEDS``):
#: :class:`Outputs` fields filled for every method, whatever it declares (both come from one forward pass).
ALWAYS_FILLED: FrozenSet[str] = frozenset({"logits", "features"})
# FIELD_NEEDS (ltkd_core.outputs): needs that fill the :class:`Outputs` field of the same name, else None.
#: Needs passed to ``forward`` as the keyword argument of the same name (``index=``: (B,) int64 dataset rows).
KEYWORD_NEEDS: FrozenSet[str] = frozenset({"index"})


def filled_fields(needs: AbstractSet[str]) -> FrozenSet[str]:
    """The :class:`Outputs` fields that ``forward`` finds filled (not None) for a method declaring ``needs``."""
    return ALWAYS_FILLED | (FIELD_NEEDS & frozenset(needs))


def forward_keywords(needs: AbstractSet[str]) -> FrozenSet[str]:
    """The keyword arguments ``forward`` receives beyond ``(student, teacher, target, epoch)`` for ``needs``."""
    return KEYWORD_NEEDS & frozenset(needs)


#: What ``Method.forward`` returns: loss-term name -> 0-dim tensor, each term ALREADY WEIGHTED by the method (its
#: alpha / beta, warm-up factor, T^2). The harness adds the values as they are (no weights of its own),
#: backpropagates the sum and logs each term as ``loss_<name>``.
LossTerms = Dict[str, Tensor]


def check_loss_terms(terms: Any, method: str) -> LossTerms:
    """``terms`` when it is what ``forward`` must return (:data:`LossTerms`), else a one-line TypeError naming the
    method and the term. Types and shapes only: no host sync, so the harness checks every step."""
    if not isinstance(terms, dict) or not terms:
        raise TypeError(f"method '{method}': forward returned {type(terms).__name__} {_brief(terms)}; return a "
                        f"non-empty dict of named loss terms, e.g. {{'ce': loss}} with 0-dim tensors")
    for name, value in terms.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"method '{method}': loss term {name!r} is {type(value).__name__} {_brief(value)}, not "
                            f"a tensor; return a 0-dim torch.Tensor")
        if value.dim() != 0:
            raise TypeError(f"method '{method}': loss term {name!r} has shape {tuple(value.shape)}, not 0-dim; "
                            f"reduce it to a scalar (e.g. .mean() over the batch)")
    return terms


_DEPRECATION_WARNED: Set[str] = set()  # deprecated names already warned about in this process


def _brief(value: Any) -> str:
    """``repr(value)`` cut to 40 characters (an error message shows what came back, not all of it)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: What an epoch-valued hyper-parameter (``Method.epoch_params``) counts; all of them rescale with ``--epochs``:
#: ``warmup``: a term ramps up linearly over that many epochs (:func:`linear_warmup`);
#: ``start``: something switches on after that 1-based epoch (BKD's ``drw_epoch``: epochs 1..v without it);
#: ``epochs``: any other number of epochs (only rescaled).
EPOCH_KINDS: FrozenSet[str] = frozenset({"warmup", "start", "epochs"})


def as_target(t: Tensor) -> Tensor:
    """A teacher output as a constant float32 target: detached, and usable by autograd even when the
    harness produced it under ``torch.inference_mode`` (such tensors cannot be saved for backward)."""
    t = t.detach().float()
    return t.clone() if t.is_inference() else t


def linear_warmup(epoch: int, warmup: float) -> float:
    """``min(epoch / warmup, 1)`` for a 1-based epoch (mdistiller's DKD schedule); 1 when warmup <= 0."""
    return 1.0 if warmup <= 0 else min(float(epoch) / float(warmup), 1.0)


@dataclass
class MethodContext:
    """Facts about the run a method may need: class counts of the TRAIN split, feature widths, epochs."""

    class_counts: Sequence[int]
    student_dim: int
    teacher_dim: Optional[int] = None
    epochs: int = 1
    #: rows of the training split: the range of the sample ``index`` (CRD's memory bank)
    num_train: Optional[int] = None
    #: class of each training row, by dataset index (CRD's negatives from other classes)
    train_targets: Optional[Sequence[int]] = None
    #: (C, H, W) of each feature level at the training input size (connectors; ``benchmark.models.map_shapes``)
    student_shapes: Optional[Sequence[Tuple[int, int, int]]] = None
    teacher_shapes: Optional[Sequence[Tuple[int, int, int]]] = None

    @property
    def num_classes(self) -> int:
        """Classes of the task (one count per class)."""
        return len(self.class_counts)


_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s\])]+)\s*([\])])\s*$")


def _parse_interval(text: str, where: str) -> Tuple[float, float, bool, bool]:
    """``"(0, inf)"`` -> ``(low, high, low_closed, high_closed)``; a malformed declaration is a TypeError."""
    m = _INTERVAL.match(str(text))
    try:
        low, high = float(m.group(2)), float(m.group(3))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise TypeError(f"{where}: {text!r} is not an interval such as '(0, inf)' or '[0, 1]'") from None
    return low, high, m.group(1) == "[", m.group(4) == "]"  # type: ignore[union-attr]


def _check_bounds(value: Any, text: str, where: str) -> None:
    """Raise ValueError unless the number ``value`` lies in the interval ``text``."""
    low, high, low_closed, high_closed = _parse_interval(text, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    ok = (value >= low if low_closed else value > low) and (value <= high if high_closed else value < high)
    if not ok:
        if math.isinf(high):
            need = f"{'>=' if low_closed else '>'} {low:g}"
        elif math.isinf(low):
            need = f"{'<=' if high_closed else '<'} {high:g}"
        else:
            need = f"in {text.strip()}"
        raise ValueError(f"{where} must be {need}, got {value!r}")


def _check_type(value: Any, default: Any, where: str) -> Any:
    """``value`` converted to its default's type (int 2 -> 2.0 for a float default); TypeError when it cannot be."""
    if default is None:
        return value
    if value is None:
        raise TypeError(f"{where} has no value (an empty `key:` or `key=`); give one like the default {default!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        if isinstance(default, int):
            if value != int(value):
                raise TypeError(f"{where} must be a whole number (its default is {default}), got {value!r}")
            return int(value)
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {value!r}")
    return value


def _epochs(n: int) -> str:
    """``"1 epoch"`` / ``"4 epochs"``."""
    return f"{n} epoch" + ("" if n == 1 else "s")


def _check_epoch_params(cls: type) -> Dict[str, str]:
    """``cls.epoch_params`` as a name -> kind dict (a tuple of names: kind ``epochs``); a TypeError names a
    declared name that is not a numeric hyper-parameter or a kind outside ``EPOCH_KINDS``."""
    declared = cls.epoch_params
    if isinstance(declared, (tuple, list, set, frozenset)):
        declared = {name: "epochs" for name in declared}
    if not isinstance(declared, Mapping):
        raise TypeError(f"{cls.__qualname__}.epoch_params must map hyper-parameter names to a kind "
                        f"({', '.join(sorted(EPOCH_KINDS))}), e.g. {{'warmup': 'warmup'}}; got {declared!r}")
    hparams = getattr(cls, "hparams", {})
    for key, kind in declared.items():
        default = hparams.get(key)
        if key not in hparams or isinstance(default, bool) or not isinstance(default, (int, float)):
            raise TypeError(f"{cls.__qualname__}.epoch_params names '{key}', which is not a numeric hyper-parameter "
                            f"in hparams")
        if kind not in EPOCH_KINDS:
            raise TypeError(f"{cls.__qualname__}.epoch_params['{key}']: kind {kind!r} is not one of "
                            f"{', '.join(sorted(EPOCH_KINDS))}")
    return dict(declared)


class Method(nn.Module):
    """Base class of every method.

    Subclasses set ``hparams`` (name -> default) and implement :meth:`forward`. Hyper-parameters are
    available as attributes (``self.temperature``) and are stored in every run record. A method may
    own modules (e.g. a projector); the harness moves them to the device and trains them with the
    student. ``setup`` runs once before training with the frozen teacher and the un-augmented train set.

    ``hparam_bounds`` (optional) maps a numeric hyper-parameter to its allowed interval, written as in
    maths: ``{"temperature": "(0, inf)", "alpha": "[0, 1]", "warmup": "[0, inf)"}`` (``(``/``)`` open,
    ``[``/``]`` closed). Every value is also type-checked against its default (bool -> true/false, int ->
    integer, float -> finite number, str -> string; a None default accepts anything).
    :meth:`validate_hparams` applies both, both when a suite is loaded and in ``__init__``.

    ``epoch_params`` declares the hyper-parameters that count epochs, name -> kind (see ``EPOCH_KINDS``):
    ``{"warmup": "warmup"}``, ``{"drw_epoch": "start"}`` (a tuple of names means kind ``epochs``). The harness
    rescales exactly these when a run's length changes (``--epochs``) and warns before training when one
    makes part of the method inert for the whole run (:meth:`schedule_warnings`).
    """

    name: ClassVar[str] = ""
    hparams: ClassVar[Dict[str, Any]] = {}
    #: Allowed interval of numeric hyper-parameters, e.g. ``{"temperature": "(0, inf)"}`` (see the class docstring).
    hparam_bounds: ClassVar[Dict[str, str]] = {}
    #: True: ``forward`` gets the frozen teacher's :class:`Outputs` (read them through :meth:`checked_teacher`).
    #: False: it always gets ``teacher=None``, and a cell made only of such methods loads no teacher.
    requires_teacher: ClassVar[bool] = True
    #: What the method reads (each a :data:`Need`); the harness computes only that, for student and teacher alike,
    #: in one forward each: :func:`filled_fields` gives the :class:`Outputs` fields filled (logits and features
    #: always; "feature_maps" / "preact_maps" when declared), :func:`forward_keywords` the keyword arguments
    #: ("index" passes ``index=``).
    needs: ClassVar[FrozenSet[str]] = DEFAULT_NEEDS
    #: One line shown by ``python -m benchmark list`` and in the leaderboard legend.
    summary: ClassVar[str] = ""
    #: Hyper-parameters that count epochs, name -> kind in ``EPOCH_KINDS`` (see the class docstring).
    epoch_params: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the ``hparam_bounds`` and ``epoch_params`` declarations when the class is defined (a typo
        fails at import)."""
        super().__init_subclass__(**kwargs)
        for key, text in cls.hparam_bounds.items():
            if key not in cls.hparams:
                raise TypeError(f"{cls.__qualname__}.hparam_bounds names '{key}', which is not in hparams")
            _parse_interval(text, f"{cls.__qualname__}.hparam_bounds['{key}']")
        cls.epoch_params = _check_epoch_params(cls)

    @classmethod
    def schedule_warnings(cls, params: Mapping[str, Any], epochs: int) -> List[str]:
        """One line per epoch-valued hyper-parameter in ``params`` that makes part of the method inert in an
        ``epochs``-long run: a ``start`` at or after the last epoch (never switches on), a ``warmup`` longer
        than the run (never reaches full weight). Shown before training; override to add method-specific checks."""
        out = []
        for key, kind in cls.epoch_params.items():
            value = params.get(key, cls.hparams[key])
            if kind == "start" and value >= epochs:
                out.append(f"{cls.name}: {key}={value:g} but the student trains {_epochs(epochs)}, so what {key} "
                           f"switches on (after epoch {value:g}) never happens and {cls.name} runs without it for the "
                           f"whole run; set {key} below {epochs} or train longer")
            elif kind == "warmup" and value > epochs:
                out.append(f"{cls.name}: {key}={value:g} is longer than the student's {_epochs(epochs)}, so the "
                           f"warmed-up term never reaches full weight (at most {epochs / value:.2g} of it); set {key} "
                           f"<= {epochs} or train longer")
        return out

    @classmethod
    def validate_hparams(cls, overrides: Mapping[str, Any], where: str = "") -> Dict[str, Any]:
        """The defaults updated with ``overrides``, type- and range-checked; raises ValueError/TypeError.

        The one validator of hyper-parameters: the config layer calls it on ``method_params`` while a suite
        is loaded, ``__init__`` on what it is given. ``where`` prefixes messages (default: ``method '<name>'``).
        """
        where = where or f"method '{cls.name}'"
        for key in overrides:
            if key not in cls.hparams:
                raise ValueError(unknown_name(where, "hyper-parameter", key, sorted(cls.hparams)))
        config: Dict[str, Any] = {}
        for key, default in cls.hparams.items():
            value = overrides.get(key, default)
            if key in overrides:
                value = _check_type(value, default, f"{where}: hyper-parameter '{key}'")
                if key in cls.hparam_bounds:
                    _check_bounds(value, cls.hparam_bounds[key], f"{where}: hyper-parameter '{key}'")
            config[key] = value
        return config

    def __init__(self, ctx: MethodContext, **overrides: Any) -> None:
        super().__init__()
        self.ctx = ctx
        self.config: Dict[str, Any] = self.validate_hparams(overrides)
        for key, value in self.config.items():
            setattr(self, key, value)
        self.register_buffer("class_counts", torch.as_tensor(list(ctx.class_counts), dtype=torch.float32),
                             persistent=False)

    @property
    def log_prior(self) -> Tensor:
        """log(pi_c) on the method's device, from the training class counts (a class absent from the
        train split counts as 1 sample, so the prior stays finite)."""
        counts = self.class_counts.clamp_min(1.0)
        return torch.log(counts / counts.sum())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())

    def checked_teacher(self, teacher: Optional[Outputs]) -> Outputs:
        """The teacher's outputs, or a clear error when the harness passed none."""
        if teacher is None:
            raise ValueError(f"method '{self.name}' needs teacher outputs (requires_teacher=True), got None")
        return teacher

    def require_teacher(self, teacher: Optional[Outputs]) -> Outputs:
        """Deprecated alias of :meth:`checked_teacher` (renamed: it read like the ``requires_teacher`` attribute);
        kept for methods outside this repository, warns once per process."""
        if "require_teacher" not in _DEPRECATION_WARNED:
            _DEPRECATION_WARNED.add("require_teacher")
            warnings.warn(f"method '{self.name}': Method.require_teacher(teacher) is deprecated, renamed "
                          f"checked_teacher(teacher); call that instead", FutureWarning, stacklevel=2)
        return self.checked_teacher(teacher)

    def require_maps(self, outputs: Outputs, kind: str = "feature_maps") -> List[Tensor]:
        """``outputs.feature_maps`` (or ``preact_maps``), or a clear error when ``needs`` did not ask for them."""
        maps = getattr(outputs, kind)
        if maps is None:
            raise ValueError(f"method '{self.name}' got no {kind}: declare needs = frozenset({{..., '{kind}'}}) "
                             f"so that the harness computes them")
        return maps

    def setup(
        self,
        teacher: Optional[Callable[[Tensor], Outputs]],
        train_batches: Callable[[], Iterable[Tuple[Tensor, Tensor]]],
    ) -> None:
        """One-time preparation before training (priors, prototypes). Default: nothing.

        ``teacher(x)`` returns the frozen teacher's :class:`Outputs` (no grad, with what ``needs`` asks
        for); ``train_batches()`` yields un-augmented, normalised ``(x, y)`` training batches on the
        training device.
        """

    def forward(self, student: Outputs, teacher: Optional[Outputs], target: Tensor, epoch: int) -> LossTerms:
        """Loss terms for one batch (:data:`LossTerms`: 0-dim tensors, already weighted; the harness sums them);
        ``epoch`` is 1-based. ``student`` / ``teacher`` hold the fields :func:`filled_fields` of ``needs`` names
        (``teacher`` is None unless ``requires_teacher``); a method whose ``needs`` include "index" also gets
        ``index=`` (the batch's dataset row indices, (B,) int64)."""
        raise NotImplementedError
