"""Datasets on disk: the layout registry, one module per layout, the dataset JSON, conversions."""
