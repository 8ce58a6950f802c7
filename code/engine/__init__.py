"""The run engine: what turns the pieces into training and test runs.

``run`` (repository root, snapshot layout, log format, CLI errors),
``training`` (a whole training run for any dataset description: flags, the
checks made before anything is written, data, validation procedure, the loop's
set-up), ``trainer`` (the training flags, the loop, one iteration
``train_step``, checkpoints, ``--resume``), ``snapshot`` (what counts as a run
in a snapshot folder, ``--overwrite``, the flags a resume must keep),
``guard`` (stopping a diverged run), ``stream`` (the batches of the sampler
epochs and the RNG states of an exact resume), ``speed`` (``--tf32``,
``--amp``, ``--channels_last``, ``--compile``), ``evaluation`` (a whole
test run for any dataset description: ``test_main``, flags, checkpoint lookup,
``--which``, ``--expect``), ``testing`` (the test procedure of each procedure
type), ``reports`` (the result files), ``inference`` (sliding-window and slice
inference, validation), ``checkpoints`` (atomic writes, weights-only
loading), ``visualize`` (tensorboard images), ``host_memory`` (CPU allocator
setting).

Layers, each importing only those below it (tests/test_layers.py checks this):
scripts (``code/*.py``) -> ``engine`` -> ``methods`` -> ``datasets`` ->
``networks`` / ``utils`` / ``dataloaders``. ``utils`` holds what users copy
into their own projects (losses, VAT, separation, ramps, metrics, statistics):
each of those files imports only torch, numpy and the standard library (scipy
for statistics).
"""
