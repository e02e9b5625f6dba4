"""Self-checks for the notebooks' exercises: one printed sentence that says what is wrong and where.

Each `check_*` function runs the student's answer on a small probe, prints one line (a tick
when it passes; else what is wrong and where to look) and returns True or False. A check never
raises for a wrong answer: an exercise not written yet (NotImplementedError) is reported as
"not done yet", and the notebook goes on with skinlib's reference through `use_yours_or`.
Notebook 01's and 03's checks are here, notebook 02's in `checks_training` (imported here too).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from skinlib.checks_core import _a, _call, _NotYet, _one_line, _report, _Wrong, use_yours_or
from skinlib.checks_training import (INITIAL_LOSS, check_dataset, check_evaluate, check_initial_loss,
                                     check_train_one_epoch, reference_dataset)
from skinlib.data import CLASSES

__all__ = ["check_fc1_inputs", "check_simple_cnn", "check_initial_loss", "check_train_one_epoch",
           "check_evaluate", "check_dataset", "reference_dataset", "check_resnet_head", "use_yours_or",
           "INITIAL_LOSS"]

SIMPLE_CNN_PARAMETERS = 108_896_416
FC1_INPUTS = 32 * 53 * 53


# ------------------------------------------------------------------------------ notebook 01
def check_fc1_inputs(value: Any) -> bool:
    def run() -> str:
        if value is None:
            raise _NotYet("FC1_INPUTS is still None: replace it with your expression")
        if value != FC1_INPUTS:
            raise _Wrong(f"{value!r} is not the number of values that reach fc1: follow one side "
                         "from 224 through conv1 (5x5), a pool, conv2 (5x5) and a pool, then "
                         "multiply channels x side x side.")
        return f"{FC1_INPUTS:,} = 32 x 53 x 53."
    return _report("fc1's input size", run)


def _module_inputs(model: nn.Module, x: torch.Tensor,
                   names: list[str]) -> tuple[dict[str, torch.Tensor], Any, Exception | None]:
    """What each named submodule receives during `model(x)`, the output, and the error `model(x)`
    raised if any (the inputs seen up to the error tell which step went wrong)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_pre_hook(
        lambda _m, args, name=name: seen.setdefault(name, args[0].detach())) for name in names]
    try:
        with torch.no_grad():
            output = model(x)
    except NotImplementedError:
        raise
    except Exception as error:  # the student's forward may raise anything: the caller explains it
        return seen, None, error
    finally:
        for hook in hooks:
            hook.remove()
    return seen, output, None


def _build_simple_cnn(model_class: Callable[..., nn.Module]) -> nn.Module:
    try:
        return _call(lambda: model_class(num_classes=len(CLASSES)), "SimpleCNN(num_classes=8)")
    except _Wrong as wrong:
        if "NoneType" in str(wrong):  # nn.Linear(None, 1200): FC1_INPUTS = None, Exercise 1 skipped
            raise _Wrong("a layer was given None as its size: FC1_INPUTS is still None, so do "
                         "Exercise 1 first (and run its cell).") from None
        raise


def check_simple_cnn(model_class: Callable[..., nn.Module]) -> bool:
    """The student's SimpleCNN against skinlib's: first what __init__ built (layer types, kernel,
    stride, padding, weight shapes, parameter count), then forward with the same weights (the input
    each layer receives, the output)."""
    from skinlib.models import SimpleCNN

    def run() -> str:
        torch.manual_seed(0)
        model = _build_simple_cnn(model_class)
        names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
        missing = [name for name in names if not isinstance(getattr(model, name, None), nn.Module)]
        if missing:
            raise _Wrong(f"__init__ defines no {', '.join(missing)}: name the layers as in the table above.")
        with torch.device("meta"):  # no memory, no initialisation: it will share the student's weights
            ours = SimpleCNN(num_classes=len(CLASSES))
        _compare_layers(model, ours)
        count = sum(p.numel() for p in model.parameters())
        if count != SIMPLE_CNN_PARAMETERS:
            raise _Wrong(f"{count:,} parameters, not {SIMPLE_CNN_PARAMETERS:,}: __init__ has a layer "
                         "too many or a bias missing.")
        ours.load_state_dict(model.state_dict(), strict=False, assign=True)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        mine, out, error = _module_inputs(model.eval(), x, names)
        right, expected, _ = _module_inputs(ours.eval(), x, names)
        for name in names:
            if name not in mine and error is not None:
                break  # forward failed before reaching this layer
            _compare_inputs(name, mine.get(name), right[name])
        if error is not None:
            raise _Wrong(f"forward raised {_one_line(error)}")
        if not isinstance(out, torch.Tensor):
            raise _Wrong(f"forward returned {'None' if out is None else _a(type(out).__name__)}: end it with "
                         "`return self.fc3(x)`.")
        if tuple(out.shape) != tuple(expected.shape) or not torch.allclose(out, expected, atol=1e-4):
            raise _Wrong(f"forward's output (shape {tuple(out.shape)}) is not fc3's logits: end "
                         "forward with `return self.fc3(x)`, with no ReLU or softmax after it.")
        return f"output (2, 8), {count:,} parameters, layers in the right order."
    return _report("SimpleCNN", run)


