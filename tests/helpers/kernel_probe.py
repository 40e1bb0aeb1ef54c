"""Run by the Jupyter server venv's python (never a stack's): start a kernel with real
jupyter_client, run cells, optionally interrupt and restart it, print JSON."""

import json
import sys
import time

from jupyter_client.manager import start_new_kernel


def run(kc, code):
    texts, errors = [], []

    def hook(msg):
        c = msg["content"]
        if msg["msg_type"] == "stream":
            texts.append(c["text"])
        elif msg["msg_type"] == "error":
            errors.append(c["evalue"])
        elif msg["msg_type"] == "execute_result":
            texts.append(c["data"].get("text/plain", ""))

    r = kc.execute_interactive(code, output_hook=hook, timeout=60, stop_on_error=False)
    return {"status": r["content"]["status"], "ename": r["content"].get("ename"),
            "text": "".join(texts), "errors": errors}


def main():
    name, codes = sys.argv[1], json.loads(sys.argv[2])
    t0 = time.monotonic()
    km, kc = start_new_kernel(kernel_name=name, startup_timeout=90)
    out = {"started": time.monotonic() - t0, "launcher_pid": km.provisioner.pid, "replies": []}
    try:
        out["replies"] = [run(kc, c) for c in codes]
        if "--interrupt" in sys.argv:
            msg_id = kc.execute("import time; time.sleep(120)")
            time.sleep(1.5)
            t1 = time.monotonic()
            km.interrupt_kernel()
            while True:
                reply = kc.get_shell_msg(timeout=30)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            out["interrupt"] = {"ename": reply["content"].get("ename"), "seconds": time.monotonic() - t1}
            out["after_interrupt"] = run(kc, "print(6 * 7)")
        if "--restart" in sys.argv:
            km.restart_kernel(now=False)
            kc.wait_for_ready(timeout=90)
            out["restarted_pid"] = km.provisioner.pid
            out["after_restart"] = run(kc, "import os; print(os.getpid())")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print(json.dumps(out))


main()
