# %% [markdown]
# # 04 — Evaluation and interpretation: what the models get wrong, and where they look
#
# {{BADGE}}
#
# Notebooks 02 and 03 ended with a confusion matrix and one or two accuracies. Here we open the trained models up:
# which classes they miss, how sure they are and whether that certainty can be trusted, which images fool them,
# and which part of an image made them decide. Then a cheap way to do better on the rare classes (a balanced
# sampler), and one to steady every prediction (test-time augmentation).
#
# **You will learn**
# - per-class precision, recall and F1, computed by hand from the confusion matrix, and balanced accuracy;
# - one-vs-rest ROC curves and their AUC: how well a class is *ranked*, whatever the threshold;
# - calibration: when the model says 90 %, is it right 90 % of the time? (a reliability diagram);
# - to look at the most confident mistakes, and at what the model recognises best;
# - Grad-CAM, with the two hooks written by you: a heatmap of the image regions that raised a class's score;
# - the class imbalance: plain training against a class-balanced sampler, compared on balanced accuracy and recall;
# - test-time augmentation: averaging the predictions over flipped copies of each image.
#
# **A lab: two exercises.** The scores of every class from the confusion matrix, by hand (1), and Grad-CAM's hooks
# (2), checked against scikit-learn and captum. As before, an *Exercise* cell only defines a function, its check
# cell says what is right or wrong, and until it passes the cells below use skinlib's version.
#
# **Study time:** about 1.5 hours, plus the imbalance comparison's training (below).

# %% [markdown]
# ## Set-up
# - Run notebooks 02 and 03 first: this notebook starts from the models they saved in the results folder
#   (`data.results_dir`: on Drive in Colab, so a fresh runtime finds them). A model file made on other data, or in
#   smoke mode when this is a full run, is not used; a missing one is named with the notebook that makes it.
# - In Colab, first **File > Save a copy in Drive**, and work in that copy: a notebook opened from its badge is not
#   saved, so your answers would be lost with the runtime.
# - **Run time.** A minute or two in smoke mode on a CPU. In full mode the evaluation takes a few minutes on Colab's
#   T4 and the imbalance comparison (two 5-epoch trainings of ResNet-50's head) in the order of 10-20 minutes:
#   estimates, not measurements; every step prints its own time.

# %% [setup]

# %%
import os
import platform
import time

import numpy as np
import pandas as pd
import torch
import torchvision
from sklearn.metrics import confusion_matrix

import skinlib
from skinlib.config import make_optimizer
from skinlib.course import get_data, load_for_evaluation
from skinlib.data import CLASSES
from skinlib.device import select_device
from skinlib.checks import check_grad_cam, check_scores_from_confusion, use_yours_or
from skinlib.checks.evaluation import reference_grad_cam, reference_scores
from skinlib.engine import fit
from skinlib.gradcam import default_layer, heatmap
from skinlib.interpret import (balanced_loader, most_confident, normalised_images,
                               per_class_report, predict_probs)
from skinlib.interpret_plots import caveat, plot_examples, plot_gradcam, plot_reliability, plot_roc_ovr
from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy
from skinlib.models import resnet50
from skinlib.plots import plot_confusion

print(f"Python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, skinlib {skinlib.__version__}")
device = select_device()

# %% [markdown]
# ## Parameters
# The data comes from `get_data()`, as in every notebook: in Colab, the course bundle restored from your Google
# Drive, and the results folder on Drive where notebooks 02 and 03 saved their models. `SKINLIB_SMOKE=1` is smoke
# mode: a few test batches, and one short imbalance run of each kind on a single batch, so every cell runs anywhere
# in a minute or two; its numbers mean nothing.

# %%
MIRROR = None  # an instructor's mirror address, else the official one (see notebook 00)
data = get_data(mirror=os.environ.get("SKINLIB_MIRROR") or MIRROR)  # in Colab: restored from Drive
SYNTHETIC = data.synthetic
SMOKE = os.environ.get("SKINLIB_SMOKE") == "1"
PRETRAINED = os.environ.get("SKINLIB_PRETRAINED", "1") != "0"

