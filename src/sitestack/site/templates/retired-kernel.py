"""The kernel of a retired sitestack version: every cell fails with why, and nothing runs.

Written by sitestack next to its kernel.json, whose metadata.sitestack.message says why. It
runs on another stack's interpreter and ipykernel (the retired stack's files are gone),
started with -I (no PYTHONPATH, no user site, no current folder on sys.path). Its kernel
class has no shell, so ipykernel runs no startup files, extensions or exec_lines, and the
app reads no IPython configuration files: no code of the user's runs here.
"""

import json
import os

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel.json"), encoding="utf-8") as f:
    MESSAGE = str(json.load(f)["metadata"]["sitestack"]["message"])


class RetiredKernel(Kernel):
    implementation = "sitestack-retired"
    implementation_version = "1"
    language_info = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py"}
    banner = MESSAGE

    def do_execute(self, code, silent, store_history=True, user_expressions=None,
                   allow_stdin=False, **kwargs):
        content = {"ename": "StackRetired", "evalue": MESSAGE, "traceback": [MESSAGE]}
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    def do_complete(self, code, cursor_pos):
        return {"status": "ok", "matches": [], "cursor_start": cursor_pos,
                "cursor_end": cursor_pos, "metadata": {}}

    def do_inspect(self, code, cursor_pos, detail_level=0, omit_sections=()):
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}


class RetiredKernelApp(IPKernelApp):
    def load_config_file(self, *args, **kwargs):
        """No ipython_kernel_config.py: a configuration file is Python code of the user's."""


if __name__ == "__main__":
    import sys

    print(MESSAGE, file=sys.stderr, flush=True)
    RetiredKernelApp.launch_instance(kernel_class=RetiredKernel)
