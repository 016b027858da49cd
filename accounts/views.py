"""Server-rendered account pages (session login)."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts import throttles, usernames
from accounts.models import User
from trading.models import Market


def _throttled(request: HttpRequest, view, classes) -> int | None:
    """Seconds to wait if any of the throttles refuses this request, else None. The
    API's throttles, so a form and its API twin (/auth/token) share one budget."""
    waits = []
    for cls in classes:
        throttle = cls()
        if not throttle.allow_request(request, view):
            waits.append(throttle.wait() or 1)
    return int(max(waits) + 0.999) if waits else None


def _too_many(response: HttpResponse, wait: int) -> HttpResponse:
    response.status_code = 429
    response["Retry-After"] = str(wait)
    return response


class _RefusedLoginForm(AuthenticationForm):
    """What a throttled attempt sees: the form with the reason, the password never
    checked (checking it would tell a guesser whether the guess was right)."""

    def __init__(self, request: HttpRequest, reason: str) -> None:
        super().__init__(request, data={"username": request.POST.get("username", "")})
        self.fields["password"].required = False
        self.reason = reason

    def clean(self):
        raise ValidationError(self.reason, code="throttled")


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        wait = _throttled(request, self, throttles.LOGIN_THROTTLES)
        if wait is not None:
            form = _RefusedLoginForm(
                request, f"Too many sign-in attempts. Try again in {wait} seconds."
            )
            return _too_many(self.render_to_response(self.get_context_data(form=form)), wait)
        return super().post(request, *args, **kwargs)


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)

    def clean_username(self) -> str | None:
        # None where Django's own check found the name taken (its error is recorded).
        username = super().clean_username()
        if username:
            # The rule the API's sign-up follows too (accounts/usernames.py).
            username = usernames.username_validate(username)
            usernames.username_available(username)
        return username


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST":
        wait = _throttled(request, None, [throttles.SignupThrottle])
        if wait is not None:
            form.add_error(None, f"Too many sign-ups from here. Try again in {wait} seconds.")
            return _too_many(render(request, "accounts/signup.html", {"form": form}), wait)
        if form.is_valid():
            user = form.save()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


def home(request: HttpRequest) -> HttpResponse:
    markets = Market.objects.order_by("id")
    return render(request, "home.html", {"markets": markets})
