# %% [markdown]
# # 05 — Where to draw the line for melanoma, what the model must not be used for, and trying it
#
# {{BADGE}}
#
# A model gives every lesion a probability of melanoma; **above which probability should a lesion be referred to a
# dermatologist?** You will choose a threshold for a target sensitivity, see what a positive answer means where
# melanoma is rare, and measure, with the data's own metadata, for whom the model's numbers hold and for whom they
# are unknown. Then you can try the model on one image: a test image, or an upload of your own.
#
# > **A teaching tool, not a medical device.** Nothing here may be used to diagnose anyone. A model trained on one
# > public dataset, in a course, has not been validated on the patients, cameras and clinics where it would be used.
#
# **You will learn**
# - sensitivity (melanomas found) and specificity (other lesions spared), and why no threshold gives both;
# - that the threshold is a choice made from the cost of each mistake, fixed on the validation split;
# - the positive predictive value, and why it depends on the prevalence where the model is used;
# - to measure a model per subgroup (site, sex, age), with the uncertainty of small groups, and what the data
#   cannot tell (skin tone);
# - to read a model's answer for one image: probabilities, and the regions behind them.
#
# **A lab: two exercises**, the threshold for a target sensitivity (1) and the positive predictive value (2), each
# followed by its check, as in the notebooks before.
#
# **Study time:** about 1.5 hours.

# %% [markdown]
# ## Set-up
# - Run notebooks 02 and 03 first: this notebook starts from the models they saved (on Drive in Colab). A file
#   trained on other data or another split, or in smoke mode when this is a full run, is not used; a missing model
#   is named with the notebook that makes it.
# - In Colab, first **File > Save a copy in Drive**, and work in that copy: a notebook opened from its badge is not
#   saved, so your answers would be lost with the runtime.
# - **Run time.** Under a minute in smoke mode on a CPU; in full mode, a minute or two on Colab's T4 to score the
#   validation and test splits (an estimate, not a measurement). The widgets need a live kernel: run the notebook,
#   then play.

# %% [setup]

# %%
import math
import os
import platform

import numpy as np
import torch
import torchvision
from PIL import Image

import skinlib
from skinlib.checks import check_ppv, check_threshold_for_sensitivity, use_yours_or
from skinlib.checks.decision import as_share, reference_threshold
from skinlib.course import get_data, load_for_evaluation
from skinlib.data import CLASSES
from skinlib.device import select_device
from skinlib.interpret import MEL, melanoma_decision, predict_probs
from skinlib.interpret_plots import caveat
from skinlib.subgroups import SUBGROUPS, archive, class_mix, ppv_at_prevalence, subgroup_recall, with_metadata
from skinlib.widgets import explain, explanation_figure, threshold_app, try_model_app

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
EVAL_BATCHES = 4 if SMOKE else None  # validation and test batches scored
TAG = caveat(SYNTHETIC, SMOKE, PRETRAINED)  # on every figure and table: what the numbers come from
print(f"{'SMOKE mode' if SMOKE else 'full mode'}{TAG}")

# %% [markdown]
# ## The saved models
# Notebook 02's SimpleCNN and notebook 03's ResNet-50, from the results folder where they saved them. (In smoke mode
# a short stand-in is trained when one is missing, and it says so.)

# %%
course = load_for_evaluation(data, device, smoke=SMOKE, pretrained=PRETRAINED, batch_size=BATCH_SIZE)
frame, split, loaders, models = course.frame, course.split, course.loaders, course.models
print(f"models: {', '.join(models)}")

# %% [markdown]
# ## 1. The melanoma threshold: the clinical question
# For every lesion the model gives P(MEL), a probability of melanoma. A triage rule refers a lesion to a
# dermatologist when P(MEL) is at least a threshold. Each threshold gives:
# - **sensitivity**: of the melanomas, the share referred. A missed melanoma can cost a life;
# - **specificity**: of the other lesions, the share not referred. A false alarm costs a visit, worry, perhaps an
#   unneeded excision.
#
# Lower the threshold and more melanomas are found, at the price of more false alarms; raise it and the reverse.
# The model does not choose the threshold: it is chosen from what each mistake costs, and in screening a high
# sensitivity is usually required. A small check of the arithmetic first, on six made-up lesions:

