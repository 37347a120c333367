"""colora's use cases, as a Python API: what every command does, without the command line.

Each function resolves things in the store, calls `core`, records the result in the store and
returns plain data (dataclasses, rows); none of them prints. Progress and notes go through a
`Reporter` (silent by default); the CLI passes one that draws Rich progress bars. Bench scripts,
future entry points (torchrun, Ray) and Python users call the same functions:

    from colora.store.store import Store
    from colora.api import tasks, training, evaluation, restoring

    store = Store.open()                                   # $COLORA_HOME or the user data dir
    tasks.add_task(store, "rain", "./pairs")
    outcome = training.train_task(store, "rain", training.TrainOptions(steps=500))
    rows = evaluation.evaluate_task(store, "rain").rows
    restoring.restore_images(store, "rain", ["photos/"], "out/")

Modules import torch lazily (inside functions), so importing one is cheap.
"""
