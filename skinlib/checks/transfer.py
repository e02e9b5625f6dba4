"""Self-checks for notebook 03's exercises: the new ResNet-50 head, parameter groups with a
higher rate for the head, and the best epoch by validation balanced accuracy."""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
from torch import nn

from skinlib.checks.core import _a, _call, _report, _Wrong
from skinlib.layout import CLASSES


def _probe_resnet() -> nn.Module:
    """A ResNet-50 with seeded weights standing in for ImageNet's (no download in a check)."""
    from torchvision.models import resnet50
    torch.manual_seed(0)
    return resnet50()


# ------------------------------------------------------------------------------ exercise 1
def check_resnet_head(replace_head: Callable[[nn.Module], nn.Module], frozen: bool = True) -> bool:
    """`replace_head(resnet50)` gives the same model, its weights kept, with a new head that maps
    2048 features to 8 outputs (a Linear, or a Sequential ending in one) and, if `frozen`, only
    the head trainable. Probed with a forward pass, so a head renamed but not replaced is seen."""
    def run() -> str:
        given = _probe_resnet()
        backbone = {name: p.detach().clone() for name, p in given.state_dict().items() if not name.startswith("fc.")}
        model = _call(lambda: replace_head(given), "your function")
        if model is None:
            raise _Wrong("your function returned None: end it with `return model`.")
        if not isinstance(model, nn.Module):
            raise _Wrong(f"your function returned {_a(type(model).__name__)}, not the model: end it with "
                         "`return model`.")
        fc = getattr(model, "fc", None)
        if fc is None:
            raise _Wrong(f"your function returned {_a(type(model).__name__)} that has no fc: return the whole "
                         "model, not its head.")
        _check_head(fc)
        _check_backbone_kept(model, backbone)
        output = _call(lambda: model.eval()(torch.zeros(2, 3, 64, 64)), "the model with your head")
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2, len(CLASSES)):
            raise _Wrong(f"the model gives outputs of shape {tuple(getattr(output, 'shape', ()))} for 2 "
                         "images, not (2, 8).")
        if not all(p.requires_grad for p in fc.parameters()):
            raise _Wrong("the new head is frozen too: it is the part that must learn (freeze first, "
                         "then replace the head).")
        trainable = sum(p.numel() for name, p in model.named_parameters()
                        if not name.startswith("fc.") and p.requires_grad)
        if frozen and trainable:
            raise _Wrong(f"{trainable:,} backbone parameters still learn: set requires_grad = False on "
                         "every parameter before adding the head.")
        head = sum(p.numel() for p in fc.parameters())
        return f"2048 -> 8 head ({head:,} parameters){', backbone frozen' if frozen else ''}, weights kept."
    return _report("ResNet-50 head", run)


def _check_head(fc) -> None:
    """A new Linear (or a Sequential ending in one) whose weights map 2048 features to 8 scores."""
    linears = [fc] if isinstance(fc, nn.Linear) else [m for m in fc.modules() if isinstance(m, nn.Linear)] \
        if isinstance(fc, nn.Sequential) else []
    if not linears:
        raise _Wrong(f"model.fc is {_a(type(fc).__name__)}, not an nn.Linear: assign model.fc = nn.Linear(...) "
                     "and return the model.")
    if isinstance(fc, nn.Sequential) and not isinstance(list(fc.modules())[-1], nn.Linear):
        raise _Wrong(f"your head ends in {_a(type(list(fc.modules())[-1]).__name__)}: it must give the raw class "
                     "scores (logits), since the cross-entropy loss applies softmax itself: end it with the Linear.")
    first, last = tuple(linears[0].weight.shape), tuple(linears[-1].weight.shape)
    if first[1] != 2048 or last[0] != len(CLASSES):
        raise _Wrong(f"the head's weights map {first[1]} features to {last[0]} outputs; it needs 2048 -> 8, "
                     "one per class: assign a new layer, model.fc = nn.Linear(2048, 8) (changing "
                     "fc.out_features only renames the old 1000-output layer).")
    if linears[-1].out_features != last[0] or linears[0].in_features != first[1]:
        raise _Wrong("the head's in_features/out_features were changed by hand and no longer match its "
                     f"weights {last}: assign a new layer, model.fc = nn.Linear(2048, 8).")
    with torch.no_grad():
        out = _call(lambda: fc(torch.zeros(2, 2048)), "the new head on 2048 features")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, len(CLASSES)):
        raise _Wrong(f"the new head turns 2 x 2048 features into {tuple(getattr(out, 'shape', ()))}, not (2, 8).")


def _check_backbone_kept(model: nn.Module, backbone: dict[str, torch.Tensor]) -> None:
    """The returned network must be the one given (or a copy of it): same backbone, same weights."""
    state = {name: p for name, p in model.state_dict().items() if not name.startswith("fc.")}
    if state.keys() != backbone.keys() or any(not torch.equal(state[n].cpu(), backbone[n]) for n in backbone):
        raise _Wrong("the returned network's backbone is not the one your function was given (new or changed "
                     "weights): change the given model's head and return that model, keeping its pretrained "
                     "weights.")


