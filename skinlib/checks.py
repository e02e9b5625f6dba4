"""Self-checks for the notebooks' exercises: one printed sentence that says what is wrong and where.

Each `check_*` function runs the student's answer on a small probe, prints one line (a tick
when it passes; else what is wrong and where to look) and returns True or False. A check never
raises for a wrong answer: an exercise not written yet (NotImplementedError) is reported as
"not done yet", and the notebook goes on with skinlib's reference through `use_yours_or`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from skinlib.data import CLASSES

SIMPLE_CNN_PARAMETERS = 108_896_416
FC1_INPUTS = 32 * 53 * 53
INITIAL_LOSS = math.log(len(CLASSES))  # equal scores for 8 classes: -ln(1/8)


class _Wrong(Exception):  # a check's finding: its message is the one sentence shown to the student
    pass


def _report(what: str, run: Callable[[], str]) -> bool:
    try:
        print(f"✓ {what}: {run()}")
        return True
    except NotImplementedError:
        print(f"… {what}: not done yet (the exercise above still raises NotImplementedError).")
    except _Wrong as wrong:
        print(f"✗ {what}: {wrong}")
    return False


def _call(action: Callable[[], Any], where: str) -> Any:
    """Run the student's code; any error but NotImplementedError becomes one sentence naming `where`."""
    try:
        return action()
    except NotImplementedError:
        raise
    except Exception as error:  # the student's code may raise anything: translate, do not dump
        first_line = next(iter(str(error).strip().splitlines()), "")
        raise _Wrong(f"{where} raised {type(error).__name__}: {first_line}") from None


def use_yours_or(reference: Any, yours: Any, passed: bool, what: str) -> Any:
    """`yours` if its check passed, else skinlib's `reference` (saying so): the cells below still run."""
    if passed:
        return yours
    print(f"Note: the cells below use skinlib's {what} until yours passes its check.")
    return reference


# ------------------------------------------------------------------------------ notebook 01
def check_fc1_inputs(value: Any) -> bool:
    def run() -> str:
        if value is None:
            raise NotImplementedError
        if value != FC1_INPUTS:
            raise _Wrong(f"{value!r} is not the number of values that reach fc1: follow one side "
                         "from 224 through conv1 (5x5), a pool, conv2 (5x5) and a pool, then "
                         "multiply channels x side x side.")
        return f"{FC1_INPUTS:,} = 32 x 53 x 53."
    return _report("fc1's input size", run)


def _module_inputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """What each named submodule receives during `model(x)`."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_pre_hook(
        lambda _m, args, name=name: seen.setdefault(name, args[0].detach())) for name in names]
    try:
        _call(lambda: model(x), "forward")
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def check_simple_cnn(model_class: Callable[..., nn.Module]) -> bool:
    """Output shape, parameter count and layer order of the student's SimpleCNN, against
    skinlib's (same weights, the input each layer receives)."""
    from skinlib.models import SimpleCNN

    def run() -> str:
        torch.manual_seed(0)
        model = _call(lambda: model_class(num_classes=len(CLASSES)), "SimpleCNN(num_classes=8)")
        names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
        missing = [name for name in names if not isinstance(getattr(model, name, None), nn.Module)]
        if missing:
            raise _Wrong(f"__init__ defines no {', '.join(missing)}: name the layers as in the table above.")
        with torch.device("meta"):  # no memory, no initialisation: it will share the student's weights
            ours = SimpleCNN(num_classes=len(CLASSES))
        for name in names:
            shape, expected = (tuple(p.shape) for p in (getattr(model, name).weight,
                                                        getattr(ours, name).weight))
            if shape != expected:
                raise _Wrong(f"{name}'s weight has shape {shape}, not {expected}: look at {name} in "
                             "__init__ (for fc1: its input size, computed above).")
        count = sum(p.numel() for p in model.parameters())
        if count != SIMPLE_CNN_PARAMETERS:
            raise _Wrong(f"{count:,} parameters, not {SIMPLE_CNN_PARAMETERS:,}: __init__ has a layer "
                         "too many or a bias missing.")
        ours.load_state_dict(model.state_dict(), strict=False, assign=True)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        mine, right = _module_inputs(model.eval(), x, names), _module_inputs(ours.eval(), x, names)
        for name in names:
            _compare_inputs(name, mine.get(name), right[name])
        with torch.no_grad():
            out = model(x)
            right = ours(x)
        if tuple(out.shape) != tuple(right.shape) or not torch.allclose(out, right, atol=1e-4):
            raise _Wrong(f"forward's output (shape {tuple(out.shape)}) is not fc3's logits: end "
                         "forward with `return self.fc3(x)`, with no ReLU or softmax after it.")
        return f"output (2, 8), {count:,} parameters, layers in the right order."
    return _report("SimpleCNN", run)


