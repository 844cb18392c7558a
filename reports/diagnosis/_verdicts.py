"""Per-trial rules: the verdicts of one trial, read from its curves, params and probes; peers
refine them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thaw.reports.diagnosis._features import (
    TrialCurves,
    _Explosion,
    _Profile,
    _profile,
    _with_explosions,
    norm_accuracy,
)
from thaw.reports.diagnosis._format import _EPS, _fmt_pct, _fmt_sig, _rel, _scale
from thaw.reports.diagnosis._thresholds import DEFAULT_THRESHOLDS, Thresholds

__all__ = [
    "BATCHNORM_MISMATCH",
    "HEALTHY",
    "LR_TOO_HIGH",
    "OVERFITTING",
    "UNDERFITTING",
    "VERDICTS",
    "WEAK_REGULARISATION",
    "Verdict",
    "diagnose_trial",
]

HEALTHY = "healthy"
"""Nothing else applies: val loss fell and did not climb beyond the thresholds."""
OVERFITTING = "overfitting"
"""Val loss climbed (or stalled) after its best epoch while train loss kept falling (and the val
loss ended above the train loss: a val loss still below it, as with dropout and augmentation,
has no generalisation gap to grow)."""
LR_TOO_HIGH = "lr_too_high"
"""Pretrained features destroyed: divergence (including an explosive loss in the first epochs),
an unrecovered jump after unfreezing, or a persistently rising / oscillating train loss."""
UNDERFITTING = "underfitting"
"""Insufficient fine-tuning: train and val loss stay high with a small gap (a plateau, or
progress too slow to catch up) while peers with more unfrozen layers or a higher learning rate
do clearly better."""
BATCHNORM_MISMATCH = "batchnorm_mismatch"
"""Val loss far above train loss from the first epochs while train accuracy is already high,
or val accuracy far below train accuracy (near chance) once train accuracy gets high."""
WEAK_REGULARISATION = "weak_regularisation"
"""Overfitting that peers with more dropout / weight decay at a similar learning rate and
depth avoid."""

VERDICTS: tuple[str, ...] = (
    LR_TOO_HIGH,
    BATCHNORM_MISMATCH,
    OVERFITTING,
    WEAK_REGULARISATION,
    UNDERFITTING,
    HEALTHY,
)
"""All verdict names, in the order verdicts of one trial are listed."""


@dataclass(frozen=True)
class Verdict:
    """One diagnosis of one trial.

    Attributes:
        verdict: One of :data:`VERDICTS`.
        confidence: 0..1 (rounded to two decimals).
        evidence: What in the curves supports it, with numbers and epochs.
        recommendation: A concrete change to try.
    """

    verdict: str
    confidence: float
    evidence: str
    recommendation: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; known: {', '.join(VERDICTS)}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")
        object.__setattr__(self, "confidence", round(float(self.confidence), 2))

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "evidence": self.evidence,
            "recommendation": self.recommendation,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class _Shock:
    unfreeze_epoch: int
    base: float
    peak: float
    peak_epoch: int
    level: float
    level_source: str
    best_after: float
    train_jumped: bool


def _fe_level(peers: Sequence[_Profile]) -> tuple[float, str] | None:
    fe = [
        p
        for p in peers
        if p.curves.unfrozen_layers == 0 and p.best_val is not None and not p.lr_problem
    ]
    if not fe:
        return None
    best = min(fe, key=lambda p: (p.best_val, p.curves.number))
    assert best.best_val is not None
    return best.best_val, f"best feature-extraction trial {best.curves.number}"


def _shock(p: _Profile, fe_level: tuple[float, str] | None, t: Thresholds) -> _Shock | None:
    c = p.curves
    u = c.unfrozen_layers
    if u is None or u <= 0 or not p.val:
        return None
    w = c.warmup_epochs
    if w > 0:
        base = p.val.get(w)
        if base is None:
            return None
        level, source = base, f"end of warm-up, epoch {w}"
        window = range(w + 1, w + 1 + t.shock_window)
    else:
        base = p.val.get(1)
        if base is None:
            return None
        level, source = fe_level if fe_level is not None else (base, "its epoch-1 value")
        window = range(2, 2 + t.shock_window)
    in_window = [(e, p.val[e]) for e in window if e in p.val]
    if not in_window:
        return None
    peak_epoch, peak = max(in_window, key=lambda ev: (ev[1], -ev[0]))
    if _rel(peak - base, base) < t.shock_min_relative_rise:
        return None
    after = [v for e, v in p.val.items() if e >= window[0]]
    best_after = min(after)
    if best_after <= level * (1.0 + t.recovery_tolerance):
        return None
    if t.shock_transient_epochs > 0:
        # A bump that is quickly undone and then clearly improved on did not destroy the
        # pretrained features; failing to reach the feature-extraction level has another cause.
        horizon = peak_epoch + t.shock_transient_epochs
        back = any(v <= base for e, v in p.val.items() if peak_epoch < e <= horizon)
        if back and best_after <= base * (1.0 - t.shock_min_relative_rise):
            return None
    train_base = p.train.get(w if w > 0 else 1)
    train_window = [p.train[e] for e in window if e in p.train]
    train_jumped = (
        train_base is not None
        and bool(train_window)
        and _rel(max(train_window) - train_base, train_base) >= t.shock_min_relative_rise
    )
    return _Shock(w, base, peak, peak_epoch, level, source, best_after, train_jumped)


@dataclass(frozen=True)
class _BatchNorm:
    """A BatchNorm mismatch; ``onset`` is the epoch from which it explains the val loss."""

    evidence: str
    confidence: float
    onset: int


def _bn_can_mismatch(p: _Profile) -> bool:
    """BatchNorm statistics can only mismatch where BatchNorm layers run in training mode:
    ``batchnorm: train`` with layers unfrozen, or a run that did not record ``batchnorm``."""
    c = p.curves
    if c.unfrozen_layers == 0:
        return False
    return c.batchnorm in (None, "train")


def _bn_probe(p: _Profile, t: Thresholds) -> tuple[bool, str, float] | None:
    """The BatchNorm probes, when stored: (mismatch?, evidence, strength).

    Two direct measurements: the val loss with the moving statistics against the val loss with
    batch statistics, and the training set's accuracy in inference mode (moving statistics)
    against its accuracy during training (batch statistics) in the last epochs. Either gap
    shows statistics that do not fit inference."""
    c = p.curves
    moving = c.probe("val_loss_moving_stats")
    batch = c.probe("val_loss_batch_stats")
    parts: list[str] = []
    strength = 0.0
    mismatch = False
    if moving is not None and batch is not None:
        ratio = moving / max(batch, _EPS)
        parts.append(
            f"BatchNorm probe: val loss {moving:.3g} with the moving statistics vs {batch:.3g} "
            f"with batch statistics ({ratio:.1f}x)"
        )
        if ratio >= t.bn_probe_ratio and moving - batch >= t.bn_min_gap:
            mismatch, strength = True, ratio / t.bn_probe_ratio
    inference_acc = c.probe("train_accuracy")
    chance = c.chance_accuracy
    if inference_acc is not None and p.train_acc and chance is not None:
        tail = [p.train_acc[e] for e in sorted(p.train_acc)[-2:]]
        training_acc = statistics.fmean(tail)
        drop = norm_accuracy(training_acc, chance) - norm_accuracy(inference_acc, chance)
        if norm_accuracy(training_acc, chance) >= t.learned_min_accuracy and drop >= 0.5:
            parts.append(
                f"the training images scored accuracy {training_acc:.2f} during training (batch "
                f"statistics) but {inference_acc:.2f} in inference mode (moving statistics)"
            )
            mismatch, strength = True, max(strength, 1.0 + drop)
    if not parts:
        return None
    return mismatch, "; ".join(parts), strength


def _bn_mismatch(p: _Profile, t: Thresholds) -> _BatchNorm | None:
    if not _bn_can_mismatch(p):
        return None
    probe = _bn_probe(p, t)
    curve = _bn_early(p, t) or _bn_late(p, t)
    if probe is None:
        return curve
    mismatch, evidence, strength = probe
    if not mismatch:
        return None  # the direct measurements clear BatchNorm
    if curve is not None:
        return _BatchNorm(f"{curve.evidence}; {evidence}", max(0.9, curve.confidence), curve.onset)
    confidence = _scale(strength, 1.0, 2.0, 0.7, 0.9)
    return _BatchNorm(evidence, confidence, max(p.curves.warmup_epochs, 1))


def _learned(p: _Profile, acc: float, t: Thresholds) -> bool:
    chance = p.curves.chance_accuracy
    if chance is None:
        return acc >= t.bn_min_train_accuracy
    return norm_accuracy(acc, chance) >= t.learned_min_accuracy


def _val_near_chance(p: _Profile, val_acc: float | None, train_acc: float, t: Thresholds) -> bool:
    chance = p.curves.chance_accuracy
    if val_acc is None:
        return chance is None  # without K or val accuracy, the loss gap decides
    if chance is None:
        return val_acc / max(train_acc, _EPS) <= t.bn_max_val_to_train_accuracy
    return norm_accuracy(val_acc, chance) <= t.bn_val_chance_margin


def _span(epochs: Sequence[int]) -> str:
    return f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"


def _bn_early(p: _Profile, t: Thresholds) -> _BatchNorm | None:
    """Val loss far above train loss right after unfreezing, train accuracy already high."""
    w = p.curves.warmup_epochs
    epochs = [e for e in range(w + 1, w + 1 + t.bn_early_epochs) if e in p.val and e in p.train]
    if len(epochs) < min(2, t.bn_early_epochs):
        return None
    accs = [p.train_acc[e] for e in epochs if e in p.train_acc]
    if not accs:
        return None
    ratio = statistics.median(p.val[e] / max(p.train[e], _EPS) for e in epochs)
    gap = statistics.median(p.val[e] - p.train[e] for e in epochs)
    acc = statistics.median(accs)
    if ratio < t.bn_gap_ratio or gap < t.bn_min_gap or not _learned(p, acc, t):
        return None
    val_accs = [p.val_acc[e] for e in epochs if e in p.val_acc]
    if not _val_near_chance(p, statistics.median(val_accs) if val_accs else None, acc, t):
        return None
    val_med = statistics.median(p.val[e] for e in epochs)
    train_med = statistics.median(p.train[e] for e in epochs)
    evidence = (
        f"over {_span(epochs)} (first epochs after unfreezing) val loss was {ratio:.1f}x train "
        f"loss (median {val_med:.3g} vs {train_med:.3g}) while train accuracy was already "
        f"{acc:.2f}"
    )
    confidence = _scale(ratio / t.bn_gap_ratio, 1.0, 2.0, 0.6, 0.9)
    return _BatchNorm(evidence, confidence, max(w, 1))


def _bn_late(p: _Profile, t: Thresholds) -> _BatchNorm | None:
    """Val accuracy far below (near chance) once train accuracy gets high.

    Judged over ``bn_early_epochs`` epochs from the first epoch after unfreezing with train
    accuracy >= ``bn_min_train_accuracy``. Genuine overfitting keeps val accuracy close to the
    train accuracy at that point; a model whose BatchNorm statistics do not match inference
    fits its training batches while its val predictions stay near chance. With K known, a val
    accuracy that leaves the chance band (``chance_accuracy_margin``) from the onset on clears
    BatchNorm: the model generalised, as a from-scratch net that overfits a small set does.
    """
    w = p.curves.warmup_epochs
    onset = next(
        (e for e, a in sorted(p.train_acc.items()) if e > w and _learned(p, a, t)),
        None,
    )
    if onset is None:
        return None
    epochs = [
        e
        for e in range(onset, onset + t.bn_early_epochs)
        if e in p.train_acc and e in p.val_acc and e in p.val and e in p.train
    ]
    if len(epochs) < min(2, t.bn_early_epochs):
        return None
    train_acc = statistics.median(p.train_acc[e] for e in epochs)
    val_acc = statistics.median(p.val_acc[e] for e in epochs)
    acc_ratio = val_acc / max(train_acc, _EPS)
    gap = statistics.median(p.val[e] - p.train[e] for e in epochs)
    # With K known, the val accuracy must stay near chance from the onset on (its maximum):
    # genuine overfitting first generalises, then climbs; a BatchNorm mismatch never does.
    after = [a for e, a in p.val_acc.items() if e >= onset]
    chance = p.curves.chance_accuracy
    judged = max(after) if chance is not None and after else val_acc
    if not _val_near_chance(p, judged, train_acc, t) or gap < t.bn_min_gap:
        return None
    trains = p.curves.batchnorm == "train"
    if (
        chance is not None
        and not trains
        and norm_accuracy(judged, chance) > t.chance_accuracy_margin
    ):
        # The val accuracy left the chance band after the onset: the model generalised and
        # the gap that opened is overfitting (a from-scratch net on few images), not
        # statistics that do not fit inference, which keep val predictions at chance. A run
        # whose params say its BatchNorm layers train keeps the rule without this check: its
        # moving statistics can lag from the first epochs on, before the val accuracy falls.
        return None
    loss_ratio = statistics.median(p.val[e] / max(p.train[e], _EPS) for e in epochs)
    val_med = statistics.median(p.val[e] for e in epochs)
    train_med = statistics.median(p.train[e] for e in epochs)
    evidence = (
        f"train accuracy first got clearly above chance at epoch {onset}; over "
        f"{_span(epochs)} val accuracy was only {val_acc:.2f} vs train accuracy {train_acc:.2f} "
        f"({acc_ratio:.2f}x) and val loss {loss_ratio:.1f}x train loss (median {val_med:.3g} vs "
        f"{train_med:.3g})"
    )
    later_val = [a for e, a in p.val_acc.items() if e > epochs[-1]]
    later_train = [a for e, a in p.train_acc.items() if e > epochs[-1]]
    if later_val and later_train:
        evidence += (
            f"; afterwards val accuracy stayed at {min(later_val):.2f}-{max(later_val):.2f} "
            f"while train accuracy reached {max(later_train):.2f}"
        )
    end, final = p.final_epoch, p.final_val
    if end is not None and final is not None and end > epochs[-1] and final > val_med:
        evidence += f" and val loss rose to {final:.3g} (epoch {end})"
    limit = t.bn_max_val_to_train_accuracy
    confidence = _scale(limit - acc_ratio, 0.0, limit / 2.0, 0.6, 0.9)
    return _BatchNorm(evidence, confidence, onset)


def _similar_depth(u1: int | None, u2: int | None, t: Thresholds) -> bool:
    if u1 is None or u2 is None:
        return False
    return abs(u1 - u2) <= max(t.peer_depth_min_layers, t.peer_depth_tolerance * max(u1, u2))


def _similar_lr(l1: float | None, l2: float | None, t: Thresholds) -> bool:
    if l1 is None or l2 is None or l1 <= 0 or l2 <= 0:
        return False
    return max(l1, l2) / min(l1, l2) <= t.peer_lr_ratio


def _depth_phrase(u: int | None, num_layers: int | None) -> str:
    if not u:
        return ""
    if num_layers and u >= num_layers:
        return f" for full fine-tuning (all {num_layers} layers unfrozen)"
    return f" for {u}+ unfrozen layers"


def _fmt_big(x: float) -> str:
    """``3.7e6`` for large numbers, else three significant digits."""
    if abs(x) >= 1000:
        mantissa, exponent = f"{x:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:.3g}"


def _explosion_evidence(
    p: _Profile, x: _Explosion, peers: Sequence[_Profile], t: Thresholds
) -> tuple[str, float]:
    factor = x.value / max(x.reference, _EPS)
    low = math.log10(t.explosion_factor)
    confidence = _scale(math.log10(factor), low, low + 3.0, 0.7, 0.9)
    chance = p.curves.chance_loss
    if x.n_peers:
        of = f"median epoch-1 {x.series} of {x.n_peers} peer{'s' if x.n_peers != 1 else ''}"
    elif chance is not None and abs(x.reference - chance) < 1e-9:
        of = f"chance level {p.curves.chance_name}"
    else:
        of = "largest loss a classifier can plausibly start from"
    part = (
        f"{x.series} was {_fmt_big(x.value)} at epoch {x.epoch}, {_fmt_big(factor)}x the "
        f"{of} ({x.reference:.3g})"
    )
    reference = _fe_level(peers)
    if reference is None:
        bests = [q.best_val for q in peers if q.best_val is not None and not q.lr_problem]
        if bests:
            reference = (statistics.median(bests), "median best val loss of the peers")
    if p.best_val is not None and p.final_val is not None and reference is not None:
        level, source = reference
        if p.best_val > level * (1.0 + t.recovery_tolerance):
            accuracy = ""
            if p.val_acc:
                accs = list(p.val_acc.values())
                if max(accs) - min(accs) <= 0.01:
                    accuracy = f"; val accuracy stayed at {accs[-1]:.3g} in every epoch"
                else:
                    accuracy = f"; val accuracy ended at {accs[-1]:.3g}"
            part += (
                f"; val loss never got below {p.best_val:.3g} (ended at {p.final_val:.3g}), "
                f"above the level {level:.3g} ({source}){accuracy}"
            )
            confidence = min(0.95, confidence + 0.05)
    return part, confidence


def _lr_verdict(
    p: _Profile,
    shock: _Shock | None,
    peers: Sequence[_Profile],
    t: Thresholds,
    num_layers: int | None,
) -> Verdict | None:
    c = p.curves
    parts: list[str] = []
    confidence = 0.0
    if p.nonfinite is not None:
        name, epoch = p.nonfinite
        last = p.train if name == "train loss" else p.val
        before = [v for e, v in last.items() if e < epoch]
        tail = f" (last finite value {before[-1]:.3g})" if before else ""
        parts.append(f"{name} became non-finite at epoch {epoch}{tail}")
        confidence = max(confidence, 0.95)
    elif c.prune_reason == "diverged":
        at = f" at epoch {c.prune_epoch}" if c.prune_epoch else ""
        parts.append(f"pruned as diverged{at}")
        confidence = max(confidence, 0.9)
    if p.jump is not None:
        j = p.jump
        parts.append(
            f"{j.series} jumped x{j.after / max(j.before, _EPS):.1f} from {j.before:.3g} "
            f"(epoch {j.epoch - 1}) to {j.after:.3g} (epoch {j.epoch})"
        )
        confidence = max(confidence, 0.85)
    if p.explosion is not None:
        part, explosion_confidence = _explosion_evidence(p, p.explosion, peers, t)
        parts.append(part)
        confidence = max(confidence, explosion_confidence)
    if shock is not None:
        where = (
            f"after unfreezing at epoch {shock.unfreeze_epoch + 1}"
            if shock.unfreeze_epoch > 0
            else "right after unfreezing (no warm-up)"
        )
        rise = _rel(shock.peak - shock.base, shock.base)
        parts.append(
            f"{where} val loss jumped from {shock.base:.3g} to {shock.peak:.3g} "
            f"({_fmt_pct(rise)}, epoch {shock.peak_epoch}) and its best afterwards, "
            f"{shock.best_after:.3g}, never got back to the feature-extraction level "
            f"{shock.level:.3g} ({shock.level_source})"
        )
        confidence = max(confidence, _scale(rise, 0.2, 1.0, 0.6, 0.9))
    if p.train_rise is not None:
        r = p.train_rise
        parts.append(
            f"train loss rose from its minimum {r.min_value:.3g} at epoch {r.min_epoch} to "
            f"{r.final_value:.3g} at epoch {r.final_epoch} "
            f"({_fmt_pct(_rel(r.final_value - r.min_value, r.min_value))})"
        )
        confidence = max(
            confidence,
            _scale(_rel(r.final_value - r.min_value, r.min_value), 0.1, 0.5, 0.6, 0.85),
        )
    if p.oscillation is not None:
        ups, steps = p.oscillation
        parts.append(f"train loss went up in {ups} of {steps} epoch-to-epoch steps")
        confidence = max(confidence, _scale(ups / steps, 0.3, 0.5, 0.55, 0.8))
    lr = c.learning_rate
    if p.val_stuck and lr is not None and lr >= t.lr_high and not p.train_learned:
        parts.append(
            f"val loss and accuracy never left the chance band ({c.chance_name} = "
            f"{c.chance_loss:.3g}, accuracy {c.chance_accuracy:.2f}) at learning rate "
            f"{_fmt_sig(lr)}, at or above {_fmt_sig(t.lr_high)}"
        )
        confidence = max(confidence, 0.8)
    drift = c.max_weight_drift
    if drift is not None and drift[1] >= t.drift_high and (parts or p.val_stuck):
        parts.append(
            f"the weights of {drift[0]} moved {drift[1]:.2f}x their pretrained norm (weight-drift "
            "probe): the pretrained features were overwritten"
        )
        confidence = max(confidence, 0.75)
    if not parts:
        return None

    u = c.unfrozen_layers
    depth = _depth_phrase(u, num_layers)
    safer = [
        q
        for q in peers
        if q.curves.learning_rate is not None
        and lr is not None
        and q.curves.learning_rate < lr
        and q.best_val is not None
        and not q.lr_problem
        and (p.best_val is None or q.best_val < p.best_val)
        and (
            _similar_depth(u, q.curves.unfrozen_layers, t)
            or (u is not None and (q.curves.unfrozen_layers or 0) >= u)
        )
    ]
    if safer:
        best = min(safer, key=lambda q: (q.best_val, q.curves.number))
        qlr = best.curves.learning_rate
        assert qlr is not None
        rec = (
            f"lower the learning rate to <= {_fmt_sig(qlr, 1)}{depth} (trial "
            f"{best.curves.number}: lr {_fmt_sig(qlr)}, {best.curves.unfrozen_layers} unfrozen "
            f"layers, best val loss {best.best_val:.3g})"
        )
    elif lr is not None:
        rec = f"lower the learning rate below {_fmt_sig(lr / 3.0, 1)}{depth}"
    else:
        rec = f"lower the learning rate 3-10x{depth}"
    if c.warmup_epochs == 0 and u and (shock is not None or p.jump or p.nonfinite or p.explosion):
        rec += "; train the head alone for 2-3 warm-up epochs before unfreezing"
    if p.diverged:
        rec += "; clip gradients (clipnorm=1.0)"
    return Verdict(LR_TOO_HIGH, confidence, "; ".join(parts), rec)


def _went(start: float, end: float) -> str:
    """``fell from 0.3 to 0.2``, ``rose from ...``, or ``stayed at 0.145`` when the two read
    the same at three significant digits."""
    a, b = f"{start:.3g}", f"{end:.3g}"
    if a == b:
        return f"stayed at {a}"
    return f"{'fell' if end < start else 'rose'} from {a} to {b}"


def _overfit_recommendation(p: _Profile) -> str:
    c = p.curves
    stop = (
        f"stop at epoch {p.best_epoch} (EarlyStopping with restore_best_weights=True)"
        if p.best_epoch
        else "stop earlier"
    )
    dropout = c.dropout
    if dropout is None or dropout < 0.5:
        target = max(0.3, min(0.6, round((dropout or 0.0) + 0.2, 1)))
        reg = f"raise dropout to at least {_fmt_sig(target)}"
    else:
        wd = c.weight_decay
        reg = f"raise weight decay to at least {_fmt_sig(max((wd or 0.0) * 10.0, 1e-4), 1)}"
    return f"{stop} or {reg}"


def _overfit_verdict(
    p: _Profile, shock: _Shock | None, bn: _BatchNorm | None, t: Thresholds
) -> Verdict | None:
    c = p.curves
    if p.best_epoch is None or p.best_val is None or p.final_val is None:
        return None
    if p.train_rise is not None or p.nonfinite is not None:
        return None  # rising train loss or divergence is lr_too_high, not overfitting
    if shock is not None and p.best_epoch <= max(c.warmup_epochs, 1):
        return None  # the rise is the unfreezing shock
    if bn is not None and p.best_epoch <= bn.onset:
        return None  # val loss rose from when the BatchNorm mismatch shows: that explains it
    n = c.epochs
    best, final = p.best_val, p.final_val
    train_best = p.train.get(p.best_epoch)
    train_end = p.final_train
    gaps = ""
    if train_best is not None and train_end is not None:
        gaps = (
            f"; val-train gap {best - train_best:.3g} at best -> {final - train_end:.3g} at the end"
        )
    if p.climbed:
        if train_best is not None and train_end is not None:
            if train_end > train_best * (1.0 + t.plateau_tolerance):
                return None
            if final < train_end:
                # The val loss still sits below the train loss (dropout, augmentation): no
                # generalisation gap has opened, so the rise is not the model memorising.
                return None
            train = f" while train loss {_went(train_best, train_end)}"
        else:
            train = ""
        rise = _rel(final - best, best)
        if final > best:
            evidence = (
                f"val loss bottomed at {best:.3g} at epoch {p.best_epoch} of {n}, then rose to "
                f"{final:.3g} ({final - best:+.2g}, {_fmt_pct(rise)}){train}{gaps}"
            )
        else:
            evidence = f"val loss bottomed at {best:.3g} at epoch {p.best_epoch} of {n}"
        confidence = _scale(
            rise, t.climb_min_relative_rise, 3 * t.climb_min_relative_rise, 0.6, 0.95
        )
        if c.prune_reason == "climbing":
            at = f" at epoch {c.prune_epoch}" if c.prune_epoch else ""
            evidence += f"; pruned as climbing{at}"
            confidence = max(confidence, 0.7)
        if not train:
            confidence -= 0.1
        return Verdict(OVERFITTING, confidence, evidence, _overfit_recommendation(p))
    # Stalled variant: val stopped improving while train loss keeps dropping and the gap widens.
    if bn is not None or train_best is None or train_end is None or p.final_epoch is None:
        return None
    if p.final_epoch - p.best_epoch < t.plateau_epochs:
        return None
    if final - best < p.noise:
        return None  # the val loss sits within its epoch-to-epoch noise of the best: no stall
    ratio_best = best / max(train_best, _EPS)
    ratio_end = final / max(train_end, _EPS)
    if (
        ratio_end >= t.overfit_gap_ratio
        and ratio_end >= ratio_best * t.overfit_gap_growth
        and train_end < train_best * (1.0 - t.plateau_tolerance)
    ):
        evidence = (
            f"val loss stalled at {best:.3g} after epoch {p.best_epoch} of {n} while train loss "
            f"fell from {train_best:.3g} to {train_end:.3g}; val/train ratio grew from "
            f"{ratio_best:.1f} to {ratio_end:.1f}{gaps}"
        )
        confidence = _scale(ratio_end / ratio_best, t.overfit_gap_growth, 3.0, 0.5, 0.7)
        return Verdict(OVERFITTING, confidence, evidence, _overfit_recommendation(p))
    return None


def _weak_reg_verdict(p: _Profile, peers: Sequence[_Profile], t: Thresholds) -> Verdict | None:
    c = p.curves
    if p.final_val is None:
        return None
    candidates: list[tuple[_Profile, bool, bool]] = []
    for q in peers:
        qc = q.curves
        if q.climbed or q.lr_problem or q.final_val is None or q.final_val >= p.final_val:
            continue
        if not _similar_lr(c.learning_rate, qc.learning_rate, t):
            continue
        if not _similar_depth(c.unfrozen_layers, qc.unfrozen_layers, t):
            continue
        more_dropout = (
            c.dropout is not None
            and qc.dropout is not None
            and qc.dropout >= c.dropout + t.reg_min_dropout_step - 1e-9
        )
        more_wd = (
            c.weight_decay is not None
            and qc.weight_decay is not None
            and qc.weight_decay >= max(c.weight_decay, _EPS) * t.reg_min_weight_decay_factor
        )
        if more_dropout or more_wd:
            candidates.append((q, more_dropout, more_wd))
    if not candidates:
        return None
    q, more_dropout, more_wd = min(candidates, key=lambda x: (x[0].final_val, x[0].curves.number))
    qc = q.curves
    assert q.final_val is not None and qc.learning_rate is not None and c.learning_rate is not None
    settings = []
    if c.dropout is not None and qc.dropout is not None and qc.dropout != c.dropout:
        settings.append(f"dropout {qc.dropout:.2g} (vs {c.dropout:.2g})")
    if (
        c.weight_decay is not None
        and qc.weight_decay is not None
        and qc.weight_decay != c.weight_decay
    ):
        settings.append(f"weight decay {_fmt_sig(qc.weight_decay)} (vs {_fmt_sig(c.weight_decay)})")
    settings.append(f"lr {_fmt_sig(qc.learning_rate)} (x{qc.learning_rate / c.learning_rate:.1f})")
    settings.append(f"{qc.unfrozen_layers} unfrozen layers (vs {c.unfrozen_layers})")
    others = f" ({len(candidates)} such peers)" if len(candidates) > 1 else ""
    evidence = (
        f"trial {qc.number} with {', '.join(settings)} did not climb and ended at val loss "
        f"{q.final_val:.3g} vs {p.final_val:.3g} here{others}"
    )
    changes = []
    if more_dropout and qc.dropout is not None:
        changes.append(f"raise dropout to at least {_fmt_sig(qc.dropout)}")
    if more_wd and qc.weight_decay is not None:
        changes.append(f"raise weight decay to at least {_fmt_sig(qc.weight_decay, 1)}")
    rec = f"{' and '.join(changes)} at this learning rate and depth (as trial {qc.number})"
    confidence = min(0.9, 0.55 + 0.1 * len(candidates))
    return Verdict(WEAK_REGULARISATION, confidence, evidence, rec)


def _plateaued(series: dict[int, float], t: Thresholds) -> bool:
    values = list(series.values())
    k = t.plateau_epochs
    if len(values) < k + 1:
        return False
    ref = values[-k - 1]
    return _rel(ref - min(values[-k:]), ref) <= t.plateau_tolerance


@dataclass(frozen=True)
class _Progress:
    """Val-loss improvement over the last epochs of a curve."""

    from_epoch: int
    to_epoch: int
    improvement: float


def _recent_progress(series: dict[int, float], t: Thresholds) -> _Progress | None:
    """Improvement over the last ``underfit_progress_fraction`` of the epochs (at least
    ``plateau_epochs``), from the value before that window to the window's minimum."""
    items = sorted(series.items())
    k = max(t.plateau_epochs, math.ceil(len(items) * t.underfit_progress_fraction - 1e-9))
    if len(items) < k + 1:
        return None
    from_epoch, ref = items[-k - 1]
    return _Progress(from_epoch, items[-1][0], ref - min(v for _, v in items[-k:]))


