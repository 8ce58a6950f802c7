"""The run engine: what turns the pieces into training and test runs.

``run`` (repository root, snapshot layout, log format, seeding, CLI errors),
``training`` (a whole training run for any dataset description: flags, data,
validation procedure, the loop's set-up), ``trainer`` (the training flags, the
loop, checkpoints, ``--resume``, speed options), ``evaluation`` (the test
scripts' shared flags, checkpoint lookup, ``--which``, ``--expect``),
``reports`` (the test scripts' result files and ``main``), ``inference``
(sliding-window and slice inference, validation), ``checkpoints`` (safe
loading), ``visualize`` (tensorboard images), ``host_memory`` (CPU allocator
setting).

Layers, each importing only those below it (tests/test_layers.py checks this):
scripts (``code/*.py``) -> ``engine`` -> ``methods`` -> ``datasets`` ->
``networks`` / ``utils`` / ``dataloaders``. ``utils`` holds what users copy
into their own projects (losses, VAT, separation, ramps, metrics, statistics):
each of those files imports only torch, numpy and the standard library (scipy
for statistics).
"""
