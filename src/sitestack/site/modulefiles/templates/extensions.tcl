# A no-op in Environment Modules 5.x (kept for Lmod reading this tree); see docs/modulefiles.md.
extensions __NAMES__
