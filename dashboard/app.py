"""genlab dashboard: the router. Run with ``streamlit run dashboard/app.py``.

This file only declares the pages, behind the classroom gate (``gate.py``). Each page lives in
``views/`` and reaches genlab through the ``services`` package. The folder is deliberately not
named ``pages/``: Streamlit treats a ``pages/`` folder beside the entry script as an old-style
multipage app, and a server whose first request is a sub-page URL (``/train``,
``/explore?run=...``) then runs that page without this router.
"""

import streamlit as st
from gate import require_access

st.set_page_config(page_title="genlab", layout="wide")
# While a script runs, Streamlit's status widget swaps its running-man icon five times a second,
# and each swap redraws the page: about 0.05 s of CPU per second of waiting, per open tab
# (bench/README.md). In a class that waits on one server, that is work taken from the very
# pages being waited for. The widget's Stop button still shows that a script runs.
st.html("<style>[data-testid='stStatusWidgetRunningIcon'] {display: none}</style>")

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
    st.Page("views/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("views/explore.py", title="Explore", icon=":material/image_search:",
            url_path="explore"),
    st.Page("views/explain.py", title="Explain", icon=":material/frame_inspect:",
            url_path="explain"),
    st.Page("views/privacy.py", title="Privacy", icon=":material/shield_lock:",
            url_path="privacy"),
    st.Page("views/tradeoffs.py", title="Trade-offs", icon=":material/balance:",
            url_path="tradeoffs"),
]
if require_access():  # classroom mode: the password and the owner name come first
    st.navigation(pages).run()