def _underfit_verdict(
    p: _Profile, peers: Sequence[_Profile], t: Thresholds, num_layers: int | None
) -> Verdict | None:
    c = p.curves
    if p.best_val is None or p.final_val is None or p.final_train is None:
        return None
    plateau = _plateaued(p.val, t) and _plateaued(p.train, t)
    below_peers = c.prune_reason == "below_peers"
    progress = None if plateau or below_peers else _recent_progress(p.val, t)
    if not (plateau or below_peers or progress is not None):
        return None
    ratio = p.final_val / max(p.final_train, _EPS)
    if ratio > t.underfit_max_gap_ratio:
        return None
    u, lr = c.unfrozen_layers, c.learning_rate
    better = []
    for q in peers:
        qc = q.curves
        if q.best_val is None or q.best_val > p.best_val * (1.0 - t.underfit_min_peer_gain):
            continue
        deeper = u is not None and qc.unfrozen_layers is not None and qc.unfrozen_layers > u
        faster = lr is not None and qc.learning_rate is not None and qc.learning_rate > lr
        if deeper or faster:
            better.append((q, deeper, faster))
    if not better:
        return None
    q, deeper, faster = min(better, key=lambda x: (x[0].best_val, x[0].curves.number))
    qc = q.curves
    assert q.best_val is not None
    gain = _rel(p.best_val - q.best_val, p.best_val)
    remaining = p.best_val - q.best_val
    if progress is not None and progress.improvement >= remaining:
        return None  # still improving fast enough to catch up: not (yet) underfitting
    if plateau:
        state = (
            f"train {p.final_train:.3g} and val {p.final_val:.3g} loss both changed "
            f"< {100 * t.plateau_tolerance:g}% over the last {t.plateau_epochs} epochs "
            f"(val/train {ratio:.2f})"
        )
    elif progress is not None:
        state = (
            f"train {p.final_train:.3g} and val {p.final_val:.3g} loss stayed high "
            f"(val/train {ratio:.2f}) and improved slowly: val loss fell only "
            f"{progress.improvement:.3g} over epochs {progress.from_epoch}-{progress.to_epoch}, "
            f"less than the remaining gap of {remaining:.3g} to trial {qc.number}"
        )
    else:
        at = f" at epoch {c.prune_epoch}" if c.prune_epoch else ""
        state = (
            f"pruned as below peers{at} with train {p.final_train:.3g} and val "
            f"{p.final_val:.3g} loss (val/train {ratio:.2f})"
        )
    peer_settings = []
    if qc.unfrozen_layers is not None:
        peer_settings.append(f"{qc.unfrozen_layers} unfrozen layers (vs {u})")
    if qc.learning_rate is not None and lr is not None:
        peer_settings.append(f"lr {_fmt_sig(qc.learning_rate)} (vs {_fmt_sig(lr)})")
    evidence = (
        f"{state}; trial {qc.number} with {', '.join(peer_settings)} reached best val loss "
        f"{q.best_val:.3g} vs {p.best_val:.3g} here ({_fmt_pct(-gain)})"
    )
    changes = []
    if deeper and qc.unfrozen_layers is not None:
        of = f" of {num_layers}" if num_layers else ""
        if u == 0:
            changes.append(
                f"switch from feature extraction to fine-tuning: unfreeze the top "
                f"~{qc.unfrozen_layers}{of} layers"
            )
        else:
            changes.append(f"unfreeze more layers (~{qc.unfrozen_layers}{of})")
    if faster and qc.learning_rate is not None:
        changes.append(f"raise the learning rate towards {_fmt_sig(qc.learning_rate, 1)}")
    rec = " and ".join(changes) + f" (as trial {qc.number})"
    confidence = _scale(gain, t.underfit_min_peer_gain, 0.5, 0.55, 0.85)
    if below_peers and not plateau:
        confidence -= 0.1
    elif progress is not None:
        confidence -= 0.05
    return Verdict(UNDERFITTING, confidence, evidence, rec)


