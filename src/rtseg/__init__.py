"""rtseg: 3D CT segmentation for radiotherapy."""
__version__ = "0.1.0"
