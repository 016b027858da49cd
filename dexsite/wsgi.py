"""The WSGI application: plain HTTP (the REST API, pages, admin) for a WSGI server.

Served by granian in the Procfile's `http` role; WebSockets (`/ws/`) are the `ws` role's
(`dexsite.asgi`), and a router in front sends each to its role (deploy/nginx.conf).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dexsite.settings")
application = get_wsgi_application()
