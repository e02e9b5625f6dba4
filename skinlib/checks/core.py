"""What every exercise check shares: one printed sentence per check, never a traceback.

`_report` runs a check and prints its one line; `_call` runs the student's code and turns any
error into a `_Wrong` sentence naming where it happened; `use_yours_or` lets the notebook go on
with skinlib's version until the student's passes.
"""
from __future__ import annotations

from typing import Any, Callable


class _Wrong(Exception):  # a check's finding: its message is the one sentence shown to the student
    pass


class _NotYet(NotImplementedError):  # an answer still at its placeholder (e.g. None): says which
    pass


def _report(what: str, run: Callable[[], str]) -> bool:
    try:
        print(f"✓ {what}: {run()}")
        return True
    except _NotYet as placeholder:
        print(f"… {what}: not done yet ({placeholder}).")
    except NotImplementedError:
        print(f"… {what}: not done yet (the exercise above still raises NotImplementedError).")
    except _Wrong as wrong:
        print(f"✗ {what}: {wrong}")
    return False


def _call(action: Callable[[], Any], where: str) -> Any:
    """Run the student's code; any error but NotImplementedError becomes one sentence naming `where`."""
    try:
        return action()
    except (NotImplementedError, _Wrong):  # not written yet, or already explained by the check
        raise
    except Exception as error:  # the student's code may raise anything: translate, do not dump
        raise _Wrong(f"{where} raised {_one_line(error)}") from None


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
