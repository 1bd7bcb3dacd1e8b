"""The detection benchmark's generator: real tiny trainings with pathologies induced by
construction, written by the frameworks' own loggers, labelled at generation time.

    plan.py       draws a run's configuration and pathology from its seed (what, where, how strong)
    tasks.py      data, models, optimizers, schedules and the step events (corrupt batch, LR jump, NaN)
    labels.py     reads a written run back, checks the pathology shows, and places its labels
    score.py      matches lrdiag's findings to the labels (pure functions)
    write_torch.py, write_lightning.py, write_keras.py, write_hf.py: one writer each
"""
