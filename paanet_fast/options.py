"""The command line's choices and defaults, in a module that imports nothing: `paanet-fast --help`
and argument errors come before torch is imported (which takes seconds). The modules that use
these names import them from here.
"""

KNOWN_BACKENDS = ("reference", "portable", "cpp", "cuda", "triton")
DATASET_NAMES = ("synthetic", "dsb2018", "isic2018", "kvasir-instrument", "folder")
AMP_MODES = ("none", "fp16", "bf16")

# The paper's settings for the real datasets; the synthetic set's are sized so that the default
# run takes a few minutes on two CPU cores and still shows clear learning.
PAPER_DEFAULTS = {"epochs": 30, "batch_size": 8, "image_size": 256, "lr": 1e-4, "encoder": "resnet50",
                  "encoder_weights": "imagenet"}
SYNTHETIC_DEFAULTS = {"epochs": 10, "batch_size": 8, "image_size": 128, "lr": 1e-3, "encoder": "resnet18",
                      "encoder_weights": "none", "num_images": 400}
# The measured length of the default synthetic run on two CPU cores: the one figure that `train --help`
# prints and the README quotes (tests/test_readme.py holds them together).
SYNTHETIC_MINUTES = 6
