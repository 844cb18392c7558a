"""Curve features of one trial: its learning curves as stored, and what they show on their own
(best and final epochs, climb, noise, non-finite values, jumps, rising or oscillating train
loss, explosive starts)."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from thaw.reports.diagnosis._format import _EPS
from thaw.reports.diagnosis._thresholds import Thresholds

__all__ = ["TrialCurves"]


def _clean_series(values: Any) -> tuple[float | None, ...]:
    if not isinstance(values, (list, tuple)):
        return ()
    out: list[float | None] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            out.append(None)
        else:
            out.append(float(v))
    return tuple(out)


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@dataclass(frozen=True)
class TrialCurves:
    """Learning curves and settings of one trial, as stored by thaw.

    Index ``i`` of each history series is epoch ``i + 1`` (epochs continue across the warm-up
    and fine-tuning phases); ``None`` marks a non-finite value. Lists are converted to tuples
    and non-finite numbers to ``None``.

    Attributes:
        number: Trial number.
        params: Trial params (``unfrozen_layers``, ``learning_rate``, ``dropout``,
            ``weight_decay``, maybe ``batchnorm``).
        loss: Train loss per epoch.
        val_loss: Validation loss per epoch.
        accuracy: Train accuracy per epoch.
        val_accuracy: Validation accuracy per epoch.
        state: Optuna trial state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ...).
        prune_reason: ``climbing``, ``below_peers`` or ``diverged`` for pruned trials.
        warmup_epochs: Head-only epochs before unfreezing (0 = unfrozen from epoch 1).
        prune_epoch: Epoch the trial was pruned at, if any.
        strategy: Textbook reference strategy name, if the trial is one.
        num_classes: Number of classes K of the target, when known: the chance level of a
            cross-entropy is ln K and of the accuracy 1/K. Of a multi-label target, the number
            of labels.
        multilabel: The target is multi-label (a sigmoid per label, binary cross-entropy, the
            accuracy over image-label pairs).
        chance_levels: (loss, accuracy) of a guess that has learnt nothing, as stored with the
            study (``thaw:chance``); ``None``: ln K and 1/K (multi-label: ln 2 and 0.5).
        probes: End-of-trial measurements (user attr ``probes``, see ``objectives._probes``):
            ``train_loss``/``train_accuracy`` in inference mode, ``val_loss_moving_stats`` and
            ``val_loss_batch_stats`` (BatchNorm probe), ``weight_drift`` per unfrozen block.
    """

    number: int
    params: Mapping[str, Any] = field(default_factory=dict)
    loss: Sequence[float | None] = ()
    val_loss: Sequence[float | None] = ()
    accuracy: Sequence[float | None] = ()
    val_accuracy: Sequence[float | None] = ()
    state: str = "COMPLETE"
    prune_reason: str | None = None
    warmup_epochs: int = 0
    prune_epoch: int | None = None
    strategy: str | None = None
    num_classes: int | None = None
    probes: Mapping[str, Any] = field(default_factory=dict)
    multilabel: bool = False
    chance_levels: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(
            self, "probes", dict(self.probes) if isinstance(self.probes, Mapping) else {}
        )
        k = _opt_int(self.num_classes)
        object.__setattr__(self, "num_classes", k if k is not None and k >= 2 else None)
        for name in ("loss", "val_loss", "accuracy", "val_accuracy"):
            object.__setattr__(self, name, _clean_series(getattr(self, name)))
        object.__setattr__(self, "warmup_epochs", max(0, _opt_int(self.warmup_epochs) or 0))

    @classmethod
    def from_frozen_trial(
        cls,
        ft: FrozenTrial,
        *,
        intermediate_is_val_loss: bool = False,
        num_classes: int | None = None,
        multilabel: bool = False,
        chance_levels: tuple[float, float] | None = None,
    ) -> TrialCurves:
        """Read curves from a trial as stored by thaw (see ``docs/storage.md``).

        Missing or malformed user attributes give empty curves rather than errors. With
        ``intermediate_is_val_loss`` (the study's objective is ``val_loss``), a trial without a
        ``history`` attribute (written before it existed) gets its val loss curve from its
        intermediate values (step = epoch).
        """
        attrs = ft.user_attrs
        history = attrs.get("history")
        if not isinstance(history, Mapping):
            history = {}
            if intermediate_is_val_loss and ft.intermediate_values:
                steps = ft.intermediate_values
                history = {"val_loss": [steps.get(e) for e in range(1, max(steps) + 1)]}
        prune_reason = attrs.get("prune_reason")
        strategy = attrs.get("strategy")
        return cls(
            number=ft.number,
            params=dict(ft.params),
            loss=_clean_series(history.get("loss")),
            val_loss=_clean_series(history.get("val_loss")),
            accuracy=_clean_series(history.get("accuracy")),
            val_accuracy=_clean_series(history.get("val_accuracy")),
            state=ft.state.name,
            prune_reason=prune_reason if isinstance(prune_reason, str) else None,
            warmup_epochs=_opt_int(attrs.get("warmup_epochs")) or 0,
            prune_epoch=_opt_int(attrs.get("prune_epoch")),
            strategy=strategy if isinstance(strategy, str) else None,
            num_classes=num_classes,
            probes=probes if isinstance(probes := attrs.get("probes"), Mapping) else {},
            multilabel=multilabel,
            chance_levels=chance_levels,
        )

    def _num(self, key: str) -> float | None:
        v = self.params.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    @property
    def unfrozen_layers(self) -> int | None:
        v = self._num("unfrozen_layers")
        return None if v is None else int(v)

    @property
    def learning_rate(self) -> float | None:
        return self._num("learning_rate")

    @property
    def dropout(self) -> float | None:
        return self._num("dropout")

    @property
    def weight_decay(self) -> float | None:
        return self._num("weight_decay")

    @property
    def batchnorm(self) -> str | None:
        """``frozen``, ``adapt``, ``train`` or ``None`` when the trial did not record it."""
        v = self.params.get("batchnorm")
        return v if isinstance(v, str) else None

    @property
    def chance_loss(self) -> float | None:
        """The loss of a guess that has learnt nothing: the stored level (``chance_levels``),
        else the cross-entropy of a uniform guess, ln K (``None`` when K is unknown); of a
        multi-label target without a stored level, ln 2."""
        if self.chance_levels is not None:
            return self.chance_levels[0]
        if self.multilabel:
            return math.log(2.0)
        return None if self.num_classes is None else math.log(self.num_classes)

    @property
    def chance_accuracy(self) -> float | None:
        """The accuracy of that guess: the stored level, else 1/K (``None`` when K is
        unknown); of a multi-label target without a stored level, 0.5."""
        if self.chance_levels is not None:
            return self.chance_levels[1]
        if self.multilabel:
            return 0.5
        return None if self.num_classes is None else 1.0 / self.num_classes

    @property
    def chance_name(self) -> str:
        """How the text names the chance loss: ``ln K``, or for a multi-label target the
        labels' entropy (the binary cross-entropy of guessing each label's frequency)."""
        if self.multilabel:
            return "the labels' entropy" if self.chance_levels is not None else "ln 2"
        return f"ln {self.num_classes}"

    def probe(self, key: str) -> float | None:
        """A numeric end-of-trial probe, or ``None``."""
        v = self.probes.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    @property
    def max_weight_drift(self) -> tuple[str, float] | None:
        """The unfrozen block whose weights moved most from the pretrained ones (relative L2)."""
        drift = self.probes.get("weight_drift")
        if not isinstance(drift, Mapping):
            return None
        items = [
            (str(k), float(v))
            for k, v in drift.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        return max(items, key=lambda kv: (kv[1], kv[0])) if items else None

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return max(len(self.loss), len(self.val_loss))

    @property
    def best_epoch(self) -> int | None:
        """1-based epoch of the lowest finite val loss (first one on ties)."""
        best: tuple[float, int] | None = None
        for i, v in enumerate(self.val_loss):
            if v is not None and (best is None or v < best[0]):
                best = (v, i + 1)
        return None if best is None else best[1]

    @property
    def best_val_loss(self) -> float | None:
        finite = [v for v in self.val_loss if v is not None]
        return min(finite) if finite else None

    @property
    def final_val_loss(self) -> float | None:
        """Last finite val loss."""
        for v in reversed(self.val_loss):
            if v is not None:
                return v
        return None


@dataclass(frozen=True)
class _Jump:
    series: str
    epoch: int
    before: float
    after: float


@dataclass(frozen=True)
class _Explosion:
    """Loss far above the peers' epoch-1 level in the first epochs."""

    series: str
    epoch: int
    value: float
    reference: float
    n_peers: int


