"""The example project's URLs plus the metrics view, at ``/ws4redis/metrics``."""

from chatserver.urls import urlpatterns as example_urlpatterns
from django.urls import path

from ws4redis.views import metrics

urlpatterns = [*example_urlpatterns, path("ws4redis/metrics", metrics, name="ws4redis_metrics")]
