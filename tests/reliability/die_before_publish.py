"""Run the edgeseg CLI, but SIGKILL the process at the moment an artifact's bytes are written and not yet
published: the worst instant for a kill. Usage: python die_before_publish.py TARGET edgeseg-args...

Every artifact is written to a temporary file and renamed onto its name (os.replace); the
process dies just before the rename of TARGET, as a kill mid-write would leave it.
"""
import os
import signal
import sys

target = os.path.abspath(sys.argv[1])
real_replace = os.replace


def replace_or_die(src, dst, *args, **kwargs):
    if os.path.abspath(dst) == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)


os.replace = replace_or_die

from edgeseg.cli.main import main  # noqa: E402

main(sys.argv[2:])
