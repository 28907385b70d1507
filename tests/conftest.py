"""Fixtures shared by the dashboard and browser tests (and usable by any test).

``genlab_home`` gives one test an empty genlab home; ``trained_home`` trains one tiny VAE once per
session, in-process, so the pages have a finished run to show; ``zoo`` trains small runs of any
registered model on demand, each once per session, in one shared home.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "dashboard"

# The dashboard's pages `import services`, as `streamlit run dashboard/app.py` allows (Streamlit
# puts the main script's folder on sys.path); AppTest does not, so the tests do.
if str(DASHBOARD) not in sys.path:
    sys.path.insert(0, str(DASHBOARD))


@pytest.fixture
def genlab_home(tmp_path, monkeypatch) -> Path:
    """An empty temporary folder set as GENLAB_HOME for one test."""
    home = tmp_path / "genlab_home"
    home.mkdir()
    monkeypatch.setenv("GENLAB_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory):
    """A session-wide GENLAB_HOME holding one finished 2-epoch VAE on digits.

    Yields:
        ``(home, run_id)``. GENLAB_HOME points at ``home`` for the whole session (function-scoped
        ``genlab_home`` overrides it for one test) and is restored afterwards.
    """
    from genlab import jobs
    from genlab.config import make_run_config
    from genlab.runs import RunStore

    home = tmp_path_factory.mktemp("trained_home")
    previous = os.environ.get("GENLAB_HOME")
    os.environ["GENLAB_HOME"] = str(home)
    try:
        cfg = make_run_config("vae", "digits", epochs=2, seed=0)
        store = RunStore(home)
        run_id = store.create_run(model=cfg.model, dataset=cfg.data.name, config=cfg.to_dict(),
                                  config_hash=cfg.config_hash())
        jobs.execute_run(store, run_id)
        assert store.get(run_id).status == "finished"
        yield home, run_id
    finally:
        if previous is None:
            os.environ.pop("GENLAB_HOME", None)
        else:
            os.environ["GENLAB_HOME"] = previous


# Small settings that train each family on digits in a few seconds; a family missing here trains
# with its defaults (still on digits, for ``ZOO_EPOCHS``).
TINY_SETTINGS: dict[str, dict] = {
    "vae": {"arch": "mlp", "latent_dim": 4, "hidden": 32},
    "cvae": {"latent_dim": 4, "hidden": 32, "channels": 8},
    "gan": {"channels": 8, "latent_dim": 4},
    "pixelcnn": {"channels": 8, "layers": 2, "head": 8, "batch_size": 128},
    "mixture": {"components": 6},
    "hvae": {"top_dim": 2, "hidden": 32, "channels": 8},
    "diffusion": {"channels": 8, "timesteps": 100, "sample_steps": 5},
}
ZOO_EPOCHS = 2


@dataclass
class Zoo:
    """Finished runs on digits in one genlab home, trained in-process on first request."""

    home: Path
    runs: dict[str, str] = field(default_factory=dict)

    def run(self, model: str, *, epochs: int = ZOO_EPOCHS, **settings) -> str:
        """The id of a finished ``model`` run with these settings (``TINY_SETTINGS`` by default),
        training it now if this session has not yet."""
        from genlab import jobs
        from genlab.config import make_run_config
        from genlab.runs import RunStore

        settings = settings or TINY_SETTINGS.get(model, {})
        key = json.dumps([model, epochs, settings], sort_keys=True)
        if key not in self.runs:
            cfg = make_run_config(model, "digits", epochs=epochs, seed=0, overrides=settings)
            store = RunStore(self.home)
            run_id = store.create_run(model=model, dataset="digits", config=cfg.to_dict(),
                                      config_hash=cfg.config_hash())
            jobs.execute_run(store, run_id)
            assert store.get(run_id).status == "finished", store.get(run_id).error
            self.runs[key] = run_id
        return self.runs[key]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    """A session-wide :class:`Zoo`; set ``GENLAB_HOME`` to ``zoo.home`` to show its runs."""
    return Zoo(tmp_path_factory.mktemp("zoo_home"))


@pytest.fixture
def browser_page():
    """A headless Chromium page (Playwright) at 1400×1000, closed after the test."""
    from browser_support import CHROMIUM, CHROMIUM_ARGS

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install it (apt-get install chromium), "
                    "set GENLAB_CHROMIUM to its path, or skip with GENLAB_BROWSER_TESTS=0")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()
