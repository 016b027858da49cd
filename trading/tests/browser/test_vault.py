"""The dashboard's vault against a real anvil: a browser wallet (an injected EIP-1193
provider whose account the node holds) approves and deposits, the page follows the
confirmations to the credit by the watcher process, then a withdrawal to its hash."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from decimal import Decimal

import pytest
from eth_account import Account

from accounts.evm import token_contract, transact, web3_connect
from accounts.services.chain_deploy import chain_deploy, gas_fund
from accounts.tests.chain.conftest import anvil_url  # noqa: F401  (the session's anvil)
from trading.tests.browser.conftest import ROOT, run_server, signup_in_page
from trading.tests.browser.test_dashboard import expect, toast

# The server and the watcher share the test database: nothing may be left uncommitted.
pytestmark = pytest.mark.django_db(transaction=True)

# The injected wallet: accounts and signing are the node's own (anvil holds the key of
# its development accounts); every other request goes to the node as it is.
PROVIDER = """(() => {
  const rpc = __RPC__, address = __ADDRESS__;
  let id = 0;
  const listeners = {};
  async function send(method, params) {
    const r = await fetch(rpc, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params: params || [] }) });
    const body = await r.json();
    if (body.error) throw Object.assign(new Error(body.error.message), body.error);
    return body.result;
  }
  window.ethereum = {
    on(event, fn) { (listeners[event] = listeners[event] || []).push(fn); },
    removeListener() {},
    async request({ method, params }) {
      if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [address];
      if (method === 'wallet_switchEthereumChain') {
        if (params[0].chainId === (await send('eth_chainId'))) return null;
        throw Object.assign(new Error('unknown chain'), { code: 4902 });
      }
      return send(method, params);
    },
  };
})();
"""


@pytest.fixture(scope="module")
def chain_server(django_db_setup, django_db_blocker, anvil_url):  # noqa: F811
    w3 = web3_connect(anvil_url)
    hot = Account.create()
    with django_db_blocker.unblock():
        from django.db import connections
        from django.test import override_settings

        # A module before may have ended the connections this context still holds.
        connections.close_all()

        with override_settings(CHAIN_DEVELOPMENT=True):
            deployment = chain_deploy(
                w3=w3, deployer=w3.eth.accounts[0], signer=hot.address
            ).deployment
    gas_fund(w3=w3, deployer=w3.eth.accounts[0], address=hot.address)
    wallet = w3.eth.accounts[5]
    usdc = token_contract(w3, deployment.tokens["USDC"]["address"])
    transact(w3, usdc.functions.mint(wallet, 1_000 * 10**6), w3.eth.accounts[0])
    env = {
        "CHAIN_RPC_URL": anvil_url,
        "CHAIN_ID": str(w3.eth.chain_id),
        "CHAIN_CONFIRMATIONS": "3",
        "CHAIN_POLL_SECONDS": "0.2",
    }
    for srv in run_server(django_db_blocker, env):
        watcher = subprocess.Popen(
            [sys.executable, "manage.py", "runchainwatch"],
            cwd=ROOT,
            env={**srv.env, "CHAIN_WITHDRAWAL_KEY": hot.key.hex()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        srv.w3, srv.wallet, srv.deployment = w3, wallet, deployment
        try:
            yield srv
        finally:
            watcher.terminate()
            watcher.wait(timeout=10)


@pytest.fixture(autouse=True)
def _connections_closed_after(django_db_blocker):
    """The server fixture of the module before ends every other connection to the test
    database, those this context holds included: closed here, the database flush after
    the test opens a fresh one."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        connections.close_all()


def staff_approves(srv, withdrawal_id: int) -> None:
    """The admin's approval, in a process of its own on the server's database."""
    code = (
        "from accounts.services import vault; "
        f"vault.withdrawal_send_approve(withdrawal_id={withdrawal_id}, by=None)"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=srv.env, check=True
    )


class Miner:
    """Blocks every 0.3 s while the page waits for confirmations (the test's anvil
    mines only on transactions)."""

    def __init__(self, w3) -> None:
        self.w3, self.stop = w3, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.3):
            self.w3.provider.make_request("anvil_mine", ["0x1"])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def test_deposit_from_the_wallet_to_credited_then_a_withdrawal_to_its_hash(
    chain_server, browser, screenshots_dir
):
    srv, x = chain_server, expect()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script(
        PROVIDER.replace("__RPC__", json.dumps(srv.env["CHAIN_RPC_URL"])).replace(
            "__ADDRESS__", json.dumps(srv.wallet)
        )
    )
    name = signup_in_page(page, srv.base, "vault")
    token = srv.token(name)

    page.goto(f"{srv.base}/account/")
    page.click("[data-action=deposit]")
    dialog = page.locator("#deposit-modal")
    x(dialog.locator("[data-field=vault]")).to_have_text(srv.deployment.vault)
    x(dialog.locator("[data-field=chain]")).to_contain_text("chain id 31337")
    x(dialog.locator("#dep-tx")).to_be_hidden()
    x(dialog.locator("[data-when=no-wallet]")).to_be_hidden()
    x(dialog.locator("button[type=submit]")).to_have_text("Approve and deposit")
    page.fill("#dep-amount", "250")
    page.click("#deposit-modal button[type=submit]")
    x(dialog.locator("[data-step=confirm]")).to_have_attribute(
        "data-state", "active", timeout=20_000
    )
    x(dialog.locator("[data-field=tx-hash]")).to_have_text(re.compile(r"^0x[0-9a-f]{64}$"))
    with Miner(srv.w3):
        x(dialog.locator("[data-field=confirmed]")).to_have_text("3", timeout=20_000)
        x(toast(page, "Deposit credited")).to_be_visible(timeout=30_000)
    x(dialog.locator("[data-step=credit]")).to_have_attribute("data-state", "done")
    dialog.screenshot(path=str(screenshots_dir / "vault-deposit.png"))
    balances = srv.call("GET", "balances", token, params={"mode": "REAL"}).json()
    assert [(b["asset"], b["total"]) for b in balances] == [("USDC", "250")]
    page.keyboard.press("Escape")

    # The wallet linked through the page (the node signs the challenge), a withdrawal to
    # it approved by staff and paid by the watcher: the page follows it to its hash.
    page.click("#wallets [data-action=link-wallet]")
    page.click("#wallet-linker [data-action=link]")
    x(toast(page, "Wallet linked")).to_contain_text(srv.wallet)
    page.click("#transfers [data-action=withdraw]")
    page.fill("#wd-amount", "100")
    page.click("#withdraw-modal button[type=submit]")
    x(toast(page, "Withdrawal requested")).to_be_visible()
    transfer = srv.call("GET", "vault/transfers", token).json()["results"][0]
    staff_approves(srv, transfer["id"])
    paid = toast(page, "Withdrawal paid")
    with Miner(srv.w3):
        x(paid).to_be_visible(timeout=30_000)
    tx_hash = srv.call("GET", "vault/transfers", token).json()["results"][0]["txHash"]
    x(paid).to_contain_text(tx_hash)
    usdc = token_contract(srv.w3, srv.deployment.tokens["USDC"]["address"])
    assert Decimal(usdc.functions.balanceOf(srv.wallet).call()) == Decimal(850 * 10**6)
    assert errors == []
    context.close()
