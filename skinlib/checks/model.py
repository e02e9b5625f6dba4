"""Self-checks for notebook 01's exercises: fc1's input size, the SimpleCNN class and the parameter formulas."""
from __future__ import annotations

import numbers
from typing import Any, Callable

import torch
from torch import nn

from skinlib.checks.core import (_a, _call, _explained, _is_placeholder, _not_a_placeholder, _NotYet, _one_line,
                                 _report, _Wrong)
from skinlib.layout import CLASSES

SIMPLE_CNN_PARAMETERS = 108_896_416
FC1_INPUTS = 32 * 53 * 53
_FC1_HINTS = {  # the usual slips, each with the step it misses
    32 * 52 * 52: "a 5x5 convolution takes 4 pixels off a side (n - 5 + 1), not 5.",
    16 * 53 * 53: "conv2 gives 32 channels; 16 are conv1's.",
    32 * 53: "the 32 maps are 53 x 53: multiply channels x side x side.",
    53 * 53: "there are 32 such maps (conv2's channels): multiply channels x side x side.",
    32 * 106 * 106: "the second max-pool halves the side once more.",
    32 * 55 * 55: "conv2 also takes 4 pixels off a side before the second pool.",
    32 * 54 * 54: "a 5x5 convolution takes 4 pixels off a side and a pool halves it, rounding down: "
                  "224 -> 220 -> 110 -> 106 -> 53.",
}


# ------------------------------------------------------------------------------ notebook 01
def check_fc1_inputs(value: Any) -> bool:
    def run() -> str:
        if value is None:
            raise _NotYet("FC1_INPUTS is still None: replace it with your expression")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            how = "write the expression without quotes" if isinstance(value, str) else "write it with plain numbers"
            raise _Wrong(f"FC1_INPUTS is {_a(type(value).__name__)} ({value!r:.40}), not a number: {how}, "
                         "e.g. FC1_INPUTS = 16 * 100 * 100.")
        if value == FC1_INPUTS and not isinstance(value, numbers.Integral):
            raise _Wrong(f"{value!r} is the right count, but a float (`/` always gives one), and nn.Linear "
                         "takes an int: halve with // (a pool rounds down), or write the whole numbers.")
        hint = _FC1_HINTS.get(value)
        if hint:
            raise _Wrong(f"{value!r} is not the number of values that reach fc1: {hint}")
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
    def record(name: str, args: tuple) -> None:  # a non-tensor (nn.Flatten(x)) is left for the layer to refuse
        if args and isinstance(args[0], torch.Tensor):
            seen.setdefault(name, args[0].detach())

    hooks = [getattr(model, name).register_forward_pre_hook(
        lambda _m, args, name=name: record(name, args)) for name in names]
    try:
        with torch.no_grad():
            output = model(x)
    except NotImplementedError as error:
        if _is_placeholder(error):
            raise
        return seen, None, error
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
        if "but got float" in str(wrong):  # nn.Linear(89888.0, 1200): a size computed with `/`
            raise _Wrong("a layer was given a float as its size (FC1_INPUTS computed with `/`?): layer sizes "
                         "are ints; halve with //.") from None
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
        _compare_count(model, ours)
        ours.load_state_dict(model.state_dict(), strict=False, assign=True)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        mine, out, error = _module_inputs(model.eval(), x, names)
        right, expected, _ = _module_inputs(ours.eval(), x, names)
        for name in names:
            if name not in mine and error is not None:
                break  # forward failed before reaching this layer
            _compare_inputs(name, mine.get(name), right[name])
        if isinstance(error, NotImplementedError):
            raise _not_a_placeholder(error, "forward")
        if isinstance(error, NameError) and any(f"'{name}'" in str(error) for name in names + ["pool"]):
            raise _Wrong(f"forward raised {_one_line(error)}: the layers made in __init__ are attributes of "
                         "the network, so forward calls them as self.conv1, self.pool, ...")
        if error is not None:
            raise _explained(error, "forward")
        if not isinstance(out, torch.Tensor):
            raise _Wrong(f"forward returned {'None' if out is None else _a(type(out).__name__)}: end it with "
                         "`return self.fc3(x)`.")
        if tuple(out.shape) != tuple(expected.shape) or not torch.allclose(out, expected, atol=1e-4):
            raise _Wrong(f"forward's output (shape {tuple(out.shape)}) is not fc3's logits: end "
                         "forward with `return self.fc3(x)`, with no ReLU or softmax after it.")
        return "output (2, 8), the report's layers and parameter count, each step of forward in order."
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


