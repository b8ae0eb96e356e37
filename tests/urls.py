"""URLs for the test suite: the admin, whose Rooms and Nodes pages tests/test_admin.py visits."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
