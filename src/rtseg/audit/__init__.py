"""The clinic's feedback loop: what physicians change in the auto-contours, measured; approved contours back into training.

``pairing`` (auto and approved sets by referenced CT), ``compare`` (edits.csv), ``drift`` (the alarm),
``report`` / ``dashboard`` (table, CSV, HTML), ``export`` (approved cases as a dataset), ``models``
(compare-models). Above inference and review, below serve (the node records the clinic's sets through it).
"""
