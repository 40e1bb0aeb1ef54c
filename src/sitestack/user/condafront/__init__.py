"""The `conda` front door: the seed page's conda commands on any sitestack stack.

`module load NAME` defines a `conda` shell function (site/modulefiles: the modulefile's
``set_shell_function`` / ``set-function``) that evals what the `conda` executable of the site's
own sitestack prints for `activate` and `deactivate`, as conda's own shell wrapper does, and
runs it for everything else (commands/conda.py declares conda's command line):

- state: the activations, kept in the shell's environment and read back checked;
- envs: what `activate` may name (base, a clone, a layer; by path or name) and its plan;
- activate: `activate`, `deactivate`, `shell.X hook`, `run`'s environment;
- create: `create --clone` (a `sitestack clone`);
- install: `install` / `remove` in a clone or layer, from the stack's own package source;
- info: `list`, `env list`, `info`.
"""

# shell.X -> the shell shellenv writes for: the shells `conda shell.X` speaks (commands/conda.py
# declares a shell.X subcommand for each; it imports this package, not the heavier modules)
DIALECTS = {"bash": "bash", "zsh": "zsh", "posix": "sh"}
