"""Evaluating a trained model beyond one accuracy: what notebooks 04 and 05 compute.

Probabilities on a split (optionally averaged over flips: test-time augmentation), the images
a model is most sure about, the melanoma-against-rest decision at a threshold, a balanced
sampler for the imbalance, and the course's saved models found again (or, in smoke mode,
stand-ins trained).
Metrics come from scikit-learn; this module only gathers what they need.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch.utils.data import DataLoader, WeightedRandomSampler

from skinlib.config import TrainConfig
from skinlib.data import CLASSES, load_index
from skinlib.engine import to_device_batch
from skinlib.export import ExportedModel, MODEL_FILE, ModelFileError, data_fingerprint, load_model
from skinlib.loaders import make_loaders
from skinlib.sampling import SeededItems
from skinlib.splits import grouped_split

MEL = CLASSES.index("MEL")


def flips(images: torch.Tensor) -> list[torch.Tensor]:
    """The batch as it is, flipped left-right, upside down, and both: dermoscopy has no 'up'."""
    return [images, images.flip(-1), images.flip(-2), images.flip(-1, -2)]


def predict_probs(model: torch.nn.Module, loader, device, *, tta: bool = False,
                  max_batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, classes) and true labels (N,) over `loader`, in its order; with
    `tta`, each image's probabilities are the mean over its four flips."""
    model.eval()
    probs, targets = [], []
    with torch.inference_mode():
        for index, (images, labels) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            images, labels = to_device_batch(images, labels, device)
            views = flips(images) if tta else [images]
            probs.append(torch.stack([model(v).float().softmax(1) for v in views]).mean(0).cpu())
            targets.append(labels.cpu())
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def normalised_images(dataset, indices) -> torch.Tensor:
    """Items `indices` of a val/test dataset as one normalised float batch (the cache gives uint8)."""
    images = torch.stack([dataset[int(i)][0] for i in indices])
    return to_device_batch(images, torch.zeros(len(images)), torch.device("cpu"))[0]


def per_class_report(targets, probs, classes=CLASSES) -> pd.DataFrame:
    """Precision, recall, F1 and support of every class (scikit-learn), one row per class; NaN
    where a score is undefined (a class with no test image has no recall), as `metrics.per_class`."""
    p, r, f, s = precision_recall_fscore_support(targets, np.asarray(probs).argmax(1),
                                                 labels=range(len(classes)), zero_division=np.nan)
    return pd.DataFrame({"precision": p, "recall": r, "F1": f, "support": s}, index=list(classes))