BATCH_SIZE = 4 if SMOKE else 64
MAX_BATCHES = 1 if SMOKE else None  # the imbalance runs: batches per epoch, and per evaluation
EVAL_BATCHES = 2 if SMOKE else None  # test batches evaluated
IMBALANCE_EPOCHS = 1 if SMOKE else 5
torch.manual_seed(0)
print(f"{'SMOKE mode: ' + str(EVAL_BATCHES) + ' test batches' if SMOKE else 'full mode'}")

# %% [markdown]
# ## Data and the saved models
# The same lesion-grouped split as every notebook, and the models of notebooks 02 (SimpleCNN) and 03 (ResNet-50).
# Each model file records a fingerprint of the images, labels and split it was trained on. (In smoke mode a short
# stand-in is trained when a model is missing, and the notebook says so.)

# %%
start = time.perf_counter()
course = load_for_evaluation(data, device, smoke=SMOKE, pretrained=PRETRAINED, batch_size=BATCH_SIZE)
loaders, models, config = course.loaders, course.models, course.config
resnet = models["ResNet-50"]
print(f"models ready in {time.perf_counter() - start:.0f} s: {', '.join(models)}")

# %% [markdown]
# ## Probabilities on the test split
# Everything below starts from one table: for every test image, the probability a model gives each class. First
# both models side by side, on accuracy and balanced accuracy (`skinlib.metrics`, as in notebooks 02 and 03); then
# ResNet-50, the stronger one after a full run, looked at closely.

# %%
def scores(probs, targets):
    cm = ConfusionMatrix(len(CLASSES)).update(probs, targets)  # the predicted class is the argmax
    return {"accuracy": accuracy(cm), "balanced accuracy": balanced_accuracy(cm)}


start = time.perf_counter()
tables = {name: predict_probs(saved.model.to(device), loaders["test"], device, max_batches=EVAL_BATCHES)
          for name, saved in models.items()}
LOOK_AT = "ResNet-50"  # the model looked at closely below
TAG = caveat(SYNTHETIC, SMOKE, PRETRAINED)  # on every figure: " (SYNTHETIC, SMOKE run)", or nothing for a real run
probs, targets = tables[LOOK_AT]
predicted = probs.argmax(1)
print(f"{len(targets)} test images, {len(models)} models, in {time.perf_counter() - start:.1f} s"
      f"{' (SYNTHETIC)' if SYNTHETIC else ''}{' (SMOKE run: the numbers mean nothing)' if SMOKE else ''}; "
      f"chance balanced accuracy {1 / len(CLASSES):.3f}")
pd.DataFrame([scores(p, t) for p, t in tables.values()], index=list(tables)).round(3)

# %% [markdown]
# ## Per class: precision, recall, F1, support
# - **recall** (sensitivity): of the lesions of this class, the share the model finds;
# - **precision**: of the lesions it calls this class, the share that are of it;
# - **F1**: their harmonic mean; **support**: how many test images the class has. A class with a handful of test
#   images has a recall that can jump by 20 points from one image to the next.
#
# Balanced accuracy is the mean of the recall column over the classes that have test images (a class with none has
# no recall): every class counts the same, however rare. Accuracy weighs them by support, so NV (half of ISIC 2019)
# dominates it.
#
# All of them come from the confusion matrix `cm`, where `cm[i, j]` counts the images of true class `i` predicted
# as class `j`: a row is a true class, a column a predicted one.
#
# **Exercise 1.** Write `scores_from_confusion(cm)` with numpy: return a dict with `"precision"`, `"recall"` and
# `"f1"` (arrays of 8, one per class) and `"balanced_accuracy"` (a number). A score that divides by zero (a class
# never predicted has no precision, one without images no recall) may be NaN; balanced accuracy averages the
# recalls that exist (`np.nanmean`). The check compares your numbers with scikit-learn's.

