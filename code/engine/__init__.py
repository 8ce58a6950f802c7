"""The run engine: what turns the pieces into training and test runs.

``trainer`` (flags, seeding, the loop, checkpoints, ``--resume``), ``evaluation``
(the test scripts' shared flags, checkpoint lookup, ``--which``, ``--expect``),
``inference`` (sliding-window and slice inference, validation), ``checkpoints``
(safe loading), ``visualize`` (tensorboard images), ``host_memory`` (CPU
allocator setting).

Layers, each importing only those below it (tests/test_layers.py checks this):
scripts (``code/*.py``) -> ``engine`` -> ``methods`` -> ``networks`` / ``utils``
/ ``dataloaders``. ``utils`` holds what users copy into their own projects
(losses, VAT, separation, ramps, metrics, statistics): each of those files
imports only torch, numpy and the standard library (scipy for statistics).
"""
