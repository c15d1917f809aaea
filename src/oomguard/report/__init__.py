"""``oomguard report DIR``: a memory curve and a report page for any run directory."""

from oomguard.report.plot import FIGURE_PIXELS
from oomguard.report.render import write_report

__all__ = ["FIGURE_PIXELS", "write_report"]