_SETTINGS = {nn.Conv2d: ("kernel_size", "stride", "padding", "dilation", "groups"),
             nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}


def _pair(value: Any) -> Any:
    """One spelling per setting: MaxPool2d(2) keeps 2, MaxPool2d((2, 2)) keeps (2, 2) and
    Conv2d(..., padding="valid") keeps "valid", though each is the same layer as the table's."""
    if value == "valid":
        return (0, 0)
    return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value


def _compare_layers(model: nn.Module, ours: nn.Module) -> None:
    """What __init__ built, layer by layer: type, settings (kernel, stride, padding) and weight shape.
    Checked before forward runs, so a fault of __init__ is named there, not as a wrong activation."""
    for name in ["conv1", "pool", "conv2", "fc1", "fc2", "fc3"]:
        mine, right = getattr(model, name, None), getattr(ours, name)
        kind = type(right).__name__
        if name == "pool" and not isinstance(mine, nn.Module):
            continue  # a pool written as a function (F.max_pool2d) is checked by what conv2 receives
        if not isinstance(mine, type(right)):
            raise _Wrong(f"self.{name} is {_a(type(mine).__name__)}, not an nn.{kind}: look at {name} "
                         "in __init__.")
        for setting in _SETTINGS.get(type(right), ()):
            got, expected = _pair(getattr(mine, setting)), _pair(getattr(right, setting))
            if got != expected:
                raise _Wrong(f"self.{name} is an nn.{kind} with {setting}={got!r}, not {expected!r}: "
                             f"look at {name} in __init__ (the table above).")
        if hasattr(right, "weight"):
            shape, expected = tuple(mine.weight.shape), tuple(right.weight.shape)
            if shape != expected:
                hint = " (its input size, computed above)" if name == "fc1" else ""
                raise _Wrong(f"{name}'s weight has shape {shape}, not {expected}: look at {name} in "
                             f"__init__{hint}.")


def _compare_inputs(name: str, mine: torch.Tensor | None, right: torch.Tensor) -> None:
    if mine is None:
        raise _Wrong(f"forward never calls self.{name}.")
    if mine.shape != right.shape:
        if mine.dim() != right.dim() or mine.shape[0] != right.shape[0]:
            raise _Wrong(f"self.{name} receives shape {tuple(mine.shape)}, not {tuple(right.shape)}: "
                         "the flatten must keep the batch dimension: torch.flatten(x, 1).")
        raise _Wrong(f"self.{name} receives shape {tuple(mine.shape)}, not {tuple(right.shape)}: "
                     f"look at the steps before {name} in forward (a pool or the flatten).")
    if not torch.allclose(mine, right, atol=1e-4):
        hint = "a ReLU is missing" if (mine < 0).any() and not (right < 0).any() else "a step differs"
        raise _Wrong(f"self.{name} receives other values than it should ({hint}): look at the "
                     f"line of forward just before {name}.")


# ------------------------------------------------------------------------------ notebook 03
def check_resnet_head(replace_head: Callable[[nn.Module], nn.Module], frozen: bool = True) -> bool:
    """`replace_head(resnet50)` gives a new 2048 -> 8 head and, if `frozen`, only it trainable."""
    from torchvision.models import resnet50

    def run() -> str:
        model = _call(lambda: replace_head(resnet50()), "your function")
        if model is None:
            raise _Wrong("your function returned None: end it with `return model`.")
        fc = getattr(model, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise _Wrong(f"model.fc is {type(fc).__name__}, not an nn.Linear: assign model.fc = nn.Linear(...) "
                         "and return the model.")
        if fc.out_features != len(CLASSES) or fc.in_features != 2048:
            raise _Wrong(f"the head maps {fc.in_features} features to {fc.out_features} outputs; it "
                         "needs 2048 -> 8, one per class: replace model.fc.")
        if not all(p.requires_grad for p in fc.parameters()):
            raise _Wrong("the new head is frozen too: it is the part that must learn (freeze first, "
                         "then replace the head).")
        backbone = [p for name, p in model.named_parameters() if not name.startswith("fc.")]
        trainable = sum(p.numel() for p in backbone if p.requires_grad)
        if frozen and trainable:
            raise _Wrong(f"{trainable:,} backbone parameters still learn: set requires_grad = False on "
                         "every parameter before adding the head.")
        head = sum(p.numel() for p in fc.parameters())
        return f"2048 -> 8 head ({head:,} parameters){', backbone frozen' if frozen else ''}."
    return _report("ResNet-50 head", run)
