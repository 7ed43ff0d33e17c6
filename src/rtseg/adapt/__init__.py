"""Adaptive radiotherapy (``rtseg adapt``): contours for a patient's new CT from the patient's own plan.

- :mod:`~rtseg.adapt.register`: itk-elastix rigid + B-spline registration (parameter maps in ``params/``), refined by SimpleITK demons,
  warping the planning labels, registration plausibility;
- :mod:`~rtseg.adapt.patient`: the PATIENT_DIR contract (provenance, hashed patient ID, checks);
- :mod:`~rtseg.adapt.finetune`: the patient model, fine-tuned from the population model;
- :mod:`~rtseg.adapt.methods`: rigid, propagated, population, finetuned, fused and the agreement check;
- :mod:`~rtseg.adapt.review`: the QA and review page of an adapted fraction;
- :mod:`~rtseg.adapt.api`: ``prepare``, ``contour``, ``update`` (the CLI calls these). See docs/ADAPT.md.
"""
