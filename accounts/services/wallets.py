"""Linking an Ethereum wallet to a trader: a Sign-In with Ethereum (EIP-4361) challenge,
answered with an EIP-191 `personal_sign` signature.

The server keeps the exact message it issued. Verification recovers the signer from the
signature over *that* text, so every field (domain, URI, chain id, nonce, times, the
trader named in the statement) is checked by construction: a client that signed any
other text recovers to another address and is refused. The nonce is single use
(consumed by a conditional UPDATE in the linking transaction), bound to the trader who
asked for it, and expires.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import LinkedWallet, Transfer, TransferKind, TransferStatus, User
from accounts.models import WalletChallenge as Challenge
from dexsite.errors import ExchangeError, NotFound

NONCE_ALPHABET = string.ascii_letters + string.digits
NONCE_LENGTH = 24  # EIP-4361 asks for at least 8 alphanumerics


def address_parse(raw: object, field: str = "address") -> str:
    """An address as stored: EIP-55 checksummed. Lower- or upper-case hex is accepted;
    mixed case must carry a valid checksum (a typo then shows as a bad checksum)."""
    # Imported when first needed (here and below): eth-account and eth-utils take about
    # a second to import, which every process (a matcher, the clock, each web process)
    # paid at start through the admin's imports, whether it ever saw an address or not.
    from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

    digits = raw[2:] if isinstance(raw, str) and raw.startswith("0x") else ""
    well_formed = is_hex_address(raw) if digits else False
    single_case = digits in (digits.lower(), digits.upper())
    if not well_formed or not (single_case or is_checksum_address(raw)):
        raise ExchangeError(
            "INVALID_ADDRESS", "not an Ethereum address (or a bad EIP-55 checksum)", field=field
        )
    return to_checksum_address(raw)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SiteIdentity:
    """Who is asking for the signature: the `domain` and `uri` of EIP-4361."""

    domain: str
    uri: str


def siwe_message(
    *,
    site: SiteIdentity,
    address: str,
    statement: str,
    chain_id: int,
    nonce: str,
    issued_at: datetime,
    expires_at: datetime,
) -> str:
    """The EIP-4361 text. Without an address the account line is left out: the message
    still binds the nonce, and the signature tells which address answered."""
    lines = [f"{site.domain} wants you to sign in with your Ethereum account:"]
    if address:
        lines.append(address)
    lines += [
        "",
        statement,
        "",
        f"URI: {site.uri}",
        "Version: 1",
        f"Chain ID: {chain_id}",
        f"Nonce: {nonce}",
        f"Issued At: {_rfc3339(issued_at)}",
        f"Expiration Time: {_rfc3339(expires_at)}",
    ]
    return "\n".join(lines)


def wallet_challenge_issue(
    *, trader: User, site: SiteIdentity, address: str | None = None
) -> Challenge:
    checksummed = address_parse(address) if address else ""
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.WALLET_LINK_TTL)
    nonce = "".join(secrets.choice(NONCE_ALPHABET) for _ in range(NONCE_LENGTH))
    message = siwe_message(
        site=site,
        address=checksummed,
        statement=f"Link this wallet to trader {trader.trader_id} on {site.domain}.",
        chain_id=settings.WALLET_LINK_CHAIN_ID,
        nonce=nonce,
        issued_at=now,
        expires_at=expires_at,
    )
    with transaction.atomic():
        # Challenges long past their expiry are of no use to anyone; a used or recently
        # expired one stays so that a replay gets the precise refusal.
        Challenge.objects.filter(trader=trader, expires_at__lt=now - timedelta(days=1)).delete()
        return Challenge.objects.create(
            trader=trader,
            nonce=nonce,
            address=checksummed,
            message=message,
            created_at=now,
            expires_at=expires_at,
        )


def signature_signer(message: str, signature: object) -> str:
    """The address whose key made this EIP-191 personal_sign signature of `message`."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    if not isinstance(signature, str):
        raise ExchangeError("INVALID_SIGNATURE", "signature must be hex", field="signature")
    try:
        return Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception as e:  # eth-keys and eth-utils raise several types for bad input
        raise ExchangeError(
            "INVALID_SIGNATURE", "not a valid 65-byte signature", field="signature"
        ) from e


