"""Usernames: one rule for the sign-up page and the API (accounts/usernames.py). Names
are public (the leaderboard): no markup, no bidi controls, no look-alikes."""

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from accounts.usernames import username_key

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-password-1"
MARKUP = "<img src=x onerror=alert(1)>"
CYRILLIC_DEMO = "d\u0435mo"  # a Cyrillic ie among Latin letters
RLO = "\u202egnp.exe"  # RIGHT-TO-LEFT OVERRIDE: shows as "exe.png"
RLI = "demo\u2067x"  # RIGHT-TO-LEFT ISOLATE
ZWJ = "de\u200dmo"  # ZERO WIDTH JOINER


def api_signup(name: str):
    return APIClient().post(
        "/api/v1/auth/signup", {"username": name, "password": PASSWORD}, format="json"
    )


def page_signup(name: str):
    return APIClient().post(
        "/accounts/signup/", {"username": name, "password1": PASSWORD, "password2": PASSWORD}
    )


@pytest.mark.parametrize("name", [MARKUP, CYRILLIC_DEMO, RLO, RLI, ZWJ, "__admin", "a b"])
def test_both_sign_ups_refuse_the_same_names(name):
    r = api_signup(name)
    assert r.status_code == 400, r.json()
    assert r.json()["error"]["code"] == "INVALID_USERNAME"
    assert r.json()["error"]["field"] == "username"
    page = page_signup(name)
    assert page.status_code == 200 and b"errorlist" in page.content  # the form again
    assert not User.objects.filter(is_system=False).exists()


@pytest.mark.parametrize(
    ("taken", "lookalike"),
    [
        ("demo", "d\u0435m\u043e"),  # Cyrillic ie and o: mixed, and the same look
        ("ape", "\u0430\u0440\u0435"),  # all Cyrillic: one script, the same look
        ("paypal", "paypaI"),  # a capital I for the l
        ("modern", "rnodern"),
        ("trader1", "traderl"),
        ("neo", "NEO"),
    ],
)
def test_a_name_that_looks_taken_is_refused_by_both(taken, lookalike):
    assert api_signup(taken).status_code == 201
    r = api_signup(lookalike)
    assert r.status_code in (400, 409), r.json()
    assert r.json()["error"]["code"] in ("INVALID_USERNAME", "USERNAME_TAKEN")
    page = page_signup(lookalike)
    assert page.status_code == 200 and b"errorlist" in page.content
    assert User.objects.filter(is_system=False).count() == 1


def test_a_whole_script_lookalike_is_taken_not_invalid():
    assert api_signup("ape").status_code == 201
    r = api_signup("\u0430\u0440\u0435")
    assert r.status_code == 409 and r.json()["error"]["code"] == "USERNAME_TAKEN"
    assert "looks the same" in r.json()["error"]["message"]
    assert b"looks the same" in page_signup("\u0430\u0440\u0435").content


@pytest.mark.parametrize(
    "name", ["neo", "bot_1.a-b+c@d", "\u0432\u043e\u0434\u043a\u0430", "東京タワー", "Tokyo東京"]
)
def test_names_of_one_script_are_welcome(name):
    r = api_signup(name)
    assert r.status_code == 201, r.json()
    assert User.objects.get(username=name).username_key == username_key(name)


def test_names_are_stored_normalised_on_both_paths():
    assert api_signup("\uff44\uff45\uff4d\uff4f").status_code == 201  # fullwidth "demo"
    assert User.objects.filter(username="demo").exists()
    assert api_signup("demo").status_code == 409
    assert page_signup("\uff4e\uff45\uff4f").status_code == 302
    assert User.objects.filter(username="neo").exists()


def test_the_key_follows_a_rename():
    user = User.objects.create_user("first", password=PASSWORD)
    user.username = "second"
    user.save(update_fields=["username"])
    user.refresh_from_db()
    assert user.username_key == username_key("second")
    assert api_signup("sec0nd").status_code == 201  # 0 and o are told apart
    assert api_signup("SECOND").status_code == 409
