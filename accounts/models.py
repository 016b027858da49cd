"""Users, API keys (stored hashed), linked wallets and their sign-in challenges, vault
transfers (deposits and withdrawals).

Balances and the ledger are the `ledger` app's; the proxies of them at the end of this
module are the admin's views of them.
"""

import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from ledger.models import MONEY, Balance, LedgerEntry, Mode


class User(AbstractUser):
    trader_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # System accounts (fee collection, insurance fund) hold funds but never log in.
    is_system = models.BooleanField(default=False)
    last_faucet_at = models.DateTimeField(null=True, blank=True)
    # paperPoints count the PAPER ledger rows after this one: the trader's first faucet
    # credit, moved to the fresh credit by each paper reset. Null before any credit.
    paper_points_from = models.BigIntegerField(null=True, blank=True)
    # What the name looks like (accounts.usernames.username_key), kept by save(): a new
    # name whose key is taken would pass for someone else's.
    username_key = models.CharField(max_length=64, default="", editable=False)

    class Meta(AbstractUser.Meta):
        indexes = [models.Index(fields=["username_key"], name="user_username_key")]

    def save(self, *args, **kwargs) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "username" in update_fields:
            from accounts.usernames import username_key

            self.username_key = username_key(self.username)
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "username_key"}
        super().save(*args, **kwargs)


class ApiKeyScope(models.TextChoices):
    READ = "read"
    TRADE = "trade"
    WITHDRAW = "withdraw"


ALL_SCOPES = frozenset(ApiKeyScope.values)


class ApiKeySource(models.TextChoices):
    # Made by signup, /auth/token or `token_for`: full scope; only the newest few of
    # a trader are kept (see accounts.services.api_keys).
    LOGIN = "LOGIN"
    # Made by the trader through the API-keys endpoint; never revoked for them.
    USER = "USER"


class ApiKey(models.Model):
    """A bot's credential. Only the SHA-256 of the key is stored: the key itself is shown
    once, when it is made. A plain hash is enough because keys are 256 random bits, not
    passwords a dictionary could guess."""

    trader = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=64, blank=True, default="")
    # The first characters of the key, so that a trader can tell keys apart in a list.
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    # Space-separated subset of ApiKeyScope, e.g. "read trade".
    scopes = models.CharField(max_length=32)
    source = models.CharField(max_length=5, choices=ApiKeySource.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["trader", "source", "revoked_at"], name="apikey_trader")]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.scopes})"

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class LinkedWallet(models.Model):
    """An Ethereum address a trader proved to control by signing our challenge.
    Unlinking keeps the row (with `unlinked_at`) as the record of who held it when."""

    trader = models.ForeignKey(User, on_delete=models.PROTECT, related_name="wallets")
    # EIP-55 checksummed; compared case-insensitively through the constraint below.
    address = models.CharField(max_length=42)
    linked_at = models.DateTimeField(auto_now_add=True)
    unlinked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One address, one trader, whatever the letter case it was sent in.
            models.UniqueConstraint(
                Lower("address"),
                condition=Q(unlinked_at__isnull=True),
                name="wallet_address_unique",
            )
        ]
        indexes = [models.Index(fields=["trader", "unlinked_at"], name="wallet_trader")]

    def __str__(self) -> str:
        return self.address


class WalletChallenge(models.Model):
    """A sign-in message we issued: the signature must be over exactly this text, by a
    trader who asks before `expires_at`, once (`used_at`)."""

    trader = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    nonce = models.CharField(max_length=64, unique=True)
    # Set when the client named its address up front: the message carries it, and only
    # that address may answer.
    address = models.CharField(max_length=42, blank=True, default="")
    message = models.TextField()
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)


class TransferKind(models.TextChoices):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"


class TransferStatus(models.TextChoices):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"  # deposit credited
    APPROVED = "APPROVED"  # withdrawal sent
    REJECTED = "REJECTED"
    # Withdrawal approved by staff, being paid by the vault contract's signer; the
    # amount stays locked until the chain has paid it (then APPROVED) or staff decide
    # again (back to PENDING with a note).
    SENDING = "SENDING"