def most_confident(probs, targets, n: int, *, wrong: bool) -> np.ndarray:
    """Indices of the n wrong predictions made with the highest probability (`wrong=True`), or of
    the n right ones with the highest probability of the true class."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    predicted = probs.argmax(1)
    chosen = np.flatnonzero((predicted != targets) if wrong else (predicted == targets))
    order = np.argsort(-probs[chosen, predicted[chosen]], kind="stable")
    return chosen[order[:n]]


def melanoma_decision(targets, mel_probs, threshold: float) -> dict[str, float]:
    """Refer a lesion when P(MEL) >= threshold: the MEL-against-rest counts on these images
    (scikit-learn's confusion matrix), sensitivity (melanomas referred) and specificity (others
    not referred); NaN when there is no melanoma, or no other lesion, to measure them on."""
    truth = np.asarray(targets) == MEL
    referred = np.asarray(mel_probs) >= threshold
    tn, fp, fn, tp = confusion_matrix(truth, referred, labels=[False, True]).ravel()
    return {"threshold": threshold, "tp": int(tp), "fn": int(fn), "fp": int(fp), "tn": int(tn),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan")}


def balanced_loader(loader: DataLoader, seed: int = 0) -> DataLoader:
    """The training loader's dataset drawn with replacement so that every class is equally likely
    in every batch (WeightedRandomSampler, weight 1 / class size)."""
    dataset = loader.dataset
    if isinstance(dataset, SeededItems):  # read with plain indices here, not (index, seed) pairs
        dataset = dataset.dataset
    labels = np.asarray(dataset.labels)
    weights = 1.0 / np.bincount(labels)[labels]
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(labels),
                                    generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory)


# The course's saved models: name shown -> (architecture, run folder, the notebook that trains and saves it)
COURSE_MODELS = {"SimpleCNN": ("simplecnn", "02_simple_cnn", "notebook 02"),
                 "ResNet-50": ("resnet50", "03_resnet50", "notebook 03")}


def find_saved(folders, fingerprint: str, *, smoke: bool = False) -> ExportedModel | None:
    """The first FOLDER/model.pt among `folders` trained on the data of `fingerprint`; a file of
    other data (or another split), or in a full run (`smoke` False) one trained in smoke mode, is
    passed over, saying so: never used silently."""
    for folder in map(Path, folders):
        if (folder / MODEL_FILE).is_file():
            saved = load_model(folder / MODEL_FILE)
            if saved.data.get("fingerprint") != fingerprint:
                print(f"{folder / MODEL_FILE} was trained on other data or another split: not used")
            elif saved.smoke and not smoke:
                print(f"{folder / MODEL_FILE} was trained in SMOKE mode (a few batches): not used in a full run")
            else:
                print(f"{folder / MODEL_FILE}: {saved.architecture}, trained on this data and split"
                      f"{' in SMOKE mode' if saved.smoke else ''}")
                return saved
    return None


def course_models(results_dir, frame: pd.DataFrame, split: pd.Series, config, *,
                  smoke: bool) -> dict[str, ExportedModel]:
    """Notebook 02's SimpleCNN and notebook 03's ResNet-50 as those notebooks saved them in
    `results_dir` (on Drive in Colab), trained on these images with this split.

    A missing one is named with the notebook that makes it. In smoke mode a short stand-in is
    then trained (`config` with that architecture) into results_dir/stand-in-ARCHITECTURE, where
    the next notebook finds it; in full mode it is an error: that notebook is the long run.
    """
    from skinlib.train import run

    fingerprint, models = data_fingerprint(frame, split), {}
    for name, (architecture, folder, notebook) in COURSE_MODELS.items():
        stand_in = Path(results_dir) / f"stand-in-{architecture}"
        found = find_saved([Path(results_dir) / folder, *([stand_in] if smoke else [])], fingerprint, smoke=smoke)
        if found is None:
            where = Path(results_dir) / folder / MODEL_FILE
            if not smoke:
                raise ModelFileError(f"no {name} trained in full mode on this data at {where}: run {notebook} "
                                     f"first, not in smoke mode (it trains the model and saves it there)")
            print(f"no {name} of {notebook} for this data at {where} (run {notebook} to make it); "
                  f"SMOKE mode: training a short stand-in into {stand_in}")
            run(config.replace(model=architecture, out=str(stand_in)),
                resume=(stand_in / "checkpoint.pt").is_file())
            found = load_model(stand_in / MODEL_FILE)
        models[name] = found
    return models


@dataclass
class Evaluation:
    """What notebooks 04 and 05 start from: the course's lesion-grouped split of the data, its
    loaders, the config of their data (and of any stand-in) and the saved models by name."""

    frame: pd.DataFrame
    split: pd.Series
    config: TrainConfig
    loaders: dict
    models: dict[str, ExportedModel]


def load_for_evaluation(data, device, *, smoke: bool, pretrained: bool, batch_size: int) -> Evaluation:
    """The split, loaders and saved models (`course_models`) for `data`, a `course.get_data()`:
    its images (the prepared cache when it has one) and its results folder."""
    frame = load_index(data.data_dir)
    split = grouped_split(frame, seed=0)  # the split of every notebook
    config = TrainConfig(data=str(data.data_dir), out=str(Path(data.results_dir) / "stand-in"), model="resnet50",
                         batch_size=batch_size, epochs=1 if smoke else 25, max_batches=1 if smoke else None,
                         pretrained=pretrained, num_workers=0 if smoke else None,
                         cache=None if data.cache_dir is None else str(data.cache_dir))
    loaders = make_loaders(frame, split, config, device=device)
    models = course_models(data.results_dir, frame, split, config, smoke=smoke)
    return Evaluation(frame, split, config, loaders, models)