# %% tags=["nbval-check-output"]
toy = melanoma_decision(targets=[MEL, MEL, MEL, 1, 2, 3], mel_probs=[0.9, 0.6, 0.2, 0.7, 0.1, 0.3], threshold=0.5)
print(f"found {toy['tp']}, missed {toy['fn']}, false alarms {toy['fp']}, spared {toy['tn']}: "
      f"sensitivity {toy['sensitivity']:.3f}, specificity {toy['specificity']:.3f}")

# %% [markdown]
# The ResNet-50's probabilities on the validation and the test split (in smoke mode, or on the synthetic set, the
# numbers mean nothing):

# %%
resnet = models["ResNet-50"].model.to(device)
val_probs, val_targets = predict_probs(resnet, loaders["val"], device, max_batches=EVAL_BATCHES)
probs, targets = predict_probs(resnet, loaders["test"], device, max_batches=EVAL_BATCHES)
for name, t in (("validation", val_targets), ("test", targets)):
    n = int((t == MEL).sum())
    print(f"{name}: {len(t)} images, {n} melanoma{'' if n == 1 else 's'}{TAG}")

# %% [markdown]
# **Exercise 1.** Write `threshold_for_sensitivity(targets, mel_probs, sensitivity)`: the **highest** threshold
# for which the rule "refer when P(MEL) >= threshold" finds at least the share `sensitivity` of the melanomas
# (`targets == MEL`). The highest, because every lower one refers more lesions without melanoma. Hint: look only at
# the melanomas' probabilities, sorted from the highest; how many of them must be referred?

# %%
def threshold_for_sensitivity(targets, mel_probs, sensitivity):
    # TODO: the highest t such that "P(MEL) >= t" refers at least `sensitivity` of the melanomas
    ### BEGIN SOLUTION
    melanoma_probs = np.sort(np.asarray(mel_probs)[np.asarray(targets) == MEL])[::-1]  # highest first
    needed = max(1, math.ceil(sensitivity * len(melanoma_probs) - 1e-9))  # melanomas to refer, rounded up
    return float(melanoma_probs[needed - 1])
    ### END SOLUTION

# %%
passed = check_threshold_for_sensitivity(threshold_for_sensitivity)
threshold_for_sensitivity = use_yours_or(reference_threshold, threshold_for_sensitivity, passed,
                                         "threshold for a sensitivity")

# %% [markdown]
# The threshold is chosen on the **validation** split and then measured once on the test split: choosing it while
# watching the test split would fit it to those very images and flatter the result.

# %%
TARGET_SENSITIVITY = 0.95  # your choice: the share of melanomas the triage must find (0.95, not 95)
TARGET_SENSITIVITY = as_share(TARGET_SENSITIVITY, "TARGET_SENSITIVITY", 0.95)
if (val_targets == MEL).any():
    THRESHOLD = threshold_for_sensitivity(val_targets, val_probs[:, MEL], TARGET_SENSITIVITY)
    on_test = melanoma_decision(targets, probs[:, MEL], THRESHOLD)
    print(f"threshold {THRESHOLD:.3f} (validation, for {TARGET_SENSITIVITY:.0%}); on the test split: sensitivity "
          f"{on_test['sensitivity']:.3f}, specificity {on_test['specificity']:.3f}, "
          f"{on_test['fp']} false alarm{'' if on_test['fp'] == 1 else 's'} for {on_test['tp']} "
          f"melanoma{'' if on_test['tp'] == 1 else 's'} found{TAG}")
else:
    THRESHOLD = 0.5
    print(f"no melanoma among these validation images: threshold left at {THRESHOLD}{TAG}")

# %% [markdown]
# Move the threshold yourself on the test split: the red point moves along the ROC curve (the MEL curve of
# notebook 04).

# %%
threshold_app(targets, probs[:, MEL], value=round(THRESHOLD, 2), synthetic=SYNTHETIC, smoke=SMOKE,
              pretrained=PRETRAINED)

# %% [markdown]
# Questions to answer with the slider:
# 1. How many false alarms does your threshold cost per melanoma found? And a threshold for 80 %?
# 2. What does the default rule, "refer if MEL is the most probable class", correspond to? (Hint: it is not a
#    fixed threshold.)
# 3. Does the test sensitivity reach the target you set on the validation split? With how many melanomas would you
#    trust the difference?
#
# ## 2. What a positive means: prevalence
# Sensitivity and specificity describe the model. The question a referred patient asks is another one: *given a
# positive, what is the chance that it is a melanoma?* That is the **positive predictive value** (PPV), and it
# depends on how common melanoma is where the model is used. In ISIC 2019 about 18 % of the images are melanomas
# (the archives collected suspicious lesions); among the lesions seen when screening a general population, far
# fewer are.
#
# **Exercise 2.** Write `ppv(sensitivity, specificity, prevalence)` with Bayes' rule: of all the lesions, a share
# `prevalence` are melanomas, and the model refers `sensitivity` of those; of the others it refers the share
# `1 - specificity`. Return the share of the referred lesions that are melanomas.

