pushenv("CONDA_PREFIX", prefix)
