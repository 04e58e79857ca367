"""brainseg-monai: brain tumor segmentation on 2D MRI slices from COCO data, built on MONAI.

The bundle's configs import this package once (``$import brainseg_monai``) and reach the
submodules as attributes.
"""

from brainseg_monai import coco, distributed, errors, handlers, io, transforms

__version__ = "0.1.0"

__all__ = ["__version__", "coco", "distributed", "errors", "handlers", "io", "transforms"]
