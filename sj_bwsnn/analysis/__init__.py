"""Analysis and deployment: bit-aware summary, SOP / energy report, 1-bit packed export, doctor.

Above ``engine`` and ``models`` in the package: it builds models through the engine and reads
them with forward hooks; ``cli.py`` calls it for ``sj-bwsnn summary|energy|export|doctor``.
"""

from .energy import energy_report
from .export import export_model, load_exported
from .summary import summarize

__all__ = ["energy_report", "export_model", "load_exported", "summarize"]
