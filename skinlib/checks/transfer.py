"""Self-checks for notebook 03's exercises: the new ResNet-50 head."""
from __future__ import annotations

from typing import Callable

from torch import nn

from skinlib.checks.core import _call, _report, _Wrong
from skinlib.layout import CLASSES


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