# %%
def scores_from_confusion(cm):
    # TODO: precision, recall, F1 per class and balanced accuracy, from cm[true class, predicted class]
    ### BEGIN SOLUTION
    cm = np.asarray(cm, dtype=float)
    hits = np.diag(cm)
    precision = hits / cm.sum(axis=0)  # of the images predicted as the class: a column
    recall = hits / cm.sum(axis=1)  # of the images of the class: a row
    f1 = 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "balanced_accuracy": np.nanmean(recall)}
    ### END SOLUTION

# %%
passed = check_scores_from_confusion(scores_from_confusion)
scores_from_confusion = use_yours_or(reference_scores, scores_from_confusion, passed, "per-class scores")

# %% [markdown]
# Your function on ResNet-50's test predictions (a dash: undefined, a class with no image or never predicted):

# %%
cm = confusion_matrix(targets, predicted, labels=range(len(CLASSES)))
with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 where a class has no image: NaN, shown as a dash
    mine = scores_from_confusion(cm)
print(f"balanced accuracy {float(mine['balanced_accuracy']):.3f}{TAG}")
pd.DataFrame({key: mine[key] for key in ("precision", "recall", "f1")} | {"support": cm.sum(axis=1)},
             index=CLASSES).style.format(precision=3, na_rep="–")

# %% [markdown]
# ## The confusion matrix, row-normalised
# Each row is a true class and sums to 1, so the diagonal is the recall, and a rare class's row is as visible as
# NV's. Read MEL's row: which classes are melanomas mistaken for?

# %%
plot_confusion(cm, normalize=True, title=f"{LOOK_AT}, test split{TAG}")

# %% [markdown]
# ## ROC curves, one class against the rest
# For one class, sweep a threshold over its probability: every threshold refers some images to that class, finding
# a share of its lesions (true positive rate) at the price of some false alarms (false positive rate). The ROC curve
# draws all thresholds at once; its area (AUC) is the chance that a random lesion of the class gets a higher
# probability than a random other lesion: 0.5 is guessing, 1 is a perfect ranking. AUC does not depend on the
# threshold: notebook 05 lets you choose one for melanoma.

# %%
plot_roc_ovr(targets, probs, title=f"{LOOK_AT}: ROC, each class against the rest{TAG}")

# %% [markdown]
# ## Calibration: can the probabilities be taken at their word?
# Group the images by the model's confidence (its top probability) and count how often it was right in each group.
# A calibrated model sits on the diagonal: of the images it calls with 80 % confidence, 80 % are right. Deep networks
# trained with cross-entropy are often *over-confident* (below the diagonal). The histogram shows how many images
# fall in each group: a point made of three images says little.

# %%
plot_reliability(targets, probs, title=f"{LOOK_AT}: is the confidence honest?{TAG}")

# %% [markdown]
# ## The most confident mistakes, and the best-recognised images
# Mistakes the model made while sure of itself are worth a look: a mislabelled image, a lesion that really looks
# like another class, or an artefact (a ruler, hair, ink marks, a dark vignette) the model has latched onto.

# %%
test_set = loaders["test"].dataset
for wrong, title in [(True, "most confident mistakes"), (False, "recognised with the highest probability")]:
    chosen = most_confident(probs, targets, 12, wrong=wrong)
    if len(chosen):
        display(plot_examples(normalised_images(test_set, chosen), targets[chosen], probs[chosen],
                             title=f"{LOOK_AT}: {title}{TAG}"))
    else:
        print(f"{title}: none among these test images")

