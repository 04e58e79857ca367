from .brain_tumor import BrainTumorSegmentation, bundle_labels

__all__ = ["BrainTumorSegmentation", "bundle_labels"]
