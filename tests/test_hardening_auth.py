"""Password checks under attack: hashing is bounded in concurrency (the excess answered 429 at once),
failures lock out per user as well as per address, and a correct password still gets in from a
locked-out address."""
import asyncio
import threading

import httpx

from inkwash.webui.auth import Credentials
from test_security import BASE, basic, creds, make_app


def get(app, address: str, user: str, password: str) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.get("/", headers=basic(user, password))
    return asyncio.run(go())


def test_concurrent_password_checks_are_bounded_and_the_excess_refused_at_once(monkeypatch):
    release, hashing = threading.Event(), []
    original = Credentials.verify

    def slow_verify(self, user, password):
        hashing.append(user)
        release.wait(10)  # holds a hashing slot, as a 600,000-iteration PBKDF2 does
        return original(self, user, password)

    monkeypatch.setattr(Credentials, "verify", slow_verify)
    app = make_app(creds(alice="right"))
    held = [threading.Thread(target=get, args=(app, f"10.0.0.{i}", "alice", "wrong")) for i in range(2)]
    for thread in held:
        thread.start()
    while len(hashing) < 2:
        threading.Event().wait(0.01)
    excess = [get(app, f"10.0.1.{i}", "nobody", "guess") for i in range(20)]  # unknown users hash too
    assert [answer.status_code for answer in excess] == [429] * 20
    assert "busy" in excess[0].text and excess[0].headers["retry-after"] == "1"
    assert len(hashing) == 2  # none of the 20 hashed
    release.set()
    for thread in held:
        thread.join(10)
    assert get(app, "10.0.2.1", "alice", "right").status_code == 200


def test_guesses_from_rotating_addresses_lock_the_user_out():
    app = make_app(creds(alice="right", bob="other"))
    answers = [get(app, f"172.16.{i // 250}.{i % 250}", "alice", "guess").status_code for i in range(40)]
    assert answers[:29] == [401] * 29 and set(answers[30:]) == {429}
    assert get(app, "172.16.9.9", "alice", "right").status_code == 429  # a new check for alice is not made
    assert get(app, "172.16.9.9", "bob", "other").status_code == 200  # other users are not locked


def test_a_correct_password_still_gets_in_from_a_locked_out_address():
    app = make_app(creds(alice="right"))
    nat = "192.168.1.1"
    assert get(app, nat, "alice", "right").status_code == 200
    answers = [get(app, nat, "mallory", f"guess{i}").status_code for i in range(12)]
    assert answers[-1] == 429  # the address is locked out for new checks
    assert get(app, nat, "mallory", "guess99").status_code == 429
    assert get(app, nat, "alice", "right").status_code == 200  # its successes are not
    assert get(app, nat, "alice", "wrong").status_code == 429