# %% [markdown]
# ## Where does the model look? Grad-CAM
# Grad-CAM (Selvaraju et al., 2017) asks the last convolutional block, `layer4` (2048 feature maps of 7x7 for a
# 224x224 image), which of its maps pushed the score of the predicted class up:
#
# ```python
# weights = gradients.mean(dim=(2, 3), keepdim=True)   # d score / d map, averaged over the 7x7 positions
# cam = relu((weights * activations).sum(dim=1))       # weighted sum of the maps; keep what raised the score
# ```
#
# then the 7x7 map is stretched to the image and scaled to [0, 1] (red: strongest evidence). The activations and
# gradients live inside the network, so they are caught with **hooks**: functions PyTorch calls as data passes a
# layer. `layer.register_forward_hook(f)` calls `f(module, inputs, output)` after the layer's forward pass;
# `layer.register_full_backward_hook(g)` calls `g(module, grad_inputs, grad_outputs)` during `backward()`, where
# `grad_outputs[0]` is the gradient of the score with respect to the layer's output. Each returns a handle:
# `handle.remove()` takes the hook off again (forget it, and every later pass still runs your hook).
# **captum**'s `LayerGradCam` is the maintained library version (with integrated gradients, occlusion and more).
#
# The layer's output, for one image:

# %% tags=["nbval-check-output"]
backbone = torch.nn.Sequential(*list(resnet.model.cpu().children())[:-2])  # everything up to layer4
with torch.no_grad():
    print(f"layer4 activations for one 224x224 image: {tuple(backbone(torch.zeros(1, 3, 224, 224)).shape)}")

# %% [markdown]
# **Exercise 2.** Write `my_grad_cam(model, images, target, layer)`: `images` a normalised batch (N, 3, H, W),
# `target` the class of each image (a tensor of N), `layer` the layer to look at. Register the two hooks, run the
# model, backpropagate the sum of each image's `target` score (`logits.gather(1, target[:, None]).sum()`; the images
# do not mix, so one backward pass serves them all), remove the hooks, and return the maps (N, h, w). The check
# compares them with captum's `LayerGradCam` on a small network.

# %%
def my_grad_cam(model, images, target, layer):
    # TODO: hooks keep the layer's output and its gradient; backpropagate the target scores; remove the hooks
    ### BEGIN SOLUTION
    saved = {}
    handles = [layer.register_forward_hook(lambda module, inputs, output: saved.update(activations=output)),
               layer.register_full_backward_hook(
                   lambda module, grad_inputs, grad_outputs: saved.update(gradients=grad_outputs[0]))]
    logits = model(images)
    logits.gather(1, target[:, None]).sum().backward()  # the hooks fill `saved`
    for handle in handles:
        handle.remove()  # else every later pass through the layer runs them again
    weights = saved["gradients"].mean(dim=(2, 3), keepdim=True)  # one weight per feature map
    return torch.relu((weights * saved["activations"]).sum(dim=1)).detach()
    ### END SOLUTION

# %%
passed = check_grad_cam(my_grad_cam)
my_grad_cam = use_yours_or(reference_grad_cam, my_grad_cam, passed, "Grad-CAM (skinlib.gradcam)")

# %% [markdown]
# Your Grad-CAM on the test images: the correct predictions first (green titles), then the mistakes (red). A model
# that looks at the lesion is reassuring; one that looks at a ruler or the image's corners has learned a shortcut.
# Grad-CAM is coarse (7x7) and shows where the evidence was, not why: treat it as a hint, not a proof.

# %%
N_CAM = 2 if SMOKE else 4  # of each kind
show = [*most_confident(probs, targets, N_CAM, wrong=False), *most_confident(probs, targets, N_CAM, wrong=True)]
images = normalised_images(test_set, show)
network = models[LOOK_AT].model.cpu().eval()
cams = my_grad_cam(network, images, torch.as_tensor(predicted[show]), default_layer(network)).detach()
titles = [f"true {CLASSES[targets[i]]}\npred {CLASSES[predicted[i]]} {probs[i, predicted[i]]:.2f}" for i in show]
colours = ["tab:green" if targets[i] == predicted[i] else "tab:red" for i in show]
plot_gradcam(images, heatmap(cams, images.shape[-2:]), titles, colours, title=f"{LOOK_AT}: Grad-CAM{TAG}")