def _compare_inputs(name: str, mine: torch.Tensor | None, right: torch.Tensor) -> None:
    if mine is None:
        raise _Wrong(f"forward never calls self.{name}.")
    if mine.shape != right.shape:
        raise _Wrong(f"self.{name} receives shape {tuple(mine.shape)}, not {tuple(right.shape)}: "
                     f"look at the steps before {name} in forward (a pool or the flatten).")
    if not torch.allclose(mine, right, atol=1e-4):
        hint = "a ReLU is missing" if (mine < 0).any() and not (right < 0).any() else "a step differs"
        raise _Wrong(f"self.{name} receives other values than it should ({hint}): look at the "
                     f"line of forward just before {name}.")


# ------------------------------------------------------------------------------ notebook 02
def check_initial_loss(loss: Any) -> bool:
    """An untrained network's mean cross-entropy on a batch is about ln 8."""
    def run() -> str:
        value = float(loss)
        if value > 2 * INITIAL_LOSS:
            raise _Wrong(f"{value:.2f} is far above ln 8 = {INITIAL_LOSS:.2f}: is it summed over the "
                         "batch instead of averaged, or computed on unnormalised images?")
        if abs(value - INITIAL_LOSS) > 0.5:
            raise _Wrong(f"{value:.2f} is far from ln 8 = {INITIAL_LOSS:.2f}: pass the raw logits and "
                         "the labels to nn.CrossEntropyLoss (no softmax, no NLLLoss) of an untrained model.")
        return f"{value:.3f}, close to ln 8 = {INITIAL_LOSS:.3f}."
    return _report("initial loss", run)