def _healthy_verdict(p: _Profile, t: Thresholds) -> Verdict:
    c = p.curves
    assert p.best_val is not None and p.final_val is not None and p.best_epoch is not None
    first_epoch = min(p.val)
    first = p.val[first_epoch]
    end_gap = ""
    if p.final_train is not None:
        end_gap = f"; val-train gap {p.final_val - p.final_train:.3g} at the end"
    evidence = (
        f"val loss went from {first:.3g} (epoch {first_epoch}) to its best {p.best_val:.3g} at "
        f"epoch {p.best_epoch} of {c.epochs} and ended at {p.final_val:.3g} "
        f"({_fmt_pct(_rel(p.final_val - p.best_val, p.best_val))} vs best){end_gap}"
    )
    confidence = 0.8 if len(p.val) >= 4 else 0.5
    if p.final_val - p.best_val >= t.climb_min_relative_rise * max(abs(p.best_val), _EPS):
        evidence += (
            f"; the rise after epoch {p.best_epoch} is within the curve's epoch-to-epoch noise "
            f"(~{_fmt_sig(p.noise)}) or too short to be a sustained climb"
        )
        confidence = 0.6
    early = _stopped_early(p, t)
    if early is not None:
        evidence += (
            f"; still improving: val loss fell {_fmt_pct(-early)} over the last epochs, so "
            "training stopped early"
        )
        rec = "healthy, stopped early: train longer with this configuration"
    elif p.best_epoch == p.final_epoch:
        rec = "keep this configuration; val loss was still falling at the last epoch, so more "
        rec += "epochs may help"
    else:
        rec = f"keep this configuration; stop around epoch {p.best_epoch}"
    return Verdict(HEALTHY, confidence, evidence, rec)


