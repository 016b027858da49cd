// The vault contract from the browser wallet: where to send (GET /api/v1/vault), the
// chain switch (EIP-3326, else EIP-3085 to add it), approve then deposit, and the
// confirmations the exchange waits for before it credits the deposit.
import { get } from './api.js';
import { loadEthers } from './wallet.js';

const TOKEN_ABI = [
  'function approve(address spender, uint256 amount) returns (bool)',
  'function allowance(address owner, address spender) view returns (uint256)',
];
const VAULT_ABI = ['function deposit(address token, uint256 amount, bytes16 traderId)'];

let info = null;

/** GET /api/v1/vault, once per page: `vaultAddress` is null where no chain is watched. */
export async function vaultInfo() {
  info = info || (await get('vault'));
  return info;
}

/** The trader id as the contract's bytes16. */
export function traderIdBytes(traderId) {
  const hex = traderId.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error('not a trader id');
  return `0x${hex.toLowerCase()}`;
}

export async function ensureChain(ethereum, vault) {
  const wanted = `0x${vault.chainId.toString(16)}`;
  const current = await ethereum.request({ method: 'eth_chainId' });
  if (current && current.toLowerCase() === wanted) return;
  try {
    await ethereum.request({ method: 'wallet_switchEthereumChain', params: [{ chainId: wanted }] });
  } catch (err) {
    // 4902: the wallet does not know this chain yet.
    if (err && (err.code === 4902 || err.data?.originalError?.code === 4902) && vault.rpcUrl) {
      await ethereum.request({
        method: 'wallet_addEthereumChain',
        params: [{ chainId: wanted, chainName: vault.chainName, rpcUrls: [vault.rpcUrl], nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 } }],
      });
    } else {
      throw err;
    }
  }
}

/**
 * Approve (if the allowance is short), then deposit. `onStep(name, detail)` reports
 * progress: chain, approve, approved, deposit, sent {hash}, mined {hash, block}.
 * Returns {hash, block}.
 */
export async function approveAndDeposit({ wallet, vault, asset, amount, traderId, onStep }) {
  const ethers = await loadEthers(wallet.ethersUrl);
  if (!wallet.signer) await wallet.connect();
  onStep('chain');
  await ensureChain(globalThis.ethereum, vault);
  // A fresh signer: the chain may have changed under the old one.
  await wallet.use(wallet.address);
  const spec = vault.assets.find((a) => a.asset === asset);
  if (!spec || !spec.token) throw new Error(`The vault takes no ${asset} on this chain.`);
  const units = ethers.parseUnits(amount, spec.decimals);
  const token = new ethers.Contract(spec.token, TOKEN_ABI, wallet.signer);
  const allowance = await token.allowance(wallet.address, vault.vaultAddress);
  if (allowance < units) {
    onStep('approve');
    const approval = await token.approve(vault.vaultAddress, units);
    await approval.wait();
  }
  onStep('approved');
  const contract = new ethers.Contract(vault.vaultAddress, VAULT_ABI, wallet.signer);
  onStep('deposit');
  const tx = await contract.deposit(spec.token, units, traderIdBytes(traderId));
  onStep('sent', { hash: tx.hash });
  const receipt = await tx.wait();
  if (!receipt || receipt.status !== 1) throw new Error('The deposit transaction failed on chain.');
  onStep('mined', { hash: tx.hash, block: receipt.blockNumber });
  return { hash: tx.hash, block: receipt.blockNumber };
}

/** Confirmations of a transaction mined in `block`: the blocks holding it, itself included. */
export function confirmationsOf(head, block) {
  return Math.max(0, head - block + 1);
}