# %%
def ppv(sensitivity, specificity, prevalence):
    # TODO: P(melanoma | referred), from sensitivity, specificity and prevalence
    ### BEGIN SOLUTION
    found = sensitivity * prevalence  # referred melanomas, as a share of all lesions
    false_alarms = (1 - specificity) * (1 - prevalence)  # referred lesions without melanoma
    return found / (found + false_alarms)
    ### END SOLUTION

# %%
passed = check_ppv(ppv)
ppv = use_yours_or(ppv_at_prevalence, ppv, passed, "PPV")

# %% [markdown]
# At the threshold chosen above, the PPV at the test split's own share of melanomas and at a prevalence you
# choose. 1 in 100 is only an example, not a measured figure: the share of melanomas among the lesions a doctor
# examines depends on the country, the clinic and who is referred to it.

# %%
PREVALENCE = 0.01  # your choice: the share of melanomas where the model would be used (0.01, not 1)
PREVALENCE = as_share(PREVALENCE, "PREVALENCE", 0.01, whole=False)
at = melanoma_decision(targets, probs[:, MEL], THRESHOLD)
if math.isnan(at["sensitivity"]) or math.isnan(at["specificity"]):
    print(f"these test images lack melanomas or other lesions: no PPV to compute{TAG}")
else:
    share = float((targets == MEL).mean())
    for name, prevalence in ((f"the test split's share ({share:.1%})", share), (f"{PREVALENCE:.1%}", PREVALENCE)):
        value = ppv(at["sensitivity"], at["specificity"], prevalence)
        print(f"PPV at {name}: {value:.3f}, about 1 referral in {1 / value:.0f} is a melanoma{TAG}"
              if value > 0 else f"PPV at {name}: 0 (no melanoma referred){TAG}")
    others = at["tn"] + at["fp"]
    if at["fp"] == 0 and at["sensitivity"] > 0:  # specificity 1.000 from a few lesions is not a measured 100 %
        bound = max(0.0, 1 - 3 / others)  # the rule of three: 0 false alarms in n fits a rate up to 3/n (95 %)
        print(f"no false alarm among the {others} test lesions without melanoma: a false-alarm rate up to "
              f"3/{others} fits them too (the rule of three, 95 %), and with it the PPV at {PREVALENCE:.1%} "
              f"would be {ppv(at['sensitivity'], bound, PREVALENCE):.3f}{TAG}")

# %% [markdown]
# Same model, same threshold: where melanoma is rare, most referrals are false alarms. A PPV measured on a test set
# rich in melanomas says little about a screening population.
#
# ## 3. What the model must not be used for, measured
# The test split's numbers are an average over who happens to be in ISIC 2019. Four questions the average hides.
#
# ### For whom? Recall of melanoma per subgroup
# ISIC 2019's metadata gives an approximate age, the sex and the anatomical site of each lesion. Below, for the
# test images scored above, the share of melanomas the model found (predicted MEL as its top class) in each group,
# with the group's size and a 95 % **Wilson interval**: a group with 4 melanomas has an interval tens of points
# wide, so its recall alone proves nothing. Where the intervals barely overlap, a real difference is likely.

# %%
test_frame = with_metadata(frame[split == "test"].reset_index(drop=True).iloc[:len(targets)], data.data_dir)
assert (test_frame["label"].to_numpy() == targets).all()  # the test loader keeps the split's order
predicted = probs.argmax(1)
print(f"{len(test_frame)} test images{TAG}")
for column in SUBGROUPS:
    table = subgroup_recall(test_frame[column], targets, predicted).rename_axis(column)
    display(table.style.format({"recall": "{:.2f}", "95% low": "{:.2f}", "95% high": "{:.2f}"}, na_rep="–")
            .set_caption(f"Recall of MEL by {column}, test split{TAG}"))