def _more_layers(u: int | None, num_layers: int | None) -> str | None:
    """Advice to unfreeze more layers, or ``None`` when the trial already unfroze them all."""
    if num_layers is not None and u is not None and u >= num_layers:
        return None
    if u == 0:
        target = f"~{max(1, num_layers // 2)} of {num_layers}" if num_layers else "the top block"
        return f"switch from feature extraction to fine-tuning: unfreeze {target} layers"
    if num_layers and u is not None:
        return f"unfreeze more layers (~{min(num_layers, max(2 * u, u + 2))} of {num_layers})"
    return "unfreeze more layers"


def _raise_lr(lr: float | None, t: Thresholds) -> str | None:
    if lr is None:
        return "raise the learning rate (1e-4 to 1e-3 for Adam)"
    if lr >= 1e-3:
        return None
    return f"raise the learning rate from {_fmt_sig(lr)} towards {_fmt_sig(min(1e-3, lr * 10), 1)}"


def _not_learning_verdict(p: _Profile, t: Thresholds, num_layers: int | None) -> Verdict:
    """Val curves never left the chance band (and the learning rate is not the cause)."""
    c = p.curves
    assert c.chance_loss is not None and c.chance_accuracy is not None and p.best_val is not None
    acc = ""
    if p.val_acc:
        acc = f" and val accuracy at most {max(p.val_acc.values()):.3g}"
    evidence = (
        f"val loss never got clearly below the chance level {c.chance_name} = "
        f"{c.chance_loss:.3g} (best {p.best_val:.3g}){acc} (chance {c.chance_accuracy:.2f}): "
        "the model learnt nothing that generalises"
    )
    if p.train_norm_accuracy is not None:
        evidence += (
            f"; train accuracy ended {max(p.train_norm_accuracy, 0.0):.0%} of the way from chance "
            "to perfect"
        )
    causes: list[str] = []
    changes: list[str] = []
    lr, u, bn = c.learning_rate, c.unfrozen_layers, c.batchnorm
    drift = c.max_weight_drift
    if lr is not None and lr <= t.lr_low:
        causes.append(f"learning rate {_fmt_sig(lr)} too low to move the weights")
    elif drift is not None and drift[1] <= t.drift_low:
        causes.append(f"the weights barely moved (largest drift {drift[1]:.1e} in {drift[0]})")
    if bn == "frozen":
        causes.append(
            "BatchNorm frozen with the pretraining statistics, which do not fit a shifted "
            "target domain"
        )
        changes.append("re-estimate the BatchNorm statistics on the target data (batchnorm: adapt)")
    if u is not None and (u == 0 or (num_layers and u < num_layers / 4)):
        causes.append(f"too few layers unfrozen ({u})")
        more = _more_layers(u, num_layers)
        if more:
            changes.append(more)
    if lr is not None and lr <= t.lr_low or (drift is not None and drift[1] <= t.drift_low):
        raise_lr = _raise_lr(lr, t)
        if raise_lr:
            changes.insert(0, raise_lr)
    if not causes:
        causes.append("no setting stands out: check labels, preprocessing and the data split")
        if lr is not None and lr < 1e-3:
            raise_lr = _raise_lr(lr, t)
            if raise_lr:
                changes.append(raise_lr)
    evidence += "; likely cause: " + ", ".join(causes)
    rec = "; ".join(changes) if changes else "check the labels and input preprocessing"
    return Verdict(UNDERFITTING, 0.8, evidence, rec)


