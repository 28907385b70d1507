"""genlab: a lab for the performance / interpretability / privacy trade-off of generative models.

The core never imports streamlit; the dashboard (``dashboard/``) and the CLI (``genlab.cli``) are
thin faces over it.
"""

__version__ = "0.1.0"