# ------------------------------------------------------------------------------ exercise 2
def reference_parameter_groups(model: nn.Module, lr: float, head_factor: float) -> list[dict]:
    """skinlib's answer: the trainable backbone at `lr`, the trainable head (`fc.`) at lr x head_factor."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for name, p in trainable if not name.startswith("fc.")], "lr": lr},
            {"params": [p for name, p in trainable if name.startswith("fc.")], "lr": lr * head_factor}]


def check_parameter_groups(parameter_groups: Callable[..., Any], lr: float = 1e-3, factor: float = 10) -> bool:
    """`parameter_groups(model, lr, head_factor)` gives two Adam parameter groups: the backbone at
    `lr`, `model.fc` at `lr * head_factor`, every trainable parameter in exactly one of them."""
    from torchvision.models import resnet18

    def run() -> str:
        model = resnet18(num_classes=len(CLASSES))
        model.conv1.weight.requires_grad = False  # a frozen parameter: must not be handed to the optimizer
        groups = _call(lambda: parameter_groups(model, lr, factor), "your function")
        if groups is None:
            raise _Wrong("your function returned None: return a list of two dicts, "
                         "[{'params': ..., 'lr': ...}, {'params': ..., 'lr': ...}].")
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
            raise _Wrong(f"your function returned {type(groups).__name__}; return a list of dicts, each with "
                         "'params' and 'lr'.")
        if any("lr" not in group for group in groups):
            raise _Wrong("a group has no 'lr' key, so it would learn at the optimizer's default rate: give each "
                         "dict its own 'lr' ({'params': ..., 'lr': ...}).")
        groups = [{**group, "params": list(group["params"])} for group in groups]  # a generator is read once
        if any(not isinstance(p, torch.Tensor) for group in groups for p in group["params"]):
            raise _Wrong("a group's 'params' holds something else than parameter tensors (their names?): "
                         "for name, p in model.named_parameters(), keep p.")
        counts: dict[int, int] = {}
        for group in groups:
            for p in group["params"]:
                counts[id(p)] = counts.get(id(p), 0) + 1
        if any(n > 1 for n in counts.values()):
            raise _Wrong("a parameter is in two groups: split model.named_parameters() by name "
                         "(names starting with 'fc.' in the head, the rest in the backbone).")
        optimizer = _call(lambda: torch.optim.Adam(groups, lr=lr), "torch.optim.Adam(your groups)")
        seen = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        head = {id(p) for p in model.fc.parameters()}
        body = {id(p) for name, p in model.named_parameters() if not name.startswith("fc.") and p.requires_grad}
        if id(model.conv1.weight) in seen:
            raise _Wrong("a frozen parameter (requires_grad False) was given to the optimizer: keep only "
                         "those with p.requires_grad.")
        missing = (head | body) - set(seen)
        if missing:
            raise _Wrong(f"{len(missing)} trainable parameter tensor(s) are in no group: each must be in one, "
                         "or it never learns.")
        head_rates = {seen[i] for i in head}
        body_rates = {seen[i] for i in body}
        if head_rates != {lr * factor} or body_rates != {lr}:
            raise _Wrong(f"the head learns at {sorted(head_rates)} and the backbone at {sorted(body_rates)}; "
                         f"with lr={lr} and head_factor={factor} they should be {lr * factor:g} and {lr:g}.")
        return (f"backbone at lr, head (model.fc) at {factor:g} x lr, {len(seen)} parameter tensors, "
                "each in one group.")
    return _report("parameter groups", run)


# ------------------------------------------------------------------------------ exercise 3
def _history(values: list[float]) -> list[dict]:
    """Rows where the lowest loss, the highest plain accuracy and the last epoch (the highest training
    score) each fall on another epoch than the best validation balanced accuracy, where there are
    enough epochs: each mistake gets its own answer."""
    n = len(values)
    losses = [1.0 - v / 2 for v in values]
    accuracy = [0.5] * n
    if n >= 5:
        losses[2] = min(losses) - 0.05
        accuracy[3] = 0.9
    return [{"epoch": i + 1, "val_balanced_accuracy": v, "val_loss": loss, "val_accuracy": acc,
             "train_balanced_accuracy": 0.5 + 0.4 * (i + 1) / n}
            for i, (v, loss, acc) in enumerate(zip(values, losses, accuracy))]


def reference_best_epoch(history: list[dict]) -> int:
    """skinlib's answer: the 'epoch' of the first row with the highest validation balanced accuracy."""
    return max(history, key=lambda row: row["val_balanced_accuracy"])["epoch"]


