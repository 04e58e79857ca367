"""The brainseg-monai MONAI Label app's own code (its inference task)."""
