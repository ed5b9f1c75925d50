"""MkDocs hook: the notebooks of ``notebooks/`` as pages of the site.

The notebooks stay where CI executes them (``pytest --nbmake notebooks/``); this hook adds each
one to the site's files as ``notebooks/<name>.ipynb`` before mkdocs-jupyter turns notebooks into
pages (it runs first: a higher event priority), so nothing is copied into ``docs/`` and neither
pytest nor nbmake sees a second copy. mkdocs-jupyter renders the stored outputs
(``execute: false`` in ``mkdocs.yml``).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent  # the repository


@event_priority(100)  # before mkdocs-jupyter's on_files (priority 0)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    # a File read from the repository's root (not a generated one: mkdocs-jupyter reads the
    # notebook's path from the file's src_dir)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        path = notebook.relative_to(ROOT).as_posix()
        files.append(File(path, str(ROOT), config.site_dir, config.use_directory_urls))
    return files
