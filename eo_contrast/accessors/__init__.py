"""The ``.contrast`` accessor, registered on DataArray and Dataset when eo_contrast is imported."""

from eo_contrast.accessors.contrast import ContrastArrayAccessor, ContrastDatasetAccessor

__all__ = ["ContrastArrayAccessor", "ContrastDatasetAccessor"]
