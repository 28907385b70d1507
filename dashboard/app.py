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
