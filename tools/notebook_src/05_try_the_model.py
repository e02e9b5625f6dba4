# %% [markdown]
# # 05 — Try the model, and choose where to draw the line for melanoma
#
# {{BADGE}}
#
# Two interactive tools. The first shows what a trained model makes of one image: its three most probable classes
# and, with Grad-CAM, where it found the evidence. Pick a test image, or upload a dermoscopy image of your own.
# The second asks the clinical question: a model gives every lesion a probability of melanoma; **above which
# probability should a lesion be referred to a dermatologist?** Move the threshold and watch missed melanomas trade
# against false alarms.
#
# > **A teaching tool, not a medical device.** Nothing here may be used to diagnose anyone. A model trained on one
# > public dataset, in a course, has not been validated on the patients, cameras and clinics where it would be used.
#
# **You will learn**
# - to read a model's answer for one image: probabilities, and the regions behind them;
# - sensitivity (melanomas found) and specificity (other lesions spared), and why no threshold gives both;
# - that the threshold is a choice made from the cost of each mistake, not something the model decides.
#
# Run notebooks 02 and 03 first: this notebook starts from the models they saved.
#
# Time: under a minute in smoke mode on a CPU; in full mode, a minute or two on Colab's T4 to score the test split
# (an estimate, not a measurement).
# The widgets need a live kernel: run the notebook, then play.

# %% [markdown]
# ## Set-up
# In Colab, first **File > Save a copy in Drive**, and work in that copy: a notebook opened from its badge is not
# saved, so your answers would be lost with the runtime.

# %% [setup]

# %%
import os
import platform

import torch
import torchvision

import skinlib
from skinlib.course import get_data, load_for_evaluation
from skinlib.data import CLASSES
from skinlib.device import select_device
from skinlib.interpret import MEL, melanoma_decision, predict_probs
from skinlib.widgets import threshold_app, try_model_app

print(f"Python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, skinlib {skinlib.__version__}")
device = select_device()

# %% [markdown]
# ## Parameters
# The data comes from `get_data()`, as in every notebook (in Colab: restored from your Google Drive).
# `SKINLIB_SMOKE=1` is smoke mode: a few test batches; the widgets work the same, the numbers mean nothing.

# %%
MIRROR = None  # an instructor's mirror address, else the official one (see notebook 00)
data = get_data(mirror=os.environ.get("SKINLIB_MIRROR") or MIRROR)  # in Colab: restored from Drive
SYNTHETIC = data.synthetic
SMOKE = os.environ.get("SKINLIB_SMOKE") == "1"
PRETRAINED = os.environ.get("SKINLIB_PRETRAINED", "1") != "0"

BATCH_SIZE = 4 if SMOKE else 64
EVAL_BATCHES = 4 if SMOKE else None  # test batches scored for the threshold
print(f"{'SMOKE mode' if SMOKE else 'full mode'}")

# %% [markdown]
# ## The saved models
# Notebook 02's SimpleCNN and notebook 03's ResNet-50, from the results folder where they saved them (on Drive in
# Colab). A file trained on other data or another split is not used; a missing model is named with the notebook
# that makes it: run that notebook first. (In smoke mode a short stand-in is trained instead, and it says so.)

# %%
course = load_for_evaluation(data, device, smoke=SMOKE, pretrained=PRETRAINED, batch_size=BATCH_SIZE)
frame, split, loaders, models = course.frame, course.split, course.loaders, course.models
print(f"models: {', '.join(models)}")

# %% [markdown]
# ## 1. Try the model on an image
# Choose a model and a test image (lesions the models never saw in training), or upload a JPEG or PNG of a
# dermoscopy image (up to 10 MB; Colab passes uploads through the notebook's message channel, which is not made for
# big files: for those, copy the file to the runtime and use `python -m skinlib predict`). On the left the centre
# crop the model sees, then its three most probable classes, then Grad-CAM's map of where the evidence for the top
# class was (notebook 04 explains it). A photo that is not dermoscopy still gets an answer: the model knows only
# its 8 classes and has no way to say "this is not a skin lesion".

# %%
test_rows = frame[split == "test"].groupby("label").head(8)  # up to 8 of each class, rare ones included
test_images = {f"{row.image} (true {CLASSES[row.label]}){' SYNTHETIC' if SYNTHETIC else ''}": row.path
               for row in test_rows.itertuples()}
try_model_app({name: models[name] for name in ("ResNet-50", "SimpleCNN")}, test_images,  # ResNet-50 first
              synthetic=SYNTHETIC, smoke=SMOKE)

# %% [markdown]
# ## 2. The melanoma threshold: the clinical question
# For every test lesion the model gives P(MEL), a probability of melanoma. A triage rule refers a lesion to a
# dermatologist when P(MEL) is at least a threshold. Each threshold gives:
# - **sensitivity**: of the melanomas, the share referred. A missed melanoma can cost a life;
# - **specificity**: of the other lesions, the share not referred. A false alarm costs a visit, worry, perhaps an
#   unneeded excision.
#
# Lower the threshold and more melanomas are found, at the price of more false alarms; raise it and the reverse. The
# red point moves along the ROC curve (the MEL curve of notebook 04). The model does not choose the threshold: it
# is chosen from what each mistake costs, and in screening a high sensitivity is usually required. A small check
# of the arithmetic first, on six made-up lesions:

# %% tags=["nbval-check-output"]
toy = melanoma_decision(targets=[MEL, MEL, MEL, 1, 2, 3], mel_probs=[0.9, 0.6, 0.2, 0.7, 0.1, 0.3], threshold=0.5)
print(f"found {toy['tp']}, missed {toy['fn']}, false alarms {toy['fp']}, spared {toy['tn']}: "
      f"sensitivity {toy['sensitivity']:.3f}, specificity {toy['specificity']:.3f}")

# %% [markdown]
# Now on the test split, with the ResNet-50 (in smoke mode, or on the synthetic set, the numbers mean nothing):

# %%
probs, targets = predict_probs(models["ResNet-50"].model.to(device), loaders["test"], device,
                               max_batches=EVAL_BATCHES)
melanomas = int((targets == MEL).sum())
print(f"{len(targets)} test images, {melanomas} melanoma{'' if melanomas == 1 else 's'}"
      f"{' (SYNTHETIC)' if SYNTHETIC else ''}{' (SMOKE run)' if SMOKE else ''}")
threshold_app(targets, probs[:, MEL], synthetic=SYNTHETIC, smoke=SMOKE)

# %% [markdown]
# Questions to answer with the slider:
# 1. Which threshold finds 95 % of the melanomas? How many false alarms does it cost per melanoma found?
# 2. What does the default rule, "refer if MEL is the most probable class", correspond to? (Hint: it is not a
#    fixed threshold.)
# 3. Here the slider reads the test split, to show the trade-off. In a study the threshold is fixed on the
#    **validation** split first, and only then measured once on the test split. Why would choosing it while
#    watching the test split flatter the result?
#
# You have reached the end of the course notebooks.
