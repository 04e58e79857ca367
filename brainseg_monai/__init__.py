"""brainseg-monai: brain tumor segmentation on 2D MRI slices from COCO data, built on MONAI.

The application around the bundle: the ``brainseg`` CLI, evaluation reports and pictures,
packaging. The model (configs, weights and the code they name) is the bundle; its code is
imported from the bundle as ``scripts`` (:mod:`brainseg_monai.bundle_code`).
"""

import os as _os

from brainseg_monai.bundle_code import default_bundle_dir, use_bundle_scripts

if _os.path.isdir(_os.path.join(default_bundle_dir(), "scripts")):
    use_bundle_scripts()  # the app's `from scripts... import` lines read the bundle's own code

__version__ = "0.1.0"

__all__ = ["__version__"]
