"""Self-checks for notebook 02's exercises: the loss at start, the Dataset, the training and test loops.

Each prints one sentence (see `skinlib.checks.core`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from skinlib.checks.core import _a, _call, _report, _Wrong
from skinlib.layout import CLASSES

INITIAL_LOSS = math.log(len(CLASSES))  # equal scores for 8 classes: -ln(1/8)


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


class _Spy(torch.optim.SGD):
    """Keeps a copy of the gradient it is asked to step with, and whether loss.backward() ran since
    the last step (a hook on the first weight counts the gradients computed for it)."""

    def __init__(self, params, lr):
        params = list(params)
        super().__init__(params, lr=lr)
        self.grads: list[torch.Tensor | None] = []
        self.backward_before: list[bool] = []
        self._backwards = 0
        params[0].register_hook(self._count_backward)

    def _count_backward(self, grad):
        self._backwards += 1

    def step(self, closure=None):
        grad = self.param_groups[0]["params"][0].grad
        self.grads.append(None if grad is None else grad.detach().clone())
        self.backward_before.append(self._backwards > 0)
        self._backwards = 0
        return super().step(closure)


def _batch(device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 4, 4, generator=generator)
    return images.to(device), torch.arange(16).remainder(len(CLASSES)).to(device)


def _call_loop(loop: Callable[[], Any], where: str) -> Any:
    """Run the student's loop; a division by zero there is the template's `loss_sum / cm.total`."""
    def run() -> Any:
        try:
            return loop()
        except ZeroDivisionError:
            raise _Wrong("cm.total is 0 (a division by zero): call cm.update(...) for every batch.") from None
    return _call(run, where)


def _returned(result: Any, key: str) -> float | None:
    """result[key] as a float, None if the loop returned no such number."""
    try:
        return float(result[key])
    except (TypeError, KeyError, ValueError, IndexError):
        return None


def check_train_one_epoch(train_one_epoch: Callable, device="cpu") -> bool:
    """train_one_epoch(model, loader, optimizer, criterion): train mode, zeroed gradients, a step
    per batch, the loss of the raw outputs returned, a loss that falls when it overfits one small batch."""
    def run() -> str:
        batch, criterion = _batch(device), nn.CrossEntropyLoss()
        model = _Probe().to(device).eval()
        spy = _Spy(model.parameters(), lr=0.0)  # lr 0: both steps see the same weights
        result = _call_loop(lambda: train_one_epoch(model, [batch, batch], spy, criterion), "train_one_epoch")
        if not model.modes or not model.modes[0][0]:
            raise _Wrong("the model was in evaluation mode while training: call model.train() first.")
        if not spy.grads:
            raise _Wrong("optimizer.step() is never called: each batch needs loss.backward() then "
                         "optimizer.step().")
        if spy.grads[0] is None or not spy.grads[0].any():
            if spy.backward_before[0]:
                raise _Wrong("optimizer.step() finds no gradient although loss.backward() ran: is "
                             "zero_grad() called between backward() and step()? Call it before backward().")
            raise _Wrong("optimizer.step() is called without a gradient: is loss.backward() missing "
                         "before it?")
        if len(spy.grads) != 2:
            times = f"{len(spy.grads)} time{'s' if len(spy.grads) > 1 else ''}"
            raise _Wrong(f"optimizer.step() ran {times} for 2 batches: call it once "
                         "per batch, inside the loop.")
        if torch.allclose(spy.grads[1], 2 * spy.grads[0]):
            raise _Wrong("the second step's gradient is twice the first: gradients pile up; call "
                         "optimizer.zero_grad() before loss.backward() in every step.")
        _check_training_loss(_returned(result, "loss"), model, batch, criterion)
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


def _check_training_loss(returned: float | None, model: nn.Module, batch, criterion) -> None:
    """With lr 0 every batch's loss is the cross-entropy of the untouched model's logits."""
    if returned is None:
        return  # the template returns the loss; a loop that returns none is judged by its steps
    with torch.no_grad():
        outputs = model(batch[0])
    right = criterion(outputs, batch[1]).item()
    if abs(returned - right) <= 1e-4:
        return
    if abs(returned - criterion(outputs.softmax(dim=1), batch[1]).item()) <= 1e-4:
        raise _Wrong(f"the loss {returned:.4f} is the cross-entropy of softmax(outputs), not of the logits "
                     f"({right:.4f}): nn.CrossEntropyLoss applies softmax itself, so pass the raw outputs: "
                     "criterion(outputs, labels).")
    raise _Wrong(f"it returned loss {returned:.4f}, expected {right:.4f}, the mean cross-entropy of the "
                 "batches: compute `loss = criterion(outputs, labels)` and keep the template's lines that "
                 "add it up.")


def check_evaluate(evaluate: Callable, device="cpu") -> bool:
    """evaluate(model, loader, criterion): eval mode, no gradients, the right mean loss and accuracy."""
    def run() -> str:
        images, labels = _batch(device)
        batches = [(images[:10], labels[:10]), (images[10:], labels[10:])]
        model, criterion = _Probe().to(device).train(), nn.CrossEntropyLoss()
        weights = model.fc.weight.detach().clone()
        result = _call_loop(lambda: evaluate(model, batches, criterion), "evaluate")
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
        got = {key: _returned(result, key) for key in ("loss", "accuracy")}
        if None in got.values():
            raise _Wrong(f"it returned {result!r}, not a dict with the loss and the accuracy: keep the "
                         "template's `return {...}` line.")
        if abs(got["loss"] - loss) > 1e-4:
            raise _Wrong(f"it returned loss {got['loss']:.4f}, expected {loss:.4f}: weight each batch's "
                         "mean loss by its size, then divide by all images.")
        if right and abs(got["accuracy"] - 100 * right) <= 1e-4:
            raise _Wrong(f"it returned accuracy {got['accuracy']:.4g}, a percentage: return the fraction "
                         f"{right:.4f} (correct predictions / images), as accuracy(cm) gives it.")
        if abs(got["accuracy"] - right) > 1e-6:
            raise _Wrong(f"it returned accuracy {got['accuracy']:.4f}, expected {right:.4f}: update cm with "
                         "every batch's predictions, outputs.argmax(dim=1), and their labels.")
        return "evaluation mode, no gradients, the right loss and accuracy."
    return _report("evaluate", run)


def reference_dataset(data_dir, transform) -> torch.utils.data.Dataset:
    """skinlib's Dataset of every image in `data_dir`, with the signature of notebook 02's."""
    from skinlib.data import ISICDataset, load_index

    return ISICDataset(load_index(data_dir), transform=transform)


def _is_number(value: Any) -> bool:  # a label: a Python, NumPy or 0-d tensor number
    return isinstance(value, (int, float, np.number)) or (isinstance(value, torch.Tensor) and value.dim() == 0)


def _kind(value: Any) -> str:
    """'a PIL image', 'an int', 'a dict': what a value is, in words."""
    kind = type(value)
    if kind.__module__.startswith("PIL"):
        return "a PIL image"
    return "a NumPy array" if isinstance(value, np.ndarray) else _a(kind.__name__)


def check_dataset_class(dataset_class: Callable, data_dir) -> bool:
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
            raise _Wrong(f"dataset[0] is {_kind(item)}, not an (image, label) pair: look at __getitem__.")
        image = item[0]
        if _is_number(image) and not _is_number(item[1]):
            raise _Wrong("dataset[0] is a (label, image) pair: the order is wrong; __getitem__ must "
                         "return (image, label).")
        if not isinstance(image, torch.Tensor):
            raise _Wrong(f"the image is {_kind(image)}, not a tensor: apply self.transform in __getitem__.")
        if tuple(image.shape) != (3, 224, 224) or not image.is_floating_point():
            raise _Wrong(f"the image is a {image.dtype} tensor of shape {tuple(image.shape)}, not "
                         "float (3, 224, 224): open it as RGB and apply self.transform.")
        expected = [int(label) for label in frame["label"].iloc[:4]]
        raw = [_call(lambda i=i: dataset[i][1], f"dataset[{i}]") for i in range(len(expected))]
        labels = [getattr(value, "item", lambda v=value: v)() for value in raw]  # numpy/tensor ints too
        if any(isinstance(value, float) for value in labels):
            raise _Wrong(f"labels {labels} are floats: labels must be ints, the class index 0-7 "
                         "(nn.CrossEntropyLoss takes integer classes): convert with int(...).")
        if not all(isinstance(value, int) for value in labels) or labels != expected:
            raise _Wrong(f"labels {labels} differ from the CSV's {expected}: a label is the class "
                         "index 0-7, the position of the column that holds 1.0.")
        loader = torch.utils.data.DataLoader(dataset, batch_size=2)
        images, _ = _call(lambda: next(iter(loader)), "a DataLoader over the dataset")
        return f"{size} items of (float {tuple(image.shape)}, int), batched by a DataLoader to {tuple(images.shape)}."
    return _report("Dataset", run)


