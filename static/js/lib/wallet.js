// The browser wallet (EIP-1193 window.ethereum) through ethers, loaded on first use so
// that the 500 kB library never delays the first paint.

let ethersModule = null;

export async function loadEthers(url) {
  ethersModule = ethersModule || (await import(url));
  return ethersModule;
}

export class BrowserWallet extends EventTarget {
  constructor({ ethersUrl, storageKey = 'dex:wallet' }) {
    super();
    this.ethersUrl = ethersUrl;
    this.storageKey = storageKey;
    this.address = null;
    this.signer = null;
    const eth = globalThis.ethereum;
    if (eth && typeof eth.on === 'function') {
      eth.on('accountsChanged', (accounts) => this.accountsChanged(accounts));
    }
  }

  get available() {
    return Boolean(globalThis.ethereum && typeof globalThis.ethereum.request === 'function');
  }

  async provider() {
    const { BrowserProvider } = await loadEthers(this.ethersUrl);
    return new BrowserProvider(globalThis.ethereum, 'any');
  }

  /** Reconnect silently if this browser connected before (eth_accounts never prompts). */
  async restore() {
    if (!this.available || !localStorage.getItem(this.storageKey)) return null;
    const accounts = await globalThis.ethereum.request({ method: 'eth_accounts' });
    if (accounts && accounts.length) return this.use(accounts[0]);
    return null;
  }

  async connect() {
    if (!this.available) throw new Error('No browser wallet found. Install one (an EIP-1193 provider) and try again.');
    const provider = await this.provider();
    const accounts = await provider.send('eth_requestAccounts', []);
    if (!accounts || !accounts.length) throw new Error('The wallet shared no account.');
    localStorage.setItem(this.storageKey, '1');
    return this.use(accounts[0]);
  }

  async use(account) {
    const provider = await this.provider();
    const { getAddress } = await loadEthers(this.ethersUrl);
    this.signer = await provider.getSigner(account);
    this.address = getAddress(account);
    this.dispatchEvent(new CustomEvent('change', { detail: this.address }));
    return this.address;
  }

  accountsChanged(accounts) {
    if (accounts && accounts.length) this.use(accounts[0]);
    else this.disconnect();
  }

  disconnect() {
    // EIP-1193 has no "disconnect": forget the account here; the wallet keeps its grant.
    localStorage.removeItem(this.storageKey);
    this.address = null;
    this.signer = null;
    this.dispatchEvent(new CustomEvent('change', { detail: null }));
  }

  /** EIP-191 personal_sign of `message`. */
  async sign(message) {
    if (!this.signer) await this.connect();
    return this.signer.signMessage(message);
  }
}
