"""Sphinx configuration: API reference from the docstrings, tutorials executed by the plot directive."""
import strnn_fast

project = "strnn_fast"
author = "The strnn_fast authors"
release = version = strnn_fast.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode",
              "matplotlib.sphinxext.plot_directive"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures show them; the docstrings' own types stay readable
napoleon_custom_sections = [("Arguments", "params_style")]
# Tutorials run at build time (plot directive): their code and figures are what a reader gets.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 80)]
plot_pre_code = "import numpy as np\nimport torch\nimport strnn_fast\ntorch.manual_seed(0)\ntorch.set_num_threads(1)\n"
html_theme = "alabaster"
exclude_patterns = ["_build"]
nitpicky = False
suppress_warnings = ["ref.python"]  # duplicate cross-reference targets re-exported by the package
# Files the tutorials write (CSV data, model files) go to a scratch folder, not into docs/.
import tempfile  # noqa: E402

plot_working_directory = tempfile.mkdtemp(prefix="strnn_fast_docs_")
