from django.urls import path

from realtime.consumers import ExchangeConsumer

websocket_urlpatterns = [path("ws/", ExchangeConsumer.as_asgi())]
