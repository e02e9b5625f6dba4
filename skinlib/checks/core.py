"""What every exercise check shares: one printed sentence per check, never a traceback.

`_report` runs a check and prints its one line; `_call` runs the student's code and turns any
error into a `_Wrong` sentence naming where it happened; `use_yours_or` lets the notebook go on
with skinlib's version until the student's passes; `compare_guess` answers a "predict before you
run" cell, whatever was typed into it.
"""
from __future__ import annotations

import math
import numbers
import re
import sysconfig
from pathlib import Path
from typing import Any, Callable

import torch


class _Wrong(Exception):  # a check's finding: its message is the one sentence shown to the student
    pass


class _NotYet(NotImplementedError):  # an answer still at its placeholder (e.g. None): says which
    pass


# Where library code lives: a NotImplementedError raised there is PyTorch's, not the exercise's.
_LIBRARIES = tuple({str(Path(path).resolve()) for path in (
    Path(torch.__file__).parent, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
    sysconfig.get_paths()["platlib"])})


def _is_placeholder(error: NotImplementedError) -> bool:
    """True for the exercise's own `raise NotImplementedError(<TODO>)`: the last frame it passed
    through is the student's code, not PyTorch's (which raises it for an operation that has no
    kernel for a dtype, e.g. `criterion(labels, outputs)`, or a Module without `forward`)."""
    if isinstance(error, _NotYet):
        return True
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return True
    where = str(Path(frame.tb_frame.f_code.co_filename).resolve())
    return not where.startswith(_LIBRARIES)


def _not_a_placeholder(error: NotImplementedError, where: str) -> _Wrong:
    message = str(error)
    if "missing the required \"forward\" function" in message:
        return _Wrong(f"{where}: PyTorch finds no forward method: is `def forward(self, x):` spelled so "
                      "and indented inside the class?")
    return _Wrong(f"{where} raised {_one_line(error)}. PyTorch raised it, not the exercise: an operation got "
                  "a tensor of a type it cannot handle (integer where it needs floats?); for a loss the order "
                  "is criterion(outputs, labels).")


def _report(what: str, run: Callable[[], str]) -> bool:
    try:
        print(f"✓ {what}: {run()}")
        return True
    except _NotYet as placeholder:
        print(f"… {what}: not done yet ({placeholder}).")
    except NotImplementedError as error:
        if _is_placeholder(error):
            print(f"… {what}: not done yet (the exercise above still raises {_todo(error)}: write that part in "
                  "its place, then delete the raise line).")
        else:
            print(f"✗ {what}: {_not_a_placeholder(error, 'your code')}")
    except _Wrong as wrong:
        print(f"✗ {what}: {wrong}")
    return False


def _todo(error: NotImplementedError) -> str:
    """The placeholder as the student sees it, so a raise line left under written code is found."""
    text = str(error)
    return f"NotImplementedError({text if len(text) <= 60 else text[:57] + '...'!r})" if text else \
        "NotImplementedError"


# Errors whose one line does not say what to change: what PyTorch's message means in the exercises.
_HINTS = {
    "but got Byte and Float": "the images reached the model as uint8 (0-255): move each batch with "
                              "`images, labels = to_device_batch(images, labels, device)`, which also "
                              "normalises them",
    "does not require grad and does not have a grad_fn": "the loss has no gradient to go back through: is "
                                                          "the forward pass inside `torch.no_grad()`, or the "
                                                          "loss made from predictions instead of the outputs?",
    "has no attribute 'backward'": "call backward() on the loss tensor itself, not on loss.item()",
    "before Module.__init__() call": "call super().__init__() first in __init__",
    "for target with class probabilities": "criterion(outputs, labels) takes the raw outputs, shape (batch, 8), "
                                           "first, not the predicted classes",
    "expected target dtype to be Long": "the labels must stay integer class indices (int64): do not turn them "
                                        "into floats",
    **dict.fromkeys(("must be Tensor, not ReLU", "must be Tensor, not Flatten", "must be Tensor, not MaxPool2d"),
                    "nn.ReLU(x) builds a layer instead of applying one: in forward write F.relu(x), "
                    "torch.flatten(x, 1), self.pool(x)"),
    "does not support the context manager protocol": "write `with torch.no_grad():`, with its brackets",
    "name 'outputs' is not defined": "the two lines after the exercise use `outputs` and `loss`: give yours "
                                     "these names",
    "name 'loss' is not defined": "the two lines after the exercise use `outputs` and `loss`: give yours "
                                  "these names",
    "'float' object has no attribute 'item'": "keep `loss` the tensor that criterion(outputs, labels) returns: "
                                              "the line after the exercise calls loss.item() itself",
    "'PosixPath' object has no attribute": "the transform was given the file's path: open the image first, "
                                           "Image.open(path).convert(\"RGB\"), and transform that",
    "not supported between instances of 'float' and 'str'": "the argmax met a column of text (the image names?): "
                                                             "take only the 8 class columns, table[list(CLASSES)]",
    "('MEL', 'NV', ": "pandas reads a tuple as one column name: pick the 8 columns with table[list(CLASSES)]",
    "invalid index to scalar variable": "self.labels is one number, not one per image: argmax(axis=1) gives "
                                        "each row's position of the 1.0",
}


