# %% [markdown]
# # 00 — Set-up and a first look at ISIC 2019
#
# {{BADGE}}
#
# *Study time: about 45 minutes, plus the first download in Colab (see the set-up).*
#
# The course follows a 2022 student report from CentraleSupélec (**"the report"** in these notebooks) that trained
# two classifiers on ISIC 2019: a small CNN written from scratch (65.8 % test accuracy) and an ImageNet-pretrained
# ResNet-50 (83.22 %). You rebuild both, and do three things differently: split by lesion, report balanced accuracy
# beside accuracy, and prepare the images once so that the GPU, not JPEG decoding, sets the pace.
#
# Before training anything, look at the data. This notebook sets up the course environment and asks the questions
# that decide how every later result should be read.
#
# **You will learn**
# - what ISIC 2019 holds: 25,331 dermoscopy images of skin lesions in 8 diagnostic classes;
# - how unbalanced the classes are (half the images are one class), and why that matters for accuracy;
# - that many lesions were photographed several times, and how a careless train/test split lets the network
#   "recognise" a test lesion it has already seen in training;
# - how to split by lesion instead, and how much that changes.

# %% [markdown]
# ## Set-up
# - In Colab, first **File > Save a copy in Drive** and work in that copy (a notebook opened from its badge is not
#   saved). Then switch on a GPU (Runtime > Change runtime type > GPU) and run the cell below: it installs
#   `skinlib`, the course's helper package, and checks that the runtime has a GPU. On your own machine it does
#   nothing: install the kit with `make venv` instead.
# - **The data** comes from one call, `skinlib.course.get_data()`, the same in every notebook. In Colab it mounts
#   your Google Drive (Colab asks your consent) and keeps what must outlive a runtime in `MyDrive/skin-lesion-kit`.
#   The first notebook you run downloads ISIC 2019 (about 9 GB, checked file by file), prepares the images once
#   (decoded and resized to 256x256) and saves a **course bundle** to Drive (the two CSVs and the prepared images,
#   about 0.3 GB); every later notebook copies the bundle back instead of downloading again. The first run takes
#   roughly 15-40 minutes, most of it the download (an estimate: every step prints its own time). Results that
#   later notebooks need go to the same Drive folder. An instructor's mirror goes in `MIRROR`.
# - Anywhere else the data is the folder named by the environment variable `SKINLIB_DATA`, laid out like the
#   official download (two CSV files and a folder of JPEGs). **When it is not set, the notebooks use the course's
#   embedded SYNTHETIC dataset**: made-up images in the layout of ISIC 2019, with its class imbalance and several
#   images per lesion, so every cell runs anywhere in minutes (this notebook: 14 s on a 2-core CPU). It is not
#   medical data; the notebooks say so wherever it matters.

# %% [setup]

# %%
import os
import platform
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
import torchvision
from PIL import Image

import skinlib
from skinlib.checks import compare_guess
from skinlib.course import get_data
from skinlib.data import (CLASS_NAMES, CLASSES, METADATA_CSV, ISICDataset, check_dataset,
                          eval_transform, load_index)
from skinlib.device import select_device
from skinlib.plots import plot_class_distribution, plot_image_grid
from skinlib.splits import grouped_split, leakage, random_split

print(f"Python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, skinlib {skinlib.__version__}")
device = select_device()

# %%
MIRROR = None  # an instructor's mirror address (made with `python -m skinlib subset`), else the official one
data = get_data(mirror=os.environ.get("SKINLIB_MIRROR") or MIRROR)
DATA_DIR, SYNTHETIC = data.data_dir, data.synthetic

# %% [markdown]
# ## The eight classes
# Each image has exactly one diagnosis. The network will answer with a number from 0 to 7, the class's position in
# `CLASSES`; this order is the column order of the official ground-truth CSV and is used everywhere in the course.

# %% tags=["nbval-check-output"]
for index, name in enumerate(CLASSES):
    print(f"{index}  {name:<5} {CLASS_NAMES[name]}")