def _compare_count(model: nn.Module, ours: nn.Module) -> None:
    """The table's layers and nothing else with weights. Says what differs, not the report's total:
    the notebook asks for a guess of it further down."""
    count = sum(p.numel() for p in model.parameters())
    if count == SIMPLE_CNN_PARAMETERS:
        return
    table = {name for name, _ in ours.named_children()}
    extra = [name for name, layer in model.named_children()
             if name not in table and any(True for _ in layer.parameters())]
    if extra:
        raise _Wrong(f"__init__ also makes {', '.join(extra)}, a layer with weights the table does not list: "
                     "take it out (SimpleCNN is the report's network).")
    no_bias = [name for name in sorted(table) if hasattr(getattr(ours, name), "bias")
               and getattr(getattr(model, name, None), "bias", None) is None]
    if no_bias:
        raise _Wrong(f"{', '.join(no_bias)} has no bias (bias=False?): the table's layers all have one.")
    difference = count - SIMPLE_CNN_PARAMETERS
    raise _Wrong(f"your network has {abs(difference):,} parameters {'more' if difference > 0 else 'fewer'} than "
                 "the report's: __init__ has a layer too many or a bias missing.")


def _compare_inputs(name: str, mine: torch.Tensor | None, right: torch.Tensor) -> None:
    if mine is None:
        raise _Wrong(f"forward never calls self.{name}.")
    if mine.shape != right.shape:
        if mine.dim() != right.dim() or mine.shape[0] != right.shape[0]:
            raise _Wrong(f"self.{name} receives shape {tuple(mine.shape)}, not {tuple(right.shape)}: "
                         "the flatten must keep the batch dimension: torch.flatten(x, 1).")
        raise _Wrong(f"self.{name} receives shape {tuple(mine.shape)}, not {tuple(right.shape)}: "
                     f"look at the steps before {name} in forward (a pool or the flatten).")
    if not (torch.equal(mine, right) or torch.allclose(mine, right, atol=1e-4)):  # equal: the usual, and fast
        hint = "a ReLU is missing" if (mine < 0).any() and not (right < 0).any() else "a step differs"
        raise _Wrong(f"self.{name} receives other values than it should ({hint}): look at the "
                     f"line of forward just before {name}.")


# Sizes to try the formulas on: the notebook's layers first, then odd ones a lucky formula would miss.
_CONV_SIZES = [(3, 16, 5), (16, 32, 5), (1, 7, 3), (5, 2, 1)]
_LINEAR_SIZES = [(89_888, 1200), (1200, 840), (840, 8), (3, 5)]


def _formula(function: Callable[..., Any], args: tuple[int, ...], name: str) -> int:
    value = _call(lambda: function(*args), f"{name}{args}")
    if value is None:
        raise _Wrong(f"{name}{args} returned None: end the function with `return` and the count.")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Wrong(f"{name}{args} returned {_a(type(value).__name__)}, not a number.")
    return value


def check_parameter_formulas(conv_parameters: Callable[[int, int, int], int],
                             linear_parameters: Callable[[int, int], int]) -> bool:
    """The student's counts against PyTorch's own (built on the meta device: no memory, no time)."""
    def run() -> str:
        for c_in, c_out, k in _CONV_SIZES:
            with torch.device("meta"):
                right = sum(p.numel() for p in nn.Conv2d(c_in, c_out, k).parameters())
            got = _formula(conv_parameters, (c_in, c_out, k), "conv_parameters")
            if got != right:
                raise _Wrong(f"conv_parameters{(c_in, c_out, k)} gives {got:,}, PyTorch counts {right:,}: "
                             f"{_conv_hint(got, c_in, c_out, k)}")
        for n_in, n_out in _LINEAR_SIZES:
            right = n_in * n_out + n_out  # nn.Linear's weight (n_out, n_in) and bias (n_out)
            got = _formula(linear_parameters, (n_in, n_out), "linear_parameters")
            if got != right:
                hint = ("the bias adds one number per output, not per input." if got == n_in * n_out + n_in else
                        "each of the n_out units also has a bias." if got == n_in * n_out else
                        "every input is connected to every output (n_in x n_out weights), plus a bias per output.")
                raise _Wrong(f"linear_parameters{(n_in, n_out)} gives {got:,}, PyTorch counts {right:,}: {hint}")
        return "both formulas match PyTorch's counts, the notebook's layers and odd sizes."
    return _report("parameter formulas", run)


def _conv_hint(got: float, c_in: int, c_out: int, k: int) -> str:
    weights = c_out * c_in * k * k
    if got == weights:
        return "each filter also has a bias: one per output channel."
    if got == weights + c_in:
        return "there is one bias per output channel (filter), not per input channel."
    if got == c_out * k * k + c_out:
        return "a filter spans every input channel: c_in x k x k weights each."
    if got == c_out * c_in * k + c_out:
        return "a filter is k x k: square the kernel size."
    return "a filter has c_in x k x k weights and one bias; there are c_out filters."
