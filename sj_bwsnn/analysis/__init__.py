"""Analysis: bit-aware summary, SOP / energy report, doctor.

Above ``engine`` and ``models`` in the package: it builds models through the engine and reads
them with forward hooks; ``cli.py`` calls it for ``sj-bwsnn summary|energy|doctor``. Deployment
(the packed 1-bit file, NIR) lives in :mod:`sj_bwsnn.deploy` (``sj_bwsnn.load_exported``).
"""

from .energy import energy_report
from .summary import summarize

__all__ = ["energy_report", "summarize"]