# %% [markdown]
# Three of them are cancers: melanoma (MEL), basal cell carcinoma (BCC) and squamous cell carcinoma (SCC); actinic
# keratosis (AK) is a precancerous lesion. The others are benign. Confusing MEL with NV, the common mole, is the
# mistake that matters most.
#
# ## Check the folder
# `check_dataset` reads both CSVs, checks that every listed image exists and opens each one, and reports every
# problem it finds rather than stopping at the first. Run it once after a download: a broken file found now costs
# a minute, found in epoch 12 of a training run it costs the run.

# %%
report = check_dataset(DATA_DIR)
print(report.format())

# %% [markdown]
# ## The index: one row per image
# `load_index` joins the two CSVs into one table: the image name, its label (0-7), its lesion id from the metadata,
# the *group* that a split must keep together (the lesion id, or the image itself when the lesion is unknown) and
# the path of the JPEG.

# %%
frame = load_index(DATA_DIR)
print(f"{len(frame):,} images")
frame.drop(columns="path").head()  # without the JPEG's full path: too long to read

# %% [markdown]
# ## How many images of each class?

# %%
counts = {name: int((frame["label"] == index).sum()) for index, name in enumerate(CLASSES)}
plot_class_distribution(counts, title=f"Images per class: {DATA_DIR.name}{' (SYNTHETIC)' if SYNTHETIC else ''}")

# %% [markdown]
# On the real ISIC 2019 training set, **NV is 50.8 % of the images and DF only 0.9 %** (239 images). The cell below
# computes the shares from the data folder's CSVs when it holds the whole of ISIC 2019, and otherwise quotes the
# published ones.
#
# What this means for training: a network that answers "NV" for every image is right half the time without looking.
# Accuracy alone cannot tell that network from a useful one, which is why notebook 02 also reports **balanced
# accuracy**, the mean of the per-class recalls (the ISIC challenge's metric), for which "always NV" scores 1/8.

# %%
REAL_SHARES = {"MEL": 17.9, "NV": 50.8, "BCC": 13.1, "AK": 3.4, "BKL": 10.4, "DF": 0.9, "VASC": 1.0, "SCC": 2.5}
ISIC_2019_IMAGES = 25_331

REAL_CSVS = None if SYNTHETIC or not (DATA_DIR / METADATA_CSV).is_file() else DATA_DIR
real = None if REAL_CSVS is None else load_index(REAL_CSVS, check_files=False)
if real is not None and len(real) == ISIC_2019_IMAGES:
    real_shares = (100 * real["label"].value_counts(normalize=True)).rename(dict(enumerate(CLASSES)))
    print(f"computed from the CSVs of {REAL_CSVS.name} ({len(real):,} images):")
    print(real_shares.reindex(CLASSES).round(1).rename_axis(None).to_string())
else:
    print(f"the published shares (%) of the {ISIC_2019_IMAGES:,} ISIC 2019 training images:")
    print(pd.Series(REAL_SHARES).to_string())
    if real is not None:
        print(f"({REAL_CSVS.name} holds {len(real):,} of them, a sample: its own shares are not ISIC 2019's)")

# %% [markdown]
# ## What do the images look like?
# Four images of each class, one row per class (fewer where the class has fewer), resized and centre-cropped to
# 224x224 the way the networks will see them. Look at the variety *within* a class and the resemblance *between*
# MEL, NV and BKL: dermatologists find those hard too. (The synthetic classes are drawn to be easy to tell apart:
# real ones are not.)

# %%
examples = frame.groupby("label", group_keys=False).head(4).sort_values("label").reset_index(drop=True)
dataset = ISICDataset(examples, transform=eval_transform())
images = torch.stack([dataset[i][0] for i in range(len(dataset))])
plot_image_grid(images, examples["label"].tolist(), ncols=4, row_per_label=True,
                title=f"Four images per class: {DATA_DIR.name}{' (SYNTHETIC)' if SYNTHETIC else ''}")

