"""The chat app's HTTP routes."""

from django.urls import path

from . import views

app_name = "chat"
urlpatterns = [
    path("", views.index, name="index"),
    path("name/", views.set_name, name="set_name"),
    path("rooms.json", views.rooms_json, name="rooms_json"),
    path("room/<str:room_name>/", views.room, name="room"),
]