@dataclass(frozen=True)
class _TrainRise:
    min_epoch: int
    min_value: float
    final_epoch: int
    final_value: float


@dataclass(frozen=True)
class _Profile:
    curves: TrialCurves
    val: dict[int, float]
    train: dict[int, float]
    train_acc: dict[int, float]
    val_acc: dict[int, float]
    best_epoch: int | None
    best_val: float | None
    final_epoch: int | None
    final_val: float | None
    climbed: bool
    noise: float
    nonfinite: tuple[str, int] | None
    jump: _Jump | None
    train_rise: _TrainRise | None
    oscillation: tuple[int, int] | None
    explosion: _Explosion | None = None
    val_stuck: bool = False
    """Val loss and accuracy never left the chance band (only judged when K is known)."""
    train_learned: bool | None = None
    """Train accuracy clearly above chance at the end (inference probe when stored);
    ``None`` when K or the train accuracy is unknown."""
    train_norm_accuracy: float | None = None
    """Final train accuracy rescaled so chance is 0 and perfect is 1."""

    @property
    def diverged(self) -> bool:
        """Non-finite, jumping or explosive loss, or pruned as diverged."""
        return (
            self.nonfinite is not None
            or self.jump is not None
            or self.explosion is not None
            or self.curves.prune_reason == "diverged"
        )

    @property
    def lr_problem(self) -> bool:
        return (
            self.nonfinite is not None
            or self.jump is not None
            or self.explosion is not None
            or self.train_rise is not None
            or self.oscillation is not None
            or self.curves.prune_reason == "diverged"
        )

    @property
    def final_train(self) -> float | None:
        return self.train[max(self.train)] if self.train else None