def _still_falling(p: _Profile, t: Thresholds) -> float | None:
    """Relative val-loss improvement over the last third of the epochs (at least
    ``plateau_epochs``) when the best epoch is the last or the one before, else ``None``."""
    if p.best_epoch is None or p.final_epoch is None or p.best_epoch < p.final_epoch - 1:
        return None
    progress = _recent_progress(p.val, t)
    if progress is None:
        return None
    ref = p.val.get(progress.from_epoch)
    return None if ref is None else _rel(progress.improvement, ref)


def _stopped_early(p: _Profile, t: Thresholds) -> float | None:
    """The val loss's recent relative gain when the run is healthy but stopped early: still
    falling at its last epoch (:func:`_still_falling`), val loss within
    ``overfit_gap_ratio`` of the train loss, the train fit not poor (train accuracy at least
    ``underfit_poor_accuracy`` of the way from chance to perfect) and BatchNorm not frozen at
    the pretraining statistics. ``None`` otherwise (and without a train accuracy)."""
    gain = _still_falling(p, t)
    norm = p.train_norm_accuracy
    if gain is None or gain <= 0 or norm is None or norm < t.underfit_poor_accuracy:
        return None
    if p.final_train is None or p.final_val is None or p.curves.batchnorm == "frozen":
        return None
    if p.final_val / max(p.final_train, _EPS) > t.overfit_gap_ratio:
        return None
    return gain