# %% [markdown]
# ## The imbalance: a class-balanced sampler
# In ISIC 2019, NV is half of the images, DF and VASC under 1 % each. With plain sampling, every batch is mostly NV,
# and
# the cheapest way to lower the loss is to answer NV. A **balanced sampler** draws training images with
# probability 1 / (size of their class), so every class is equally frequent in the batches (rare images are seen
# many times per epoch, with different augmentations). The same effect can be had with a class-weighted
# cross-entropy; the sampler needs no change to the loss or the loop.
#
# We train ResNet-50's head twice from the same start (the backbone frozen, as in notebook 03's feature
# extraction, but at a constant learning rate, without 03's one-cycle schedule, to keep the comparison plain),
# once with each sampler, and compare balanced accuracy and per-class recall on the test split.
# (In smoke mode each run is a single step on one batch, evaluated on one batch: enough to show that the cell
# works, not what it finds.)

# %%
def train_head(train_loader):
    torch.manual_seed(0)
    model = resnet50(num_classes=len(CLASSES), pretrained=PRETRAINED)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("fc.")
    optimizer = make_optimizer(model.to(device), config)
    fit(model, {"train": train_loader, "val": loaders["val"]}, optimizer, device, epochs=IMBALANCE_EPOCHS,
        config=config.replace(max_batches=MAX_BATCHES, progress=not SMOKE))
    return predict_probs(model, loaders["test"], device, max_batches=MAX_BATCHES)


results = {}
for sampler, train_loader in [("plain", loaders["train"]), ("balanced", balanced_loader(loaders["train"]))]:
    start = time.perf_counter()
    p, t = train_head(train_loader)
    results[sampler] = per_class_report(t, p)["recall"]
    score = scores(p, t)
    print(f"{sampler:>8} sampler: balanced accuracy {score['balanced accuracy']:.3f}, "
          f"accuracy {score['accuracy']:.3f}  ({time.perf_counter() - start:.0f} s){TAG}")
pd.DataFrame(results).rename_axis("recall per class").style.format(precision=3, na_rep="–")

# %% [markdown]
# Expect the balanced sampler to raise the recall of the rare classes and balanced accuracy, and to lower NV's
# recall and plain accuracy: it trades some of the easy majority for the minority. Which trade is right depends on
# what a mistake costs, the question of notebook 05. (In smoke mode, or on the synthetic set, the numbers say
# nothing about real lesions.)
#
# ## Test-time augmentation
# A lesion has no "up": a flipped image is as valid as the original. Averaging the probabilities over the image and
# its three flips smooths out some of the model's whims, for four times the computation at test time.

# %%
start = time.perf_counter()
tta_probs, tta_targets = predict_probs(models[LOOK_AT].model.to(device), loaders["test"], device, tta=True,
                                       max_batches=EVAL_BATCHES)
print(f"test-time augmentation: {time.perf_counter() - start:.1f} s for {len(tta_targets)} images (4 views each)"
      f"{TAG}")
pd.DataFrame([scores(probs, targets), scores(tta_probs, tta_targets)], index=["one view", "mean of 4 flips"]).round(3)

# %% [markdown]
# Whether it gains anything here, the table says; on a small test split a difference can be within the noise of a few
# images.
#
# ## What to try next
# 1. **SimpleCNN under the same lens.** Set `LOOK_AT = "SimpleCNN"` (notebook 02's model) and rerun the cells
#    from there (Grad-CAM then looks at its last convolution, `conv2`): where does it look?
# 2. **Class-weighted loss.** Write a training loop (notebook 02's) with `nn.CrossEntropyLoss(weight=...)`, weights
#    1 / class frequency, and compare with the balanced sampler.
# 3. **Calibrate.** Divide the logits by a temperature T fitted on the validation split (temperature scaling): does
#    the reliability diagram move onto the diagonal? Does accuracy change?
# 4. **More views.** `predict_probs(..., tta=True)` averages the image and its three flips. Write your own loop
#    over the test batches that also averages `torch.rot90(images, 1, dims=(2, 3))` and its flips (8 views):
#    does test-time augmentation help more?
#
# Next: notebook 05, try the model yourself, and choose where to draw the line for melanoma.
