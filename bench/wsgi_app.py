"""WSGI entry point for benchmarking the exchange under gunicorn (bench/orders.py).

The project serves ASGI (``dexsite.asgi:application``) and keeps ``WSGI_APPLICATION``
unset; the REST API is plain synchronous Django REST framework, so the same settings and
URLs also run under a WSGI server. Only the benchmark uses this module::

    gunicorn bench.wsgi_app:application -b 127.0.0.1:8001 -k gthread -w 1 --threads 8
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dexsite.settings")
application = get_wsgi_application()