def _too_little_verdict(p: _Profile, t: Thresholds, num_layers: int | None) -> Verdict | None:
    """Left the chance band but never learnt the training set: too little fine-tuning.

    Either the final train accuracy is below ``underfit_max_accuracy`` (of the way from chance
    to perfect), or below ``underfit_converging_accuracy`` while the val loss is still falling
    by at least ``underfit_min_recent_gain`` over the last epochs (not converged)."""
    c = p.curves
    norm = p.train_norm_accuracy
    if norm is None or norm >= t.underfit_converging_accuracy or p.climbed:
        return None
    if p.final_train is None or p.final_val is None or p.best_val is None:
        return None
    if p.final_val / max(p.final_train, _EPS) > t.overfit_gap_ratio:
        return None  # a wide gap: not a capacity problem
    gain = _still_falling(p, t)
    if norm >= t.underfit_max_accuracy and (gain is None or gain < t.underfit_min_recent_gain):
        return None
    evidence = (
        f"train accuracy ended only {max(norm, 0.0):.0%} of the way from chance to perfect "
        f"(train loss {p.final_train:.3g}, val loss {p.final_val:.3g})"
    )
    if gain is not None and p.final_epoch is not None:
        evidence += (
            f"; val loss was still falling at epoch {p.final_epoch} ({_fmt_pct(-gain)} over the "
            "last epochs): training stopped before it converged"
        )
    changes = [
        x for x in (_raise_lr(c.learning_rate, t), _more_layers(c.unfrozen_layers, num_layers)) if x
    ]
    if c.batchnorm == "frozen":
        evidence += "; BatchNorm kept the pretraining statistics (batchnorm: frozen)"
        changes.append("re-estimate the BatchNorm statistics on the target data (batchnorm: adapt)")
    changes.append("train for more epochs")
    confidence = _scale(t.underfit_converging_accuracy - norm, 0.0, 0.5, 0.55, 0.8)
    return Verdict(UNDERFITTING, confidence, evidence, "; ".join(changes))