def check_best_epoch(best_epoch: Callable[[list[dict]], Any]) -> bool:
    """`best_epoch(history)` is the epoch number (history's 'epoch', from 1) with the highest
    validation balanced accuracy; on a tie, the earlier one."""
    cases = [[0.30, 0.55, 0.48, 0.41, 0.35], [0.2, 0.4, 0.6, 0.6, 0.5], [0.7]]
    expected = [2, 3, 1]

    def run() -> str:
        for values, right in zip(cases, expected):
            history = _history(values)
            answer = _call(lambda: best_epoch(history), "your function")
            if answer is None:
                raise _Wrong("your function returned None: return the best row's 'epoch'.")
            if isinstance(answer, dict):
                raise _Wrong("your function returned a whole row: return its 'epoch' (row['epoch']).")
            if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
                raise _Wrong(f"your function returned {_a(type(answer).__name__)}; return one epoch number, "
                             "the best row's 'epoch'.")
            if answer == right:
                continue
            got = [row for row in history if row["epoch"] == answer]
            said = f"for validation balanced accuracies {values} it returned {answer!r}, not {right}"
            if answer in values and answer not in range(1, len(values) + 1):
                raise _Wrong(f"{said}: that is the best score itself; return the epoch it was reached at, "
                             "the row's 'epoch'.")
            if answer == right - 1:
                raise _Wrong(f"{said}: that is the row's position in the list; history's epochs count from 1 "
                             "(return row['epoch']).")
            if got and values.count(max(values)) > 1 and got[0]["val_balanced_accuracy"] == max(values):
                raise _Wrong(f"{said}: on a tie keep the earlier epoch (compare with >, not >=).")
            if got and got[0]["val_loss"] == min(r["val_loss"] for r in history):
                raise _Wrong(f"{said}: the epoch of the lowest validation loss; the course keeps the one of "
                             "the highest validation balanced accuracy.")
            if got and got[0]["val_accuracy"] == max(r["val_accuracy"] for r in history):
                raise _Wrong(f"{said}: the epoch of the highest plain accuracy; compare 'val_balanced_accuracy'.")
            if answer == history[-1]["epoch"]:
                raise _Wrong(f"{said}: that is the last epoch, where the training score is highest; the course "
                             "keeps the epoch of the highest validation balanced accuracy, 'val_balanced_accuracy'.")
            raise _Wrong(f"{said}.")
        return "the epoch of the highest validation balanced accuracy, the earlier one on a tie."
    return _report("best epoch", run)



# ------------------------------------------------------------------------------ the range test
def _range_result(lowest_at: int, n: int = 40) -> dict[str, list[float]]:
    rates = [1e-6 * 10 ** (k / 6) for k in range(n)]
    # width 11: the steepest fall lies 8 steps (a factor 21.5) before the minimum, so fastai's other
    # suggestion, the steepest slope, is not by chance equal to the minimum / 10 (a factor 10 is 6 steps)
    losses = [2.0 - 1.5 * math.exp(-((k - lowest_at) / 11) ** 2) + (0.08 * (k - lowest_at) if k > lowest_at else 0)
              for k in range(n)]
    return {"lr": rates, "loss": losses}


def check_lr_suggestion(suggest: Callable[[dict], Any]) -> bool:
    """`suggest(result)` is a tenth of the rate at which the range test's loss was lowest."""
    def run() -> str:
        for lowest_at in (25, 31, 12):
            result = _range_result(lowest_at)
            answer = _call(lambda: suggest({key: list(values) for key, values in result.items()}), "your function")
            if answer is None:
                raise _Wrong("your function returned None: return a learning rate.")
            if isinstance(answer, (str, tuple, list, dict)):
                raise _Wrong(f"your function returned {_a(type(answer).__name__)} ({answer!r:.40}): return one "
                             "number, the learning rate itself (format it only when printing).")
            value = _call(lambda: float(answer), "float(your answer)")
            right, at_min = result["lr"][lowest_at] / 10, result["lr"][lowest_at]
            if math.isclose(value, right, rel_tol=1e-6):
                continue
            if math.isclose(value, at_min, rel_tol=1e-6):
                raise _Wrong(f"you return the rate of the lowest loss ({at_min:.2e}); there the loss is about to "
                             "turn up: take a tenth of it.")
            if math.isclose(value, min(result["loss"]), rel_tol=1e-6):
                raise _Wrong("you return the lowest loss, not a learning rate: find where the loss is lowest, "
                             "then read result['lr'] there.")
            losses = result["loss"]
            steepest = min(range(1, len(losses)), key=lambda k: losses[k] - losses[k - 1])
            near = result["lr"][steepest - 1:steepest + 2]
            if any(math.isclose(value, rate, rel_tol=1e-6) or math.isclose(value, rate / 10, rel_tol=1e-6)
                   for rate in near):
                raise _Wrong("you return the rate where the loss falls fastest (fastai's other suggestion, the "
                             "steepest slope); this exercise asks for a tenth of the rate of the lowest loss.")
            if value in (lowest_at, lowest_at / 10):
                raise _Wrong("you return a position in the list, not a learning rate: read result['lr'] at it.")
            if math.isclose(value, result["lr"][-1] / 10, rel_tol=1e-6) or math.isclose(value, result["lr"][-1]):
                raise _Wrong("you use the last rate of the test, where the loss blew up: use the rate of the "
                             "lowest loss.")
            raise _Wrong(f"you suggest {value:.2e}; the rate of the lowest loss is {at_min:.2e}, and a tenth of "
                         f"it {right:.2e}.")
        return "a tenth of the rate of the lowest loss (fastai's minimum / 10)."
    return _report("suggested learning rate", run)
