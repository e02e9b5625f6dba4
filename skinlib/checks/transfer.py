"""Self-checks for notebook 03's exercises: the new ResNet-50 head."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from skinlib.checks.core import _a, _call, _report, _Wrong
from skinlib.layout import CLASSES


# ------------------------------------------------------------------------------ notebook 03
def check_resnet_head(replace_head: Callable[[nn.Module], nn.Module], frozen: bool = True) -> bool:
    """`replace_head(resnet50)` gives the same network (its backbone's weights kept) with a new
    2048 -> 8 head (an nn.Linear, or an nn.Sequential ending in one) and, if `frozen`, only it trainable.
    The head is judged by its weights' shapes and a forward pass, not by attributes one can overwrite."""
    from torchvision.models import resnet50

    def run() -> str:
        given = resnet50()
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
        if not all(p.requires_grad for p in fc.parameters()):
            raise _Wrong("the new head is frozen too: it is the part that must learn (freeze first, "
                         "then replace the head).")
        trainable = sum(p.numel() for name, p in model.named_parameters()
                        if not name.startswith("fc.") and p.requires_grad)
        if frozen and trainable:
            raise _Wrong(f"{trainable:,} backbone parameters still learn: set requires_grad = False on "
                         "every parameter before adding the head.")
        head = sum(p.numel() for p in fc.parameters())
        return f"2048 -> 8 head ({head:,} parameters){', backbone frozen' if frozen else ''}."
    return _report("ResNet-50 head", run)


def _check_head(fc) -> None:
    """A new Linear (or a Sequential ending in one) whose weights map 2048 features to 8 scores."""
    linears = [fc] if isinstance(fc, nn.Linear) else [m for m in fc.modules() if isinstance(m, nn.Linear)] \
        if isinstance(fc, nn.Sequential) else []
    if not linears:
        raise _Wrong(f"model.fc is {_a(type(fc).__name__)}, not an nn.Linear: assign model.fc = nn.Linear(...) "
                     "and return the model.")
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