def _gap_overfit_verdict(p: _Profile, t: Thresholds) -> Verdict | None:
    """The training set memorised with a wide generalisation gap, even if the val loss has
    not turned up yet: train accuracy near perfect, val accuracy ``overfit_accuracy_gap``
    below it, val loss ``overfit_gap_ratio`` times the (inference-mode) train loss."""
    c = p.curves
    train_acc = c.probe("train_accuracy")
    if train_acc is None and p.train_acc:
        train_acc = p.train_acc[max(p.train_acc)]
    train_loss = c.probe("train_loss") if c.probe("train_loss") is not None else p.final_train
    if train_acc is None or train_loss is None or not p.val_acc or p.final_val is None:
        return None
    chance = c.chance_accuracy
    learnt = (
        norm_accuracy(train_acc, chance) >= t.overfit_memorised_accuracy
        if chance is not None
        else train_acc >= t.overfit_memorised_accuracy
    )
    val_acc = statistics.median([p.val_acc[e] for e in sorted(p.val_acc)[-3:]])
    ratio = p.final_val / max(train_loss, _EPS)
    if not learnt or train_acc - val_acc < t.overfit_accuracy_gap or ratio < t.overfit_gap_ratio:
        return None
    source = "inference-mode probe" if c.probe("train_loss") is not None else "last epoch"
    n = c.params.get("train_per_class")
    data = f" ({n} training images per class)" if isinstance(n, int) else ""
    evidence = (
        f"the training set was memorised{data}: train accuracy {train_acc:.2f} and loss "
        f"{train_loss:.3g} ({source}) vs val accuracy {val_acc:.2f} and loss {p.final_val:.3g} "
        f"({ratio:.1f}x)"
    )
    rec = _overfit_recommendation(p).split(" or ", 1)[-1]
    rec = f"{rec}, or get more training images (augmentation); fine-tune fewer layers"
    confidence = _scale(train_acc - val_acc, t.overfit_accuracy_gap, 0.5, 0.55, 0.8)
    return Verdict(OVERFITTING, confidence, evidence, rec)


