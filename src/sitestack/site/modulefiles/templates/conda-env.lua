pushenv("CONDA_PREFIX", prefix)
pushenv("CONDA_DEFAULT_ENV", __REF__)
pushenv("CONDA_SHLVL", "1")
pushenv("CONDA_PROMPT_MODIFIER", "")