# %% [markdown]
# ## Image sizes
# ISIC 2019 gathers images from three archives, each with its own image size: HAM10000 (600x450), BCN_20000
# (1024x1024) and MSK (up to about 6000x4000). The networks need one size, so every image is resized on the way
# in. Decoding a 6000x4000 JPEG takes far longer than the network's work on it; that is why notebooks 02 and 03
# train from images prepared once (see the set-up). Reading only the file headers, as below, is fast. (From the
# course bundle, every image is already the prepared 256x256 copy.)

# %%
def image_size(path):
    with Image.open(path) as image:  # reads the header only, not the pixels
        return image.size


sample = frame.sample(min(len(frame), 500), random_state=0)["path"]
sizes = Counter(image_size(path) for path in sample)
print(f"sizes (width x height) of {len(sample)} images:")
for (width, height), n in sizes.most_common(8):
    print(f"  {width:>5} x {height:<5} {n:>4}")

# %% [markdown]
# ## Lesions with several images
# Many lesions were photographed more than once: on different visits, at different zooms. In the real metadata
# 23,247 of the 25,331 images carry a lesion id, naming 11,847 lesions; 5,059 of them have more than one image, up
# to 31. The other 2,084 images (from the oldest archive) have no lesion id: the kit counts each as a lesion of its
# own, so a split has 13,931 groups to share out. Below, the counts in this dataset and all the images of its most
# photographed lesion.

# %%
images_per_lesion = frame["lesion_id"].value_counts()
print(f"{len(images_per_lesion):,} lesion ids; {(images_per_lesion > 1).sum():,} of them with more than one image; "
      f"{frame['lesion_id'].isna().sum():,} images without a lesion id")
print(images_per_lesion.value_counts().sort_index().rename("lesions").rename_axis("images per lesion").to_string())

# %%
biggest, figure = images_per_lesion.index[0], None
if images_per_lesion.iloc[0] > 1:
    same_lesion = frame[frame["lesion_id"] == biggest].head(8).reset_index(drop=True)
    lesion_images = ISICDataset(same_lesion, transform=eval_transform())
    figure = plot_image_grid(torch.stack([lesion_images[i][0] for i in range(len(same_lesion))]),
                             same_lesion["label"].tolist(), ncols=8, captions=same_lesion["lesion_id"].tolist(),
                             title=f"All images of lesion {biggest}{' (SYNTHETIC)' if SYNTHETIC else ''}")
else:
    print(f"no lesion of {DATA_DIR.name} has several images, so a split by image cannot leak here: the leak\n"
          "discussed below is a property of the full ISIC 2019 metadata, where 5,059 lesions have several.")
figure

# %% [markdown]
# ## Splitting: by image or by lesion?
#
# We keep 70 % of the images to train on, 15 % to watch during training (validation) and 15 % to test once at the
# end. The obvious way is to shuffle the **images** and cut (`random_split`). But then two photographs of the same
# lesion can land on both sides: the network is tested on a lesion it has already seen, and the test accuracy
# measures memory, not diagnosis.
#
# `grouped_split` shuffles **lesions** instead, so all images of a lesion fall in the same part (both splits keep
# the class proportions the same in each part). `leakage` measures the share of test images whose lesion also has
# an image in the training part.
#
# **Predict before you run.** ISIC 2019 has 25,331 images in 13,931 groups (11,847 lesions, 5,059 of them with
# several images, and 2,084 images without a lesion id). What share of the test images of a random 70/15/15 split
# by image has a photo of the same lesion in the training part? Write your guess (a number, in %) below, then run
# the cells after it: the first measures both splits on this data folder, the second on the real ISIC 2019
# metadata, beside your guess.

# %%
MY_GUESS = None  # your guess, a number in % of the test images

