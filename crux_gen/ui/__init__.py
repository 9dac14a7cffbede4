"""The web dashboard: a WSGI app that shows stored flows, mountable under any prefix.

    from crux_gen.ui import make_app
    app = make_app(SQLiteStore("crux.db"))          # read-only
    app = make_app(store, allow_actions=True, token=os.environ["CRUX_UI_TOKEN"])

``crux-gen ui --db crux.db`` serves the same app on 127.0.0.1. It needs the
``ui`` extra (Jinja2): ``pip install 'crux-gen[ui]'``.
"""

from __future__ import annotations

from .app import make_app

__all__ = ["make_app"]
