"""TensorFlow / Keras 3 backend: models, augment, finetune, checkpoint, loop.

Why Keras 3 with a custom distributed step rather than ``model.fit`` or legacy Keras 2: Keras 3's
``model.fit`` under ``MultiWorkerMirroredStrategy`` fails with 2+ workers ("Attempt to convert a value
(PerReplica...)", keras-team/keras#20585, ray-project/ray#47464), while Keras 3 models and optimizers
built in the strategy's scope and trained by ``strategy.run`` with a ``GradientTape`` step synchronise
correctly. Legacy Keras 2 (``tf-keras`` with ``TF_USE_LEGACY_KERAS=1``) would need that variable in
every worker's environment before TensorFlow is imported, an extra pinned package, and the deprecated
Keras 2 API; the custom step keeps one Keras (3) for models, files and users. The loop also gives us
what ``fit`` would hide: per-step learning rates from raykit's schedules, exact cross-rank metrics, and
full-state checkpoints.
"""

import os

# Before TensorFlow is imported anywhere in this process: Keras on TensorFlow, and quieter C++ logs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
