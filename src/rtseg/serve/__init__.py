"""``rtseg serve``: a DICOM node that contours every CT series it receives and sends the RTSTRUCT back.

Modules: ``config`` (YAML + flags), ``scp`` (pynetdicom handlers), ``assembly``
(series on disk, completion), ``jobs`` (durable SQLite queue), ``worker``
(contouring), ``contour`` (the one door into inference), ``sender`` (C-STORE
with back-off), ``routing``, ``status``, ``service`` (the node), ``logs``.
"""
