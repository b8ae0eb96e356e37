"""URLs for the test suite: the admin (tests/test_admin.py) and the health view (test_health.py)."""

from django.contrib import admin
from django.urls import path

from broadcast_layer import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.health),
    path("healthz/down", views.health, {"alias": "down", "timeout": 1.0}),
    path("metrics", views.metrics),
]
