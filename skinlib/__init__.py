"""skinlib: the helper package of the skin-lesion classification course kit.

The notebooks write out what the lesson is (the network, the training loop) and call
skinlib for everything else: data, splits, GPU-aware loops, metrics and plots.
"""
__version__ = "0.3.0"