def _challenge_refusal(challenge: Challenge | None, now: datetime) -> ExchangeError | None:
    if challenge is None:
        # Unknown and another trader's nonce look the same: one reveals nothing.
        return ExchangeError("NONCE_INVALID", "no such challenge for this trader", field="nonce")
    if challenge.used_at is not None:
        return ExchangeError("NONCE_USED", "this challenge was already used", field="nonce")
    if challenge.expires_at <= now:
        return ExchangeError(
            "NONCE_EXPIRED", "this challenge has expired; ask for a new one", field="nonce"
        )
    return None


def wallet_link(
    *, trader: User, nonce: str, address: str, signature: str
) -> tuple[LinkedWallet, bool]:
    """Link `address` to `trader` once it has signed the challenge `nonce`. Returns
    (the link, created?): linking an address the trader already holds returns it."""
    checksummed = address_parse(address)
    now = timezone.now()
    challenge = Challenge.objects.filter(nonce=nonce, trader=trader).first()
    if err := _challenge_refusal(challenge, now):
        raise err
    if challenge.address and challenge.address != checksummed:
        raise ExchangeError(
            "ADDRESS_MISMATCH", "this challenge was issued for another address", field="address"
        )
    # Recovery is pure computation: done before the transaction, so no lock waits on it.
    if signature_signer(challenge.message, signature) != checksummed:
        raise ExchangeError(
            "SIGNATURE_MISMATCH",
            "the signature is not by this address over the issued message",
            field="signature",
        )
    with transaction.atomic():
        # The claim: of two requests presenting one nonce, the second waits on this
        # row's lock and then matches nothing. A refusal below rolls the claim back.
        claimed = Challenge.objects.filter(
            pk=challenge.pk, used_at__isnull=True, expires_at__gt=now
        ).update(used_at=now)
        if not claimed:
            challenge.refresh_from_db()
            raise _challenge_refusal(challenge, now) or ExchangeError(
                "NONCE_USED", "this challenge was already used", field="nonce"
            )
        held = LinkedWallet.objects.filter(
            address__iexact=checksummed, unlinked_at__isnull=True
        ).first()
        if held is not None:
            if held.trader_id == trader.pk:
                return held, False
            raise _linked_elsewhere()
        if _active_wallets(trader).count() >= settings.WALLETS_MAX:
            raise ExchangeError(
                "TOO_MANY_WALLETS",
                f"at most {settings.WALLETS_MAX} linked wallets; unlink one first",
                status_code=409,
            )
        try:
            with transaction.atomic():
                wallet = LinkedWallet.objects.create(trader=trader, address=checksummed)
        except IntegrityError:
            # Another trader linked it a moment ago: the unique constraint decides.
            raise _linked_elsewhere() from None
    return wallet, True


def _linked_elsewhere() -> ExchangeError:
    return ExchangeError(
        "WALLET_LINKED_ELSEWHERE",
        "this address is linked to another trader",
        field="address",
        status_code=409,
    )


def _active_wallets(trader: User):
    return LinkedWallet.objects.filter(trader=trader, unlinked_at__isnull=True)


def wallet_unlink(*, trader: User, address: str) -> LinkedWallet:
    checksummed = address_parse(address)
    with transaction.atomic():
        # The wallet row's lock orders us with withdrawal requests, which lock it too:
        # a withdrawal to it either committed before (and we refuse) or sees it gone.
        wallet = (
            _active_wallets(trader).select_for_update().filter(address__iexact=checksummed).first()
        )
        if wallet is None:
            raise NotFound("linked wallet")
        pending = Transfer.objects.filter(
            trader=trader,
            kind=TransferKind.WITHDRAWAL,
            status=TransferStatus.PENDING,
            address=wallet.address,
        ).exists()
        if pending:
            raise ExchangeError(
                "WALLET_HAS_PENDING_WITHDRAWAL",
                "a withdrawal to this address is pending",
                field="address",
                status_code=409,
            )
        wallet.unlinked_at = timezone.now()
        wallet.save(update_fields=["unlinked_at"])
    return wallet