# %%
split_by_image = random_split(frame, seed=0)
split_by_lesion = grouped_split(frame, seed=0)
print(f"test images whose lesion is also in train: by image {100 * leakage(frame, split_by_image):.1f} %, "
      f"by lesion {100 * leakage(frame, split_by_lesion):.1f} %")
pd.crosstab(split_by_lesion, frame["label"].map(dict(enumerate(CLASSES)))).reindex(
    index=["train", "val", "test"], columns=list(CLASSES))

# %% [markdown]
# The table counts the images of each class in each part of the lesion-grouped split: each part keeps about the
# class proportions of the whole. (A class with only a handful of images, as in a small sample, can be missing
# from a part: a 15 % part of 3 images holds at most one.)
#
# The percentages above are this data folder's. The cell below measures the leak on the real ISIC 2019 metadata
# when the data folder holds real data, and puts your guess beside it.

# %%
FULL_LEAK = 58.0  # % leaked by random_split(seed=0) on the full ISIC 2019 metadata (seeds 1 and 2: 57.5, 56.5)
full = real is not None and len(real) == ISIC_2019_IMAGES
if real is not None and (real["lesion_id"].value_counts() > 1).any():
    leak_by_image = leakage(real, random_split(real, seed=0))
    leak_by_lesion = leakage(real, grouped_split(real, seed=0))
    print(f"metadata of {REAL_CSVS.name} ({len(real):,} images): test images whose lesion is also in train:\n"
          f"  split by image  {100 * leak_by_image:5.1f} %\n  split by lesion {100 * leak_by_lesion:5.1f} %")
    if not full:
        print(f"(a sample of {len(real):,} images; the full metadata gives {FULL_LEAK:.0f} %)")
else:
    print(f"{'no real metadata here' if real is None else 'no lesion with several images here'}: on the real "
          f"ISIC 2019 metadata\n{FULL_LEAK:.0f} % of the test images of a random split by image have the same lesion "
          "in the training set;\na split by lesion has none.")
guessed = compare_guess(MY_GUESS, 100 * leak_by_image if full else FULL_LEAK, "the leaked share of a split by image",
                        "25", unit=" %", source="measured" if full else "measured on the full ISIC 2019 metadata")

# %% [markdown]
# **Every later notebook uses the lesion-grouped split**, `grouped_split(frame, seed=0)`, which gives the same split
# every time it is called with the same seed. The original report does not say how it split; its figures most
# likely come from **a random split by image** (what the usual tutorials do), in which case its test accuracies
# are optimistic; notebook 03 comes back to this. A split by lesion is still not a test on new patients: ISIC 2019
# has no patient id (one patient's other lesions can sit on both sides), and the test images come from the same
# archives, cameras and clinics as the training images.
#
# ## Data licence and citations
# The ISIC 2019 images are licensed CC BY-NC 4.0 by the International Skin Imaging Collaboration. Any use must cite:
# - BCN_20000: Combalia M, et al. "BCN20000: Dermoscopic Lesions in the Wild", arXiv:1908.02288, 2019.
# - HAM10000: Tschandl P, Rosendahl C, Kittler H. "The HAM10000 dataset, a large collection of multi-source
#   dermatoscopic images of common pigmented skin lesions", Sci. Data 5, 180161, 2018.
# - MSK: Codella N, et al. "Skin Lesion Analysis Toward Melanoma Detection: A Challenge at the 2017 ISBI",
#   arXiv:1710.05006, 2017.
#
# ## What to try next
# 1. **Another seed.** Run both splits with `seed=1`, `seed=2`. How much does the leakage of the split by image
#    vary? And the class counts per part?
# 2. **A 80/20 split.** Pass `fractions=(0.8, 0.0, 0.2)` (no validation part) to both splits and compare the
#    leakage with the 70/15/15 split. Why does a bigger training part leak more?
# 3. **Look closer.** Show 16 images of MEL and 16 of NV side by side (filter `frame` by label). Could you tell them
#    apart?
#
# Next: **01_simple_cnn** builds the first network.
