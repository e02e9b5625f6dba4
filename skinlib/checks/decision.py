"""Self-checks for notebook 05's exercises: the threshold that reaches a target melanoma
sensitivity, and the positive predictive value at a prevalence of one's choosing."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from skinlib.checks.core import _a, _call, _report, _Wrong
from skinlib.layout import CLASSES
from skinlib.subgroups import ppv_at_prevalence

MEL = CLASSES.index("MEL")


def reference_threshold(targets, mel_probs, sensitivity: float) -> float:
    """The highest threshold t for which 'refer when P(MEL) >= t' finds at least `sensitivity`
    of the melanomas: the k-th highest P(MEL) among them, k = ceil(sensitivity x melanomas)."""
    mel = np.sort(np.asarray(mel_probs, dtype=float)[np.asarray(targets) == MEL])[::-1]
    k = max(1, math.ceil(sensitivity * len(mel) - 1e-9))
    return float(mel[k - 1])


def _probe(seed: int, n: int, melanomas: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = np.r_[np.full(melanomas, MEL), rng.integers(1, len(CLASSES), n - melanomas)]
    probs = np.round(np.clip(rng.normal(0.35, 0.2, n) + 0.3 * (targets == MEL), 0, 1), 3)
    probs[1] = probs[2]  # two melanomas with the same P(MEL): a tie at a threshold
    return targets, probs


def check_threshold_for_sensitivity(threshold_for_sensitivity: Callable[..., Any]) -> bool:
    """`threshold_for_sensitivity(targets, mel_probs, sensitivity)` is the highest threshold whose
    rule (refer when P(MEL) >= threshold) finds at least that share of the melanomas. Any value
    that refers exactly the same lesions passes."""
    cases = [(_probe(0, 60, 20), 0.95), (_probe(1, 40, 7), 0.5), (_probe(2, 30, 10), 0.8), (_probe(3, 25, 5), 1.0)]

    def run() -> str:
        for (targets, probs), wanted in cases:
            answer = _call(lambda: threshold_for_sensitivity(targets.copy(), probs.copy(), wanted), "your function")
            if answer is None:
                raise _Wrong("your function returned None: return the threshold (a number).")
            _number(answer)
            value = _call(lambda: float(answer), "float(your threshold)")
            right = reference_threshold(targets, probs, wanted)
            mel = targets == MEL
            found = int((probs[mel] >= value).sum())
            reached = found / mel.sum()
            said = f"for a target of {wanted:.0%} on {mel.sum()} melanomas your threshold is {value:.3f}"
            if not 0 <= value <= 1:
                raise _Wrong(f"{said}: a threshold on a probability lies between 0 and 1 (a count of melanomas "
                             "or a position in the list is not one: read the probability there).")
            if reached + 1e-9 < wanted:
                raise _Wrong(f"{said}, which refers {found} of them ({reached:.0%}): too high (refer when "
                             "P(MEL) >= threshold; count how many melanomas you need, and round up).")
            if np.array_equal(probs >= value, probs >= right):
                continue
            alarms, fewer = int((probs[~mel] >= value).sum()), int((probs[~mel] >= right).sum())
            cost = (f"{fewer} false alarms against your {alarms}" if alarms > fewer else
                    f"the same {alarms} false alarms on this probe, but on other data each step down costs more")
            raise _Wrong(f"{said}, which refers {int((probs >= value).sum())} lesions; {right:.3f} is higher and "
                         f"reaches the target too ({cost}): choose the highest threshold that reaches it, among "
                         "the melanomas' P(MEL).")
        return "the highest threshold that reaches the target sensitivity, on every probe (ties included)."
    return _report("threshold for a sensitivity", run)


def check_ppv(ppv: Callable[[float, float, float], Any]) -> bool:
    """`ppv(sensitivity, specificity, prevalence)`: the share of positives that are melanomas, by
    Bayes' rule, equal to `subgroups.ppv_at_prevalence` on several probes."""
    cases = [(0.9, 0.8, 0.01), (0.95, 0.7, 0.18), (0.5, 0.99, 0.3), (0.8, 0.9, 0.05)]

    def run() -> str:
        for sens, spec, prev in cases:
            answer = _call(lambda: ppv(sens, spec, prev), "your function")
            if answer is None:
                raise _Wrong("your function returned None: return the positive predictive value (a number).")
            _number(answer)
            value = _call(lambda: float(answer), "float(your answer)")
            right = ppv_at_prevalence(sens, spec, prev)
            if math.isclose(value, right, rel_tol=1e-6):
                continue
            said = (f"for sensitivity {sens}, specificity {spec} and prevalence {prev} you give {value:.4f}, "
                    f"not {right:.4f}")
            _explain_ppv(value, right, sens, spec, prev, said)
        return "Bayes' rule: true positives over all positives, at the prevalence you choose."
    return _report("positive predictive value", run)


def _number(answer) -> None:
    """Text or several values where one number is due: say so rather than fail to convert."""
    if isinstance(answer, (str, tuple, list, dict)):
        raise _Wrong(f"your function returned {_a(type(answer).__name__)} ({answer!r:.40}): return one number "
                     "(format it only when printing).")


def as_share(value: Any, name: str, default: float, whole: bool = True) -> float:
    """A setting that is a share (TARGET_SENSITIVITY, PREVALENCE): 0.95 as it is, 95 read as a
    percentage with a note, anything else replaced by `default` with a note; never raises. With
    `whole` False a share of 1 makes no sense (every lesion a melanoma), so 1 reads as 1 %."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        print(f"{name} = {value!r} is not a number: using {default} (write a share such as {default}).")
        return default
    if 0 < value < 1 or (whole and value == 1):
        return float(value)
    if 1 <= value <= 100:
        print(f"{name} = {value!r} reads as a percentage: using {value / 100:g} (write shares between 0 and 1).")
        return value / 100
    print(f"{name} = {value!r} is not a share between 0 and 1: using {default}.")
    return default


def _explain_ppv(value, right, sens, spec, prev, said) -> None:
    close = lambda other: math.isclose(value, other, rel_tol=1e-6)  # noqa: E731
    if close(100 * right):
        raise _Wrong(f"{said} (as a percentage): give a share between 0 and 1.")
    if close(sens):
        raise _Wrong(f"{said}: that is the sensitivity, P(positive | melanoma); the PPV is "
                     "P(melanoma | positive).")
    if close(sens * prev / (sens * prev + spec * (1 - prev))):
        raise _Wrong(f"{said}: false alarms are the (1 - specificity) share of the lesions without "
                     "melanoma, not the specificity share.")
    if close(sens * prev / (sens * prev + (1 - spec))):
        raise _Wrong(f"{said}: the false alarms come from the lesions without melanoma only, "
                     "(1 - specificity) x (1 - prevalence).")
    if close(spec * (1 - prev) / (spec * (1 - prev) + (1 - sens) * prev)):
        raise _Wrong(f"{said}: that is the negative predictive value (negatives that are not melanomas).")
    raise _Wrong(f"{said}: PPV = sensitivity x prevalence / (sensitivity x prevalence + "
                 "(1 - specificity) x (1 - prevalence)).")
