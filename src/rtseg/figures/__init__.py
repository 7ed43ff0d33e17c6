"""Figures for people: slice GIFs, PNG montages (CT | ground truth | prediction), training curves, metric box plots.

- :mod:`~rtseg.figures.overlay`: slice orientation (radiological view), HU window, colour overlay, checks;
- :mod:`~rtseg.figures.gif` and :mod:`~rtseg.figures.montage`: the two slice figures from arrays;
- :mod:`~rtseg.figures.volumes`: either of them from ``Volume`` objects (grid check, RAS+ reorientation);
- :mod:`~rtseg.figures.curves`: training curves; :mod:`~rtseg.figures.boxplots`: per-organ metric box plots.

Matplotlib and Pillow are imported lazily, so importing rtseg never loads them.
"""
from __future__ import annotations

from rtseg.figures.boxplots import plot_name, write_box_plots
from rtseg.figures.curves import plot_training_curves
from rtseg.figures.gif import save_gif, slice_indices
from rtseg.figures.montage import montage_slices, save_montage
from rtseg.figures.overlay import DEFAULT_WINDOW, HEADER_PX, PANEL_NAMES, default_colors, overlay, view_slice, window_to_unit
from rtseg.figures.volumes import save_volume_figure

__all__ = [
    "DEFAULT_WINDOW", "HEADER_PX", "PANEL_NAMES", "default_colors", "montage_slices", "overlay", "plot_name",
    "plot_training_curves", "save_gif", "save_montage", "save_volume_figure", "slice_indices", "view_slice",
    "window_to_unit", "write_box_plots",
]