def _finite(series: Sequence[float | None]) -> dict[int, float]:
    return {i + 1: v for i, v in enumerate(series) if v is not None}


def _noise(values: Sequence[float]) -> float:
    """Robust epoch-to-epoch noise (std) estimate from second differences.

    Curves of eight or more epochs use only their second half, so the curvature of the
    initial descent does not count as noise.
    """
    if len(values) >= 8:
        values = values[len(values) // 2 :]
    if len(values) < 4:
        return 0.0
    second = [abs(values[i + 1] - 2 * values[i] + values[i - 1]) for i in range(1, len(values) - 1)]
    # For white noise of std s, a second difference has std s * sqrt(6); MAD -> std: 1.4826.
    return 1.4826 * statistics.median(second) / math.sqrt(6.0)


def _first_nonfinite(curves: TrialCurves) -> tuple[str, int] | None:
    hits = []
    for name, series in (("train loss", curves.loss), ("val loss", curves.val_loss)):
        for i, v in enumerate(series):
            if v is None:
                hits.append((i + 1, name))
                break
    if not hits:
        return None
    epoch, name = min(hits)
    return name, epoch


def _first_jump(name: str, series: dict[int, float], t: Thresholds) -> _Jump | None:
    if not series:
        return None
    first = series[min(series)]
    for epoch, value in series.items():
        prev = series.get(epoch - 1)
        if prev is not None and value >= t.divergence_jump_factor * prev and value >= first:
            return _Jump(name, epoch, prev, value)
    return None


def _post_unfreeze(series: dict[int, float], warmup: int) -> list[tuple[int, float]]:
    post = [(e, v) for e, v in series.items() if e > warmup]
    return post if post else list(series.items())


def _train_rise(train: dict[int, float], warmup: int, t: Thresholds) -> _TrainRise | None:
    post = _post_unfreeze(train, warmup)
    if len(post) < 3:
        return None
    m_epoch, m_value = min(post, key=lambda ev: (ev[1], ev[0]))
    after = [v for e, v in post if e > m_epoch]
    if len(after) < t.climb_min_epochs_after_best:
        return None
    tail = statistics.fmean(after[-t.climb_tail_epochs :])
    need = t.train_rise_min_relative * max(abs(m_value), _EPS)
    if tail - m_value >= need and after[-1] - m_value >= need:
        return _TrainRise(m_epoch, m_value, post[-1][0], post[-1][1])
    return None


def _oscillation(train: dict[int, float], warmup: int, t: Thresholds) -> tuple[int, int] | None:
    post = [v for _, v in _post_unfreeze(train, warmup)]
    steps = len(post) - 1
    if steps < 4:
        return None
    ups = sum(
        1
        for a, b in zip(post[:-1], post[1:], strict=True)
        if b - a > t.oscillation_min_relative * max(abs(a), _EPS)
    )
    if ups >= 2 and ups / steps >= t.oscillation_min_fraction:
        return ups, steps
    return None


def _climbed(
    curves: TrialCurves, val: dict[int, float], best_epoch: int | None, noise: float, t: Thresholds
) -> bool:
    if curves.prune_reason == "climbing":
        return True
    if best_epoch is None:
        return False
    best = val[best_epoch]
    after = [v for e, v in val.items() if e > best_epoch]
    if len(after) < t.climb_min_epochs_after_best:
        return False
    tail_rise = statistics.fmean(after[-t.climb_tail_epochs :]) - best
    final_rise = after[-1] - best
    need = t.climb_min_relative_rise * max(abs(best), _EPS)
    return tail_rise >= need and final_rise >= need and tail_rise >= t.climb_noise_multiple * noise


def norm_accuracy(acc: float, chance: float) -> float:
    """Accuracy rescaled so that chance (1/K) is 0 and perfect is 1."""
    return (acc - chance) / max(1.0 - chance, _EPS)


def _val_stuck(
    curves: TrialCurves, val: dict[int, float], val_acc: dict[int, float], t: Thresholds
) -> bool:
    """Never left the chance band: val accuracy never clearly above 1/K (and the val loss never
    clearly below ln K; the stored chance levels of a multi-label target); judged on the loss
    alone when no accuracy was recorded."""
    chance_loss, chance_acc = curves.chance_loss, curves.chance_accuracy
    if chance_loss is None or chance_acc is None or not val:
        return False
    loss_stuck = min(val.values()) >= (1.0 - t.chance_loss_margin) * chance_loss
    if not val_acc:
        return loss_stuck
    acc_stuck = (
        max(norm_accuracy(a, chance_acc) for a in val_acc.values()) <= t.chance_accuracy_margin
    )
    loose_loss = min(val.values()) >= (1.0 - 2.0 * t.chance_loss_margin) * chance_loss
    return acc_stuck and loose_loss


def _train_accuracy_end(curves: TrialCurves, train_acc: dict[int, float]) -> float | None:
    probe = curves.probe("train_accuracy")
    if probe is not None:
        return probe
    if not train_acc:
        return None
    tail = [train_acc[e] for e in sorted(train_acc)[-2:]]
    return max(tail)


def _profile(curves: TrialCurves, t: Thresholds) -> _Profile:
    val = _finite(curves.val_loss)
    train = _finite(curves.loss)
    best_epoch = curves.best_epoch
    final_epoch = max(val) if val else None
    noise = _noise(list(val.values()))
    # A rising or oscillating train loss points at the learning rate only when validation
    # suffers too (its best is not in the last third, or it oscillates as well): on a tiny
    # training set the train loss is noisy while val keeps improving.
    val_suffers = (
        best_epoch is not None
        and final_epoch is not None
        and best_epoch < final_epoch - max(1, (final_epoch - min(val)) // 3)
    )
    train_acc = _finite(curves.accuracy)
    val_acc = _finite(curves.val_accuracy)
    acc_end = _train_accuracy_end(curves, train_acc)
    chance_acc = curves.chance_accuracy
    train_norm = (
        None if acc_end is None or chance_acc is None else norm_accuracy(acc_end, chance_acc)
    )
    # A training set fitted to (near) perfection says the optimiser works: the ups and downs of
    # a train loss close to zero are noise, not a learning rate that wrecks the weights.
    memorised = acc_end is not None and (
        train_norm >= t.overfit_memorised_accuracy
        if train_norm is not None
        else acc_end >= t.overfit_memorised_accuracy
    )
    lr_signs = val_suffers and not memorised
    return _Profile(
        curves=curves,
        val_stuck=_val_stuck(curves, val, val_acc, t),
        train_learned=None if train_norm is None else train_norm >= t.learned_min_accuracy,
        train_norm_accuracy=train_norm,
        val=val,
        train=train,
        train_acc=train_acc,
        val_acc=val_acc,
        best_epoch=best_epoch,
        best_val=None if best_epoch is None else val[best_epoch],
        final_epoch=final_epoch,
        final_val=None if final_epoch is None else val[final_epoch],
        climbed=_climbed(curves, val, best_epoch, noise, t),
        noise=noise,
        nonfinite=_first_nonfinite(curves),
        jump=_first_jump("train loss", train, t),
        train_rise=_train_rise(train, curves.warmup_epochs, t) if lr_signs else None,
        oscillation=(
            _oscillation(train, curves.warmup_epochs, t)
            if not memorised
            and (val_suffers or _oscillation(val, curves.warmup_epochs, t) is not None)
            else None
        ),
    )


def _explosion(p: _Profile, others: Sequence[_Profile], t: Thresholds) -> _Explosion | None:
    """Largest explosive early loss of ``p``.

    The reference is the chance level ln K when K is known (the peers' median epoch-1 level
    raises it, never lowers it); without K, the peers' median epoch-1 level. A loss of at least
    ``explosion_min_loss`` is explosive whatever the reference. A val-only explosion of a trial
    whose BatchNorm layers train (train loss sane) is left to the BatchNorm rule.
    """
    found: list[tuple[float, _Explosion]] = []
    chance = p.curves.chance_loss
    for name, attr in (("train loss", "train"), ("val loss", "val")):
        series: dict[int, float] = getattr(p, attr)
        refs = [lvl for q in others if (lvl := getattr(q, attr).get(1)) is not None]
        early = [(e, v) for e, v in series.items() if e <= t.explosion_epochs]
        if not early:
            continue
        candidates = [r for r in (chance, statistics.median(refs) if refs else None) if r]
        reference = max(candidates) if candidates else None
        epoch, value = max(early, key=lambda ev: (ev[1], -ev[0]))
        if reference is not None and reference > 0 and value >= t.explosion_factor * reference:
            pass
        elif value >= t.explosion_min_loss:
            reference = (
                reference if reference is not None and reference > 0 else t.explosion_min_loss
            )
        else:
            continue
        if (
            attr == "val"
            and p.curves.batchnorm == "train"
            and not any(ex.series == "train loss" for _, ex in found)
        ):
            continue
        n_refs = len(refs) if chance is None or (refs and statistics.median(refs) > chance) else 0
        found.append((value / reference, _Explosion(name, epoch, value, reference, n_refs)))
    return max(found, key=lambda fx: fx[0])[1] if found else None


def _with_explosions(profiles: Sequence[_Profile], t: Thresholds) -> list[_Profile]:
    """``profiles`` with :attr:`_Profile.explosion` judged against all the other profiles."""
    return [
        dataclasses.replace(
            p,
            explosion=_explosion(p, [q for q in profiles if q.curves.number != p.curves.number], t),
        )
        for p in profiles
    ]


# --------------------------------------------------------------------------------------------
# Peer-aware rules
# --------------------------------------------------------------------------------------------