def _bn_verdict(p: _Profile, bn: _BatchNorm) -> Verdict:
    if p.curves.batchnorm == "train":
        rec = (
            "keep BatchNormalization layers in inference mode while fine-tuning: batchnorm: "
            "adapt (statistics re-estimated on the target data, then frozen) or frozen; this "
            "trial trained them (batchnorm=train)"
        )
    else:
        rec = (
            "keep BatchNormalization layers in inference mode while fine-tuning (call the base "
            "with training=False and set each BatchNormalization layer's trainable=False), "
            "after re-estimating their statistics on the target data if its domain is shifted"
        )
    return Verdict(BATCHNORM_MISMATCH, bn.confidence, bn.evidence, rec)


def _diagnose(
    p: _Profile,
    peers: Sequence[_Profile],
    t: Thresholds,
    num_layers: int | None,
    has_batchnorm: bool | None = None,
) -> list[Verdict]:
    """The verdicts of one trial. Rules read the trial's own curves, params and probes and the
    absolute chance level; peers only refine (feature-extraction level, comparisons)."""
    if not p.val and p.nonfinite is None and p.curves.prune_reason != "diverged":
        return []
    peers = [q for q in peers if q.curves.number != p.curves.number]
    shock = _shock(p, _fe_level(peers), t)
    bn = None if has_batchnorm is False else _bn_mismatch(p, t)
    if bn is not None and shock is not None and not shock.train_jumped:
        shock = None  # train loss kept falling: the val jump is the BatchNorm statistics
    verdicts: list[Verdict] = []
    lr_verdict = _lr_verdict(p, shock, peers, t, num_layers)
    if lr_verdict is not None:
        verdicts.append(lr_verdict)
    if p.diverged:
        return verdicts  # divergence explains everything after it
    if bn is not None:
        verdicts.append(_bn_verdict(p, bn))
    if p.val_stuck and p.train_learned is not True:
        # Nothing was learnt, on the training set either: not learning, whatever the shape.
        if not verdicts:
            verdicts.append(_not_learning_verdict(p, t, num_layers))
        return sorted(verdicts, key=lambda v: VERDICTS.index(v.verdict))
    overfit = _overfit_verdict(p, shock, bn, t)
    if overfit is None and bn is None:
        overfit = _gap_overfit_verdict(p, t)
    if overfit is not None:
        verdicts.append(overfit)
        weak = _weak_reg_verdict(p, peers, t)
        if weak is not None:
            verdicts.append(weak)
    if not verdicts and p.val_stuck:
        # The training set was learnt, the validation set stayed at chance: memorised.
        verdicts.append(_memorised_verdict(p, t))
    if not verdicts and not p.climbed and _stopped_early(p, t) is None:
        under = _too_little_verdict(p, t, num_layers) or _underfit_verdict(p, peers, t, num_layers)
        if under is not None:
            verdicts.append(under)
    if not verdicts and p.val:
        verdicts.append(_healthy_verdict(p, t))
    return sorted(verdicts, key=lambda v: VERDICTS.index(v.verdict))


def _memorised_verdict(p: _Profile, t: Thresholds) -> Verdict:
    c = p.curves
    assert c.chance_loss is not None and p.train_norm_accuracy is not None
    evidence = (
        f"train accuracy reached {p.train_norm_accuracy:.0%} of the way from chance to perfect "
        f"while val loss and accuracy never left the chance band ({c.chance_name} = "
        f"{c.chance_loss:.3g}): the training set was memorised, nothing generalised"
    )
    return Verdict(OVERFITTING, 0.7, evidence, _overfit_recommendation(p))


def diagnose_trial(
    curves: TrialCurves,
    peers: Sequence[TrialCurves] = (),
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    num_layers: int | None = None,
    has_batchnorm: bool | None = None,
) -> list[Verdict]:
    """Diagnose one trial from its learning curves.

    Args:
        curves: The trial's curves.
        peers: Other trials of the study (the trial itself is ignored if present); used for the
            feature-extraction level, underfitting and weak-regularisation comparisons and for
            concrete learning-rate recommendations.
        thresholds: Rule constants.
        num_layers: Layers with weights in the base (study attr ``thaw:num_layers``), used in
            recommendations.
        has_batchnorm: Whether the model has BatchNorm layers; ``False`` rules out
            ``batchnorm_mismatch`` (the curves are then judged by the other rules), ``None``
            (not known) leaves it to the curves.

    Returns:
        Verdicts ordered as :data:`VERDICTS`; ``[healthy]`` when nothing else applies, and an
        empty list when the trial has no usable history (e.g. a failed trial).
    """
    own = _profile(curves, thresholds)
    others = [_profile(q, thresholds) for q in peers if q.number != curves.number]
    judged = _with_explosions([own, *others], thresholds)
    return _diagnose(judged[0], judged[1:], thresholds, num_layers, has_batchnorm)


# --------------------------------------------------------------------------------------------
# Study level: where does climbing concentrate?
