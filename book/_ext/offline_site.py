"""Make the built book work with no network: local MathJax and Jupyter widget manager, no Thebe.

`make setup` installs the pinned npm packages of package.json into node_modules/. When they are
there, this Sphinx extension points `mathjax_path` and myst-nb's `nb_ipywidgets_js` at copies under
`_build/html/_static/offline/`, so math and widget outputs render without a CDN. When they are
missing (no npm on the machine), the CDN defaults of Sphinx and myst-nb stay in place.

It also stops sphinx-thebe (always loaded by Jupyter Book 1, unused here since launch buttons are
off) from adding its configuration script, which it emits twice: a JavaScript error on every page.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
OFFLINE = "offline"  # folder under the site's _static/
MATHJAX_SCRIPT = "tex-chtml.js"
# The parts of mathjax/es5 that tex-chtml.js loads on demand (fonts, TeX extensions, menu,
# accessibility); the other combined bundles (SVG output, MathML input) are left out.
MATHJAX_PARTS = [MATHJAX_SCRIPT, "input", "output/chtml", "ui", "a11y", "sre", "adaptors"]
# The widget manager keeps its npm path: its fonts are looked up relative to the AMD module id.
MANAGER = "@jupyter-widgets/html-manager/dist"
WIDGETS_HELPER = "widgets_offline.js"


def _sources(root: Path) -> dict[str, Path]:
    """The npm folders and files the site serves, keyed by their place under _static/offline/."""
    modules = root / "node_modules"
    return {
        "mathjax": modules / "mathjax" / "es5",
        MANAGER: modules / MANAGER,
        "require.js": modules / "requirejs" / "require.js",
    }


def _configure(app: Sphinx, config: Config) -> None:
    sources = _sources(Path(app.confdir))
    found = (
        (sources["mathjax"] / MATHJAX_SCRIPT).is_file()
        and (sources[MANAGER] / "embed-amd.js").is_file()
        and sources["require.js"].is_file()
    )
    app.offline_site_sources = sources if found else None
    if not found:
        logger.info("offline_site: no node_modules/, MathJax and widgets will load from CDNs")
        return
    # Paths relative to _static/. Order matters: helper, then RequireJS, then the manager.
    config.mathjax_path = f"{OFFLINE}/mathjax/{MATHJAX_SCRIPT}"
    config.nb_ipywidgets_js = {
        f"{OFFLINE}/{WIDGETS_HELPER}": {},
        f"{OFFLINE}/require.js": {},
        f"{OFFLINE}/{MANAGER}/embed-amd.js": {},
    }


def _copy(src: Path, dest: Path, names: list[str]) -> None:
    for name in names:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, dirs_exist_ok=True)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dest / name)


def _copy_assets(app: Sphinx, exception: Exception | None) -> None:
    sources = getattr(app, "offline_site_sources", None)
    if exception is not None or sources is None or app.builder.format != "html":
        return
    offline = Path(app.outdir) / "_static" / OFFLINE
    _copy(sources["mathjax"], offline / "mathjax", MATHJAX_PARTS)
    manager = [
        p.name
        for p in sources[MANAGER].iterdir()
        if p.suffix != ".map" and p.name not in ("embed.js", "libembed-amd.js")
    ]
    _copy(sources[MANAGER], offline / MANAGER, manager)
    # Icon fonts (a Button's icon, say) are requested from the scope folder, not from dist/.
    fonts = [name for name in manager if Path(name).suffix in {".woff", ".woff2", ".ttf", ".eot", ".svg"}]
    _copy(sources[MANAGER], offline / MANAGER.split("/")[0], fonts)
    _copy(sources["require.js"].parent, offline, ["require.js"])
    _copy(HERE, offline, [WIDGETS_HELPER])


def _drop_thebe_scripts(app: Sphinx) -> None:
    for event in ("env-before-read-docs", "doctree-resolved"):
        for listener in list(app.events.listeners.get(event, [])):
            if getattr(listener.handler, "__module__", "").startswith("sphinx_thebe"):
                app.disconnect(listener.id)


def setup(app: Sphinx) -> dict[str, object]:
    # Priority 400: run before myst-nb reads nb_ipywidgets_js (it does so at builder-inited).
    app.connect("config-inited", _configure, priority=400)
    app.connect("build-finished", _copy_assets)
    _drop_thebe_scripts(app)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
