// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "./IERC20.sol";

/// The exchange's vault on the chain. Traders deposit ERC-20 tokens credited to their
/// trader id (the exchange's watcher reads the `Deposit` events); the exchange's
/// withdrawal signer, and no one else, pays withdrawals out, each withdrawal id at most
/// once, so that a signer that sends the same withdrawal twice (after a crash, say) pays
/// it once.
contract Vault {
    /// `traderId` is the trader's UUID as 16 bytes.
    event Deposit(address indexed token, address indexed from, bytes16 indexed traderId, uint256 amount);
    event Withdrawal(uint256 indexed withdrawalId, address indexed token, address indexed to, uint256 amount);
    event TokenListed(address indexed token, bool listed);
    event SignerChanged(address indexed signer);

    address public owner;
    address public withdrawalSigner;
    mapping(address => bool) public listed;
    mapping(uint256 => bool) public paid;

    error NotOwner();
    error NotSigner();
    error TokenNotListed();
    error ZeroAmount();
    error AlreadyPaid();
    error TransferFailed();

    constructor(address signer) {
        owner = msg.sender;
        withdrawalSigner = signer;
        emit SignerChanged(signer);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    function setToken(address token, bool isListed) external onlyOwner {
        listed[token] = isListed;
        emit TokenListed(token, isListed);
    }

    function setSigner(address signer) external onlyOwner {
        withdrawalSigner = signer;
        emit SignerChanged(signer);
    }

    /// Takes `amount` of `token` from the sender (approved beforehand) for `traderId`.
    /// The event carries what the vault received, which is what gets credited.
    function deposit(address token, uint256 amount, bytes16 traderId) external {
        if (!listed[token]) revert TokenNotListed();
        if (amount == 0) revert ZeroAmount();
        uint256 before = IERC20(token).balanceOf(address(this));
        _call(token, abi.encodeCall(IERC20.transferFrom, (msg.sender, address(this), amount)));
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        emit Deposit(token, msg.sender, traderId, received);
    }

    function withdraw(address token, address to, uint256 amount, uint256 withdrawalId) external {
        if (msg.sender != withdrawalSigner) revert NotSigner();
        if (paid[withdrawalId]) revert AlreadyPaid();
        if (amount == 0) revert ZeroAmount();
        paid[withdrawalId] = true;
        _call(token, abi.encodeCall(IERC20.transfer, (to, amount)));
        emit Withdrawal(withdrawalId, token, to, amount);
    }

    // Tokens that return nothing (older ones) and tokens that return a bool both work;
    // a false or a revert fails the whole call.
    function _call(address token, bytes memory data) private {
        if (token.code.length == 0) revert TransferFailed();
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }
}
