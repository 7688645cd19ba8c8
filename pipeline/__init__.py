"""What produces runs: the contract both halves share (config, keys, errors, files, the .wandb reader) and the rooms above it.

    pipeline/config.py keys.py errors.py fsutil.py runlog.py   the contract, imported by analysis too
    pipeline/train/   one run          python -m pipeline.train
    pipeline/sweep/   many runs        python -m pipeline.sweep
    pipeline/study/   the whole study  python -m pipeline.study (the only room that also imports analysis)
"""