# %% [markdown]
# ### Which archive? A shortcut a network can learn
# ISIC 2019 joins archives of different clinics (HAM10000 from Vienna and Queensland, BCN_20000 from Barcelona,
# MSK from New York), each with its own cameras, image sizes and lighting, and each with its **own mix of
# classes**. A network can learn "this looks like a Barcelona image" as evidence for BCC, a shortcut that fails in
# a clinic whose images look different. The metadata does not name the archive, but the lesion ids do (`HAM_...`,
# `BCN_...`, `MSK4_...`; the oldest images have none). The class mix per archive, over the whole data folder:

# %%
mix = class_mix(frame, archive(frame))
print(f"{len(frame)} images{' (SYNTHETIC: made-up ids)' if SYNTHETIC else ''}")
mix.style.format({name: "{:.2f}" for name in mix.columns if name != "images"}).set_caption(
    f"Class mix per archive (read from the lesion ids){' SYNTHETIC' if SYNTHETIC else ''}")

# %% [markdown]
# ### Which skin? What the data cannot tell
# ISIC 2019 records no skin tone (no Fitzpatrick type), so the recall per skin tone cannot be measured here. What
# is known: its archives come from clinics in Austria, Australia, Spain and the United States, and dermoscopy
# archives are mostly of light skin. Groh et al. (2021, the Fitzpatrick 17k dataset, clinical photos labelled by
# skin type) found public dermatology images dominated by lighter skin, and models most accurate on skin types
# like those they were trained on. Daneshjou et al. (2022, *Science Advances*, the Diverse Dermatology Images
# set, DDI) found state-of-the-art dermatology models markedly worse on dark skin (Fitzpatrick V-VI), until
# fine-tuned on diverse images. A model from this course has never been tested on dark skin: its numbers say
# nothing about it.
#
# ### Not a dermoscopy image? It answers anyway
# The model knows only its 8 classes and has no way to say "this is not a skin lesion". Below, a made-up image of
# coloured stripes (SYNTHETIC, not a photograph of skin) and what the model says about it:

# %%
stripes = np.zeros((256, 256, 3), dtype=np.uint8)
stripes[:, :, 0] = np.arange(256)[None, :]  # red rises left to right
stripes[::32] = 255  # white bands
stripes[:, :, 2] = (np.arange(256)[:, None] // 64 % 2) * 200  # blue blocks
not_skin = Image.fromarray(stripes)
answer = explain(models["ResNet-50"], not_skin)
print(f"top class for an image of stripes: {CLASSES[int(answer.probs.argmax())]} "
      f"with probability {answer.probs.max():.2f}{TAG}")
explanation_figure(answer, models["ResNet-50"].classes, "SYNTHETIC: stripes, not a skin image",
                   f"ResNet-50 on a non-skin image{TAG}")

# %% [markdown]
# An answer for an image that is not even skin. Whatever the image, the 8 probabilities add up to 1: the model
# must name one of its classes, and after a full run the top probability of such an image can be high. The
# probabilities describe the model, not the image. A photograph taken with a phone (not a dermatoscope) is
# outside what the model learned from too.

# %% [markdown]
# ## 4. Try the model on an image
# **Before you try your own skin.** This kit is a teaching tool, **not a medical device**: nothing here may be used
# to diagnose anyone. You have just measured why: the model was tested on lesions from a few archives, mostly of
# light skin, with melanoma far more common than where you live; a phone photo is not a dermoscopy image, and a
# non-skin image still gets a confident answer. An answer about your own skin means nothing medically: see a
# doctor about any lesion that worries you.
#
# Choose a model and a test image (lesions the models never saw in training), or upload a JPEG or PNG of a
# dermoscopy image (up to 10 MB; Colab passes uploads through the notebook's message channel, which is not made for
# big files: for those, copy the file to the runtime and use `python -m skinlib predict`). On the left the centre
# crop the model sees, then its three most probable classes, then Grad-CAM's map of where the evidence for the top
# class was (notebook 04).

# %%
test_rows = frame[split == "test"].groupby("label").head(8)  # up to 8 of each class, rare ones included
test_images = {f"{row.image} (true {CLASSES[row.label]}){' SYNTHETIC' if SYNTHETIC else ''}": row.path
               for row in test_rows.itertuples()}
try_model_app({name: models[name] for name in ("ResNet-50", "SimpleCNN")}, test_images,  # ResNet-50 first
              synthetic=SYNTHETIC, smoke=SMOKE, pretrained=PRETRAINED)

# %% [markdown]
# You have reached the end of the course notebooks.