def _explained(error: Exception, where: str) -> _Wrong:
    """`where raised <error>`, with what it means in the exercises when its one line does not say."""
    hint = next((hint for key, hint in _HINTS.items() if key in str(error)), None)
    if hint is None:
        return _Wrong(f"{where} raised {_one_line(error)}")
    return _Wrong(f"{where} raised {_one_line(error)}: {hint}{'' if hint.endswith('?') else '.'}")  # no "?."


def _call(action: Callable[[], Any], where: str) -> Any:
    """Run the student's code; any error but the exercise's own placeholder becomes one sentence naming `where`."""
    try:
        return action()
    except _Wrong:  # already explained by the check
        raise
    except NotImplementedError as error:
        if _is_placeholder(error):
            raise
        raise _not_a_placeholder(error, where) from None
    except Exception as error:  # the student's code may raise anything: translate, do not dump
        raise _explained(error, where) from None


def _one_line(error: BaseException) -> str:
    first_line = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {first_line}"


def _a(noun: str) -> str:
    """The noun with its article, by its first letter: 'an int', 'a tensor', 'an AvgPool2d'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def use_yours_or(reference: Any, yours: Any, passed: bool, what: str) -> Any:
    """`yours` if its check passed, else skinlib's `reference` (saying so): the cells below still run."""
    if passed:
        return yours
    print(f"Note: the cells below use skinlib's {what} until yours passes its check.")
    return reference


def compare_guess(guess: Any, actual: float, what: str, example: str, unit: str = "",
                  source: str = "measured") -> bool:
    """One line putting a "predict before you run" guess beside the measured value; any value may
    have been typed (None, text, a list): it says what it expects instead of raising."""
    if guess is None:
        print(f"(write your guess for {what} in MY_GUESS, as a number such as {example}, and run this cell again)")
        return False
    if isinstance(guess, torch.Tensor) and guess.numel() == 1:
        guess = guess.item()  # torch.log(torch.tensor(8.0)): a number written the PyTorch way
    if isinstance(guess, str) and read_guess(guess) is not None:
        guess = read_guess(guess)  # "100M", "16k", "16,392": what a student types for a count
    if isinstance(guess, bool) or not isinstance(guess, numbers.Real) or guess != guess:
        shown = repr(guess) if len(repr(guess)) <= 40 else repr(guess)[:37] + "..."
        how = ("a comma separates values in Python: write the number without commas (an underscore may group "
               "its digits)" if isinstance(guess, tuple) else
               "write a number, or text that reads as one such as \"100M\" or \"16k\"")
        print(f"MY_GUESS is {_a(type(guess).__name__)} ({shown}), not a number: {how}, e.g. MY_GUESS = {example}, "
              "and run this cell again")
        return False
    ratio = f", {float(guess) / actual:.2g} times the real value" if actual and guess else ""
    print(f"your guess for {what}: {_readable(guess)}{unit}; {source}: {_readable(actual)}{unit}{ratio}")
    return True


_SCALES = {"": 1, "k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "mio": 1e6, "b": 1e9, "billion": 1e9}


def read_guess(text: str) -> float | None:
    """A count typed as text: "16,392", "16k", "0.016 M", "1.6e4", "100M"; None if unreadable."""
    match = re.fullmatch(r"\s*~?\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in _SCALES:
        return None
    value = float(match.group(1).replace(",", "").replace("_", "")) * _SCALES[match.group(2)]
    return value if math.isfinite(value) else None


def _readable(value: float) -> str:
    """108,896,416 and 100,000,000 (not 1.089e+08), 2.079 (not 2.0794415416798357), 47.9."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
