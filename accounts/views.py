"""Server-rendered account pages (session login)."""

from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts.models import User
from trading.models import Market


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)

    def clean_username(self) -> str:
        username = super().clean_username()
        if username.startswith("__"):
            from django.core.exceptions import ValidationError

            raise ValidationError("That username is not allowed.")
        return username


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


def home(request: HttpRequest) -> HttpResponse:
    markets = Market.objects.order_by("id")
    return render(request, "home.html", {"markets": markets})