class _Probe(nn.Module):
    """A tiny classifier of 3x4x4 images that records its mode and grad state at each forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 4 * 4, len(CLASSES))
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.modes.append((self.training, torch.is_grad_enabled()))
        return self.fc(x.flatten(1))


class _Spy(torch.optim.SGD):  # keeps a copy of the gradient it is asked to step with
    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.grads: list[torch.Tensor | None] = []

    def step(self, closure=None):
        grad = self.param_groups[0]["params"][0].grad
        self.grads.append(None if grad is None else grad.detach().clone())
        return super().step(closure)


def _batch(device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 4, 4, generator=generator)
    return images.to(device), torch.arange(16).remainder(len(CLASSES)).to(device)


def check_train_one_epoch(train_one_epoch: Callable, device="cpu") -> bool:
    """train_one_epoch(model, loader, optimizer, criterion): train mode, zeroed gradients, a step
    per batch, a loss that falls when it overfits one small batch."""
    def run() -> str:
        batch, criterion = _batch(device), nn.CrossEntropyLoss()
        model = _Probe().to(device).eval()
        spy = _Spy(model.parameters(), lr=0.0)  # lr 0: both steps see the same weights
        _call(lambda: train_one_epoch(model, [batch, batch], spy, criterion), "train_one_epoch")
        if not model.modes or not model.modes[0][0]:
            raise _Wrong("the model was in evaluation mode while training: call model.train() first.")
        if len(spy.grads) != 2 or spy.grads[0] is None:
            raise _Wrong(f"optimizer.step() ran {len(spy.grads)} time(s) for 2 batches, with "
                         f"{'no' if spy.grads and spy.grads[0] is None else 'a'} gradient: each batch "
                         "needs loss.backward() then optimizer.step().")
        if torch.allclose(spy.grads[1], 2 * spy.grads[0]):
            raise _Wrong("the second step's gradient is twice the first: gradients pile up; call "
                         "optimizer.zero_grad() before loss.backward() in every step.")
        model = _Probe().to(device)
        before = criterion(model(batch[0]), batch[1]).item()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(30):
            _call(lambda: train_one_epoch(model, [batch], optimizer, criterion), "train_one_epoch")
        after = criterion(model(batch[0]), batch[1]).item()
        if not after < before / 2:
            raise _Wrong(f"30 passes over one small batch took the loss from {before:.2f} to "
                         f"{after:.2f}; it should fall below half: is the loss computed from this "
                         "batch's outputs and labels, and optimizer.step() called?")
        return f"zeroes gradients, steps once per batch, overfits one batch (loss {before:.2f} -> {after:.2f})."
    return _report("train_one_epoch", run)


def check_evaluate(evaluate: Callable, device="cpu") -> bool:
    """evaluate(model, loader, criterion): eval mode, no gradients, the right mean loss and accuracy."""
    def run() -> str:
        images, labels = _batch(device)
        batches = [(images[:10], labels[:10]), (images[10:], labels[10:])]
        model, criterion = _Probe().to(device).train(), nn.CrossEntropyLoss()
        weights = model.fc.weight.detach().clone()
        result = _call(lambda: evaluate(model, batches, criterion), "evaluate")
        if not model.modes or model.modes[0][0]:
            raise _Wrong("the model was in training mode while testing: call model.eval() first.")
        if model.modes[0][1]:
            raise _Wrong("gradients were recorded while testing: run the loop inside `with torch.no_grad():`.")
        if not torch.equal(weights, model.fc.weight):
            raise _Wrong("testing changed the weights: the test loop must not call the optimizer.")
        with torch.no_grad():
            outputs = model.fc(images.flatten(1))
        loss = criterion(outputs, labels).item()
        right = (outputs.argmax(dim=1) == labels).float().mean().item()
        got = {key: float(result[key]) for key in ("loss", "accuracy")} if isinstance(result, dict) else {}
        if not got or abs(got["loss"] - loss) > 1e-4 or abs(got["accuracy"] - right) > 1e-6:
            raise _Wrong(f"it returned {got or result!r}, expected loss {loss:.4f} and accuracy "
                         f"{right:.4f}: weight each batch's mean loss by its size, then divide by all images.")
        return "evaluation mode, no gradients, the right loss and accuracy."
    return _report("evaluate", run)


def reference_dataset(data_dir, transform) -> torch.utils.data.Dataset:
    """skinlib's Dataset of every image in `data_dir`, with the signature of notebook 02's."""
    from skinlib.data import ISICDataset, load_index

    return ISICDataset(load_index(data_dir), transform=transform)


def check_dataset(dataset_class: Callable, data_dir) -> bool:
    """`dataset_class(data_dir, transform)` gives one (3x224x224 float tensor, int label) per CSV row."""
    from skinlib.data import eval_transform, load_index

    def run() -> str:
        dataset = _call(lambda: dataset_class(data_dir, transform=eval_transform()), "the Dataset's __init__")
        frame = load_index(data_dir)
        size = _call(lambda: len(dataset), "len(dataset)")
        if size != len(frame):
            raise _Wrong(f"len(dataset) is {size}, but the CSV lists {len(frame)} images: look at __len__.")
        item = _call(lambda: dataset[0], "dataset[0]")
        if not isinstance(item, tuple) or len(item) != 2:
            raise _Wrong(f"dataset[0] is a {type(item).__name__}, not an (image, label) pair: look at __getitem__.")
        image = item[0]
        if not isinstance(image, torch.Tensor):
            raise _Wrong(f"the image is a {type(image).__name__}, not a tensor: apply self.transform "
                         "in __getitem__.")
        if tuple(image.shape) != (3, 224, 224) or not image.is_floating_point():
            raise _Wrong(f"the image is a {image.dtype} tensor of shape {tuple(image.shape)}, not "
                         "float (3, 224, 224): open it as RGB and apply self.transform.")
        expected = [int(label) for label in frame["label"].iloc[:4]]
        raw = [_call(lambda i=i: dataset[i][1], f"dataset[{i}]") for i in range(len(expected))]
        labels = [getattr(value, "item", lambda v=value: v)() for value in raw]  # numpy/tensor ints too
        if not all(isinstance(value, int) for value in labels) or labels != expected:
            raise _Wrong(f"labels {labels} differ from the CSV's {expected}: a label is the class "
                         "index 0-7, the position of the column that holds 1.0.")
        loader = torch.utils.data.DataLoader(dataset, batch_size=2)
        images, _ = _call(lambda: next(iter(loader)), "a DataLoader over the dataset")
        return f"{size} items of (float {tuple(image.shape)}, int), batched by a DataLoader to {tuple(images.shape)}."
    return _report("Dataset", run)


# ------------------------------------------------------------------------------ notebook 03
def check_resnet_head(replace_head: Callable[[nn.Module], nn.Module], frozen: bool = True) -> bool:
    """`replace_head(resnet50)` gives a new 2048 -> 8 head and, if `frozen`, only it trainable."""
    from torchvision.models import resnet50

    def run() -> str:
        model = _call(lambda: replace_head(resnet50()), "your function")
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
