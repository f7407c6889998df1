"""Sphinx configuration of the book's website, built by `bralib book html` (bralib/book/site.py).

`bralib book html` copies this folder into the build folder, writes the chapters and the generated pages beside it,
and runs Sphinx there: everything the site shows comes from the build folder, and nothing is fetched, at build
time or when the site is read (MathJax, fonts and scripts are all served from the site's own _static/).
"""

import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).parent
# Written by bralib.book.site next to this file: the book's title, authors, version and the execution cache.
SETTINGS = json.loads((HERE / "site_settings.json").read_text(encoding="utf-8"))

project = SETTINGS["title"]
author = ", ".join(SETTINGS["authors"])
copyright = "the bralib authors"
version = release = SETTINGS["version"]

extensions = [
    "myst_nb",  # chapters as executed notebooks, pages in MyST Markdown
    "sphinx_design",  # {dropdown}: the exercises' solutions, closed until clicked
    "sphinxcontrib.bibtex",  # {cite} in the chapters, the bibliography page
    "sphinx.ext.mathjax",  # MathJax 3 from the PyPI package sphinx-mathjax-offline: see setup() below
]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "site_settings.json"]
root_doc = "index"

# ---------------------------------------------------------------- notebooks
nb_execution_mode = "cache"  # execute a chapter once; later builds reuse its outputs until its cells change
nb_execution_cache_path = SETTINGS["execution_cache"]
nb_execution_timeout = SETTINGS["cell_timeout"]
nb_execution_raise_on_error = True  # a failing cell fails the build, as it fails nbval
nb_execution_show_tb = True
nb_execution_in_temp = False
nb_merge_streams = True
nb_ipywidgets_js = {}  # the widget manager would come from a CDN: widgets show their static output instead
nb_output_stderr = "remove"  # progress bars and library warnings: nbval sees them, readers need not

# ---------------------------------------------------------------- Markdown, math, figures, citations
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
numfig = True  # "Figure 3.2" on every captioned figure (see setup() below), and {numref} to cite it
numfig_format = {"figure": "Figure %s", "table": "Table %s", "code-block": "Listing %s", "section": "Section %s"}
mathjax_path = "mathjax/tex-chtml.js"  # relative: served from the site's _static/mathjax
bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

# ---------------------------------------------------------------- HTML
html_theme = "sphinx_book_theme"
html_title = SETTINGS["title"]
html_static_path = ["_static"]
html_css_files = ["bralib.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
    "search_bar_text": "Search the book...",
}
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_show_copyright = False  # the footer already says "By the bralib authors"
suppress_warnings = ["mystnb.unknown_mime_type"]


# ---------------------------------------------------------------- figure numbers by chapter


def _number_figures_by_chapter(app, env) -> list[str]:
    """Renumber figures within each page, prefixed with the chapter's number: Figure 3.1, 3.2, ... in chapter 3.

    Sphinx numbers figures across the whole site (chapter 3 would start at Figure 9); a reader of chapter 3
    expects Figure 3.1. This runs after Sphinx assigned its numbers and keeps their order within a page.
    """
    renumbered = []
    for docname, kinds in env.toc_fignumbers.items():
        stem = docname.rsplit("/", 1)[-1]
        prefix = (int(stem[:2]),) if docname.startswith("chapters/") and stem[:2].isdigit() else ()
        for numbers in kinds.values():
            for i, figure_id in enumerate(sorted(numbers, key=numbers.get), 1):
                numbers[figure_id] = (*prefix, i)
        renumbered.append(docname)
    return renumbered  # pages whose figure numbers Sphinx must write anew


# ---------------------------------------------------------------- MathJax, served by the site itself


def _copy_mathjax(app, exception) -> None:
    """Copy MathJax 3 (its loader, components and fonts) from sphinx-mathjax-offline into _static/mathjax.

    That package's own Sphinx extension does the same but does not declare itself safe for parallel reading,
    which would make ``bralib book html --jobs N`` read serially.
    """
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.util.fileutil import copy_asset

    spec = importlib.util.find_spec("sphinx-mathjax-offline")  # the module's name keeps the hyphens
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("MathJax is missing: pip install sphinx-mathjax-offline (in bralib's [site] extra)")
    source = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    copy_asset(str(source), str(Path(app.outdir) / "_static" / "mathjax"))


def setup(app):
    app.connect("env-get-updated", _number_figures_by_chapter, priority=900)  # after Sphinx's own numbering
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
