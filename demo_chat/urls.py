"""The demo's HTTP routes: the admin and the chat pages."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("demo_chat.chat.urls")),
]