class Transfer(models.Model):
    """Money entering (deposit) or leaving (withdrawal) the exchange, REAL mode only.
    One table for both, so that a trader's history is one keyset-paginated list."""

    trader = models.ForeignKey(User, on_delete=models.PROTECT, related_name="transfers")
    kind = models.CharField(max_length=10, choices=TransferKind.choices)
    asset = models.CharField(max_length=16)
    mode = models.CharField(max_length=5, choices=Mode.choices, default=Mode.REAL)
    amount = models.DecimalField(**MONEY)
    status = models.CharField(
        max_length=9, choices=TransferStatus.choices, default=TransferStatus.PENDING
    )
    # Deposit: the incoming chain transaction. Withdrawal: the outgoing one, set by
    # staff on approval. Lower-case hex.
    tx_hash = models.CharField(max_length=66, null=True, blank=True)
    # Withdrawal: the linked address the funds go to (EIP-55).
    address = models.CharField(max_length=42, blank=True, default="")
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
            # One chain transaction is one deposit; an outgoing hash pays one withdrawal.
            models.UniqueConstraint(
                fields=["kind", "tx_hash"],
                condition=Q(tx_hash__isnull=False),
                name="transfer_tx_hash_unique",
            ),
            models.CheckConstraint(
                condition=~Q(status=TransferStatus.APPROVED) | Q(tx_hash__isnull=False),
                name="transfer_approved_has_tx",
            ),
        ]
        indexes = [
            models.Index(fields=["trader", "-id"], name="transfer_trader"),
            models.Index(
                fields=["trader", "asset", "mode"],
                condition=Q(kind="WITHDRAWAL", status="PENDING"),
                name="transfer_pending_withdrawals",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.asset} ({self.status})"


class ChainDeployment(models.Model):
    """The vault and token contracts on one chain, as `manage.py chain_deploy` deployed
    or recorded them; the newest row of a chain is the one in use. It also holds the
    watcher's cursor: every block up to `scanned_block` is final and its deposits are
    credited."""

    chain_id = models.PositiveBigIntegerField()
    vault = models.CharField(max_length=42)
    # asset -> {"address": EIP-55 address, "decimals": int}
    tokens = models.JSONField(default=dict)
    signer = models.CharField(max_length=42)
    deployed_block = models.PositiveBigIntegerField()
    scanned_block = models.PositiveBigIntegerField()
    # The hash of `scanned_block` when it was scanned: another hash there later means
    # a reorganisation deeper than the confirmations, which the watcher stops at.
    scanned_hash = models.CharField(max_length=66)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["chain_id", "-id"], name="chaindeployment_chain")]

    def __str__(self) -> str:
        return f"vault {self.vault} on chain {self.chain_id}"

    def asset_of(self, token: str) -> str | None:
        for asset, spec in self.tokens.items():
            if spec["address"].lower() == token.lower():
                return asset
        return None


class ChainDepositStatus(models.TextChoices):
    SEEN = "SEEN"  # in a block not yet final: shown, never credited
    CREDITED = "CREDITED"  # final, credited once (its transfer)
    HELD = "HELD"  # final, but no such trader (or an amount the ledger cannot hold)
    DROPPED = "DROPPED"  # seen, then gone from the chain by a reorganisation


class ChainDeposit(models.Model):
    """One `Deposit` event of the vault contract. The unique key (deployment, tx hash,
    log index) makes each event credited at most once, whoever reads it how often."""

    deployment = models.ForeignKey(ChainDeployment, on_delete=models.PROTECT, related_name="+")
    tx_hash = models.CharField(max_length=66)
    log_index = models.PositiveIntegerField()
    block_number = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=66)
    token = models.CharField(max_length=42)
    asset = models.CharField(max_length=16, blank=True, default="")
    sender = models.CharField(max_length=42)
    # The trader id the event names: anyone may name any id, so it is looked up, not
    # trusted to exist.
    trader_ref = models.UUIDField()
    units = models.DecimalField(max_digits=78, decimal_places=0)  # the token's integer units
    status = models.CharField(max_length=8, choices=ChainDepositStatus.choices)
    transfer = models.OneToOneField(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="chain_deposit"
    )
    note = models.CharField(max_length=200, blank=True, default="")
    seen_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "tx_hash", "log_index"], name="chaindeposit_log_unique"
            )
        ]
        indexes = [
            models.Index(fields=["deployment", "status", "block_number"], name="chaindeposit_open")
        ]

    def __str__(self) -> str:
        return f"{self.tx_hash}#{self.log_index} ({self.status})"


class DepositManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(kind=TransferKind.DEPOSIT)


class WithdrawalManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(kind=TransferKind.WITHDRAWAL)


class Deposit(Transfer):
    """The deposits among transfers, for the admin."""

    objects = DepositManager()

    class Meta:
        proxy = True


class Withdrawal(Transfer):
    """The withdrawals among transfers, for the admin."""

    objects = WithdrawalManager()

    class Meta:
        proxy = True


class SystemBalance(Balance):
    """Balances of the system accounts (fees, insurance fund), for the admin."""

    class Meta:
        proxy = True
        verbose_name = "fee and insurance balance"


class SolvencyReport(LedgerEntry):
    """No rows of its own: the admin's solvency panel hangs off it so that the admin
    index links to it and its view permission guards it."""

    class Meta:
        proxy = True
        verbose_name = "solvency report"
        verbose_name_plural = "solvency report"
