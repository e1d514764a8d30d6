"""Upgrading from a PaddleHub 1.x install of this module without losing its weights.

PaddleHub 2.4's ``hub install <folder>`` first removes ``$HUB_HOME/modules/bert_cased_L_24_H_1024_A_16`` with
``shutil.rmtree``; over a 1.x install, that folder's ``assets/params/`` holds the only copy of the user's 1.x
weights. :func:`upgrade` converts them into the weights folder, outside ``modules/``, and installs only once
they are there.
"""

import os
import subprocess
import sys

from . import HUB_NAME, weights

__all__ = ["PACKAGE_DIR", "installed_module_dir", "holds_1x_weights", "upgrade"]

#: The folder ``hub install`` copies: this package's own.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

_HUB_INSTALL = "import sys; from paddlehub.commands.utils import execute; sys.exit(execute())"


def installed_module_dir():
    """Where PaddleHub installs this module: ``$HUB_HOME/modules/bert_cased_L_24_H_1024_A_16``."""
    return os.path.join(weights.hub_home(), "modules", HUB_NAME.replace("-", "_"))


def holds_1x_weights(module_dir):
    """Whether ``module_dir`` holds 1.x weights: parameter files in its ``assets/params/``."""
    params = os.path.join(module_dir, "assets", "params")
    return os.path.isdir(params) and bool(os.listdir(params))


def upgrade(module_dir=None, dest_dir=None, package_dir=PACKAGE_DIR, log=print):
    """Carries the 1.x weights of ``module_dir`` (default: installed_module_dir()) over to the weights dir
    ``dest_dir`` (default: weights.default_weights_dir()), then runs ``hub install package_dir``.

    Returns the weights dir installed, or None when ``module_dir`` held no 1.x weights (then it only installs).
    Raises weights.WeightsError, before anything is removed, when the weights cannot be carried over, when
    ``dest_dir`` lies inside ``module_dir`` (which ``hub install`` removes), or when ``package_dir`` is
    ``module_dir`` itself; RuntimeError when ``hub install`` fails.
    """
    module_dir = os.path.realpath(os.path.expanduser(module_dir or installed_module_dir()))
    dest_dir = os.path.realpath(os.path.expanduser(dest_dir or weights.default_weights_dir()))
    package_dir = os.path.realpath(package_dir)
    if _within(dest_dir, module_dir):
        raise weights.WeightsError(f"the weights folder {dest_dir} lies inside {module_dir}, which `hub install` "
                                   "removes; choose a weights folder outside it")
    if package_dir == module_dir:
        raise weights.WeightsError(f"{package_dir} is the installed module itself, which `hub install` removes "
                                   "first; run the upgrade from the repository or a pip-installed copy")
    carried = None
    if holds_1x_weights(module_dir):
        log(f"carrying the 1.x weights in {module_dir} over to {dest_dir}")
        carried = weights.convert(module_dir, dest_dir)
    elif os.path.isdir(module_dir):
        log(f"{module_dir} holds no 1.x weights: nothing to carry over")
    log(f"hub install {package_dir}")
    done = subprocess.run([sys.executable, "-c", _HUB_INSTALL, "install", package_dir], stdin=subprocess.DEVNULL,
                          cwd=os.path.dirname(package_dir), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`hub install {package_dir}` failed (exit status {done.returncode})"
                           + (f"; the 1.x weights are safe in {carried}" if carried else ""))
    return carried


def _within(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
