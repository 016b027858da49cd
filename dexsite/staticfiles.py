"""Static files: where the npm packages' files come from, and how production stores them.

WhiteNoise (a middleware, settings.MIDDLEWARE) serves `/static/` from the web process
itself: with DEBUG on from the sources through the finders, with DEBUG off from
STATIC_ROOT as `collectstatic` left it, read once when the process starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Warning
from django.core.files.storage import FileSystemStorage
from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """What `collectstatic` writes with DEBUG off: every file also under a name with a
    hash of its content (`trade.0616ca909004.js`), gzipped beside it, and the manifest
    that `{% static %}` reads to name them. WhiteNoise serves hashed names for a year as
    immutable, so a deployment changes every URL whose content changed and nothing else.

    The dashboard's ES modules import each other by relative specifiers
    (`from '../lib/dom.js'`). Those are rewritten to the hashed names too: otherwise a page
    would load a module under two URLs, the hashed one of its `<script>` and
    `modulepreload` tags and the plain one an import asks for, which are two instances of
    one module to the browser (and the plain one is only cached for a minute)."""

    support_js_module_import_aggregation = True


class NpmFinder(BaseFinder):
    """The files of npm packages that the pages load (settings.NPM_STATIC_FILES, paths
    under node_modules/), each served as `vendor/<package>/<file name>`. Only those:
    the packages' dist folders also hold other builds and source maps, about 10 MB that
    collectstatic would hash, compress and ship for nothing."""

    def __init__(self, *args, **kwargs) -> None:
        root = Path(settings.BASE_DIR) / "node_modules"
        # static path -> (storage of the file's folder, its name there)
        self.files: dict[str, tuple[FileSystemStorage, str]] = {}
        storages: dict[Path, FileSystemStorage] = {}
        for item in settings.NPM_STATIC_FILES:
            source = root / item
            package = item.split("/", 1)[0]
            storage = storages.get(source.parent)
            if storage is None:
                storage = storages[source.parent] = FileSystemStorage(location=source.parent)
                storage.prefix = f"vendor/{package}"  # what collectstatic puts first
            self.files[f"vendor/{package}/{source.name}"] = (storage, source.name)
        super().__init__(*args, **kwargs)

    def check(self, **kwargs) -> list[Warning]:
        return [
            Warning(
                f"{storage.path(name)} is missing: run `npm ci` (make install-js)",
                id="dexsite.W001",
            )
            for storage, name in self.files.values()
            if not os.path.isfile(storage.path(name))
        ]

    def find(self, path: str, find_all: bool = False, **kwargs) -> str | list[str] | None:
        found = self.files.get(path.replace(os.sep, "/"))
        source = found[0].path(found[1]) if found else None
        if source is not None and not os.path.isfile(source):
            source = None
        if find_all:
            return [source] if source else []
        return source

    def list(self, ignore_patterns):
        for storage, name in self.files.values():
            if os.path.isfile(storage.path(name)):
                yield name, storage
