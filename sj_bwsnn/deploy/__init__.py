"""Deployment: the packed 1-bit file (:mod:`.packed`) and NIR export (:mod:`.nir`).

Above ``models``, ``engine`` and ``analysis`` (it rebuilds models from recipes and checkpoints and
writes files atomically), below ``cli.py``, whose ``sj-bwsnn export --format packed|nir`` is
:func:`.command.export_command`. NIR support needs the optional
``nir`` and ``nirtorch`` packages (``pip install 'sj-bwsnn[nir]'``), imported only when used.
"""

from .nir import to_nir, write_nir
from .packed import export_model, load_exported

__all__ = ["export_model", "load_exported", "to_nir", "write_nir"]
