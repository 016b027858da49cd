// TradeDashboard: wires the components to the REST API and the one WebSocket.
import { $, readJson, setText } from '../lib/dom.js';
import { get } from '../lib/api.js';
import { cmp, format, mul, sub, abs, divFloor } from '../lib/decimal.js';
import { OrderBookState } from '../lib/book.js';
import { ExchangeSocket } from '../lib/ws.js';
import { BrowserWallet } from '../lib/wallet.js';
import { triggerRises } from '../lib/validate.js';
import { money, percent, price, rate, registerMarkets, size } from '../lib/format.js';
import { Toaster } from '../components/toaster.js';
import { installTooltips } from '../components/tooltip.js';
import { OrderBook } from '../components/order_book.js';
import { RecentTrades } from '../components/recent_trades.js';
import { TradingChart } from '../components/trading_chart.js';
import { MarketInfoBar } from '../components/market_info_bar.js';
import { OrderEntry } from '../components/order_entry.js';
import { AccountPanel } from '../components/account_panel.js';
import { ModeSwitcher } from '../components/mode_switcher.js';
import { MarketSelector } from '../components/market_selector.js';
import { ConnectionStatus } from '../components/connection_status.js';
import { FaucetButton } from '../components/faucet_button.js';
import { WalletConnectButton } from '../components/wallet_connect.js';
import { WalletLinker } from '../components/wallet_linker.js';
import { DepositModal, WithdrawModal } from '../components/vault_modals.js';
import { TpslModal } from '../components/tpsl_modal.js';
import { CloseLimitModal } from '../components/close_limit_modal.js';
import { TradingLayout } from '../components/trading_layout.js';
import { Tabs } from '../components/tabs.js';

const GAP_RETRY_MS = 3000;

export const channelFor = (symbol, mode) => (mode === 'REAL' ? `market.${symbol}` : `market.${symbol}.paper`);

class TradeDashboard {
  constructor(config) {
    this.config = config;
    this.user = config.user;
    this.markets = config.markets;
    registerMarkets(this.markets);
    this.mode = config.mode;
    this.market = null;
    this.channel = null;
    this.linkedWallets = config.linkedWallets || [];
    this.stats = { snapshots: 0, deltas: 0, gaps: 0, resubscribes: 0, stale: 0 };
    this.meaningful = false;
    this.book = new OrderBookState();
    this.toaster = new Toaster($('#toaster'));
    installTooltips();
    this.layout = new TradingLayout($('#trade-layout'), $('#layout-tabs'));

    this.orderBook = new OrderBook($('#order-book'), {
      book: this.book,
      rows: window.matchMedia('(max-width: 767px)').matches ? 14 : 11,
      onPick: (px) => {
        this.entry.setPrice(px);
        if (this.layout.narrow.matches) this.layout.select('entry');
      },
    });
    this.trades = new RecentTrades($('#recent-trades'));
    // The book and the trades share their column: one shown at a time.
    this.depthTabs = new Tabs($('#depth-panel [role=tablist]'));
    this.depthTabs.addEventListener('select', (e) => {
      $('[data-book-tools]').hidden = e.detail !== 'book';
    });
    this.chart = new TradingChart($('#trading-chart'));
    this.info = new MarketInfoBar($('#market-info'));
    this.entry = new OrderEntry($('#order-entry'), {
      bestPrices: () => ({ bestBid: this.book.bestBid(), bestAsk: this.book.bestAsk() }),
      onPlaced: (order) => this.orderPlaced(order),
      // A refusal is said in the form itself (on its field), not again in a toast.
      onRejected: () => {},
    });
    this.modeSwitcher = new ModeSwitcher($('#mode-switcher'));
    this.modeSwitcher.set(this.mode);
    this.modeSwitcher.addEventListener('change', (e) => this.switchTo(this.market.symbol, e.detail));
    this.selector = new MarketSelector($('#market-selector'), this.markets);
    this.selector.addEventListener('change', (e) => this.switchTo(e.detail, this.mode));
    this.connection = new ConnectionStatus($('#conn-status'));

    if (this.user) this.initAccount();

    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    this.socket = new ExchangeSocket(`${scheme}://${location.host}/ws/`, {
      resumeSeq: (ch) => (ch === this.channel && this.book.seq !== null ? this.book.seq : null),
    });
    this.socket.addEventListener('status', (e) => this.onStatus(e.detail));
    this.socket.addEventListener('message', (e) => this.onMessage(e.detail));
    if (this.user) this.socket.subscribe(`trader.${this.user.traderId}`);

    window.addEventListener('popstate', () => {
      const m = location.pathname.match(/^\/trade\/([^/]+)\/?$/);
      const mode = new URLSearchParams(location.search).get('mode') === 'REAL' ? 'REAL' : 'PAPER';
      if (m) this.switchTo(decodeURIComponent(m[1]), mode, { push: false });
    });

    this.socket.connect();
    this.switchTo(config.market, this.mode, { push: false, first: true });
    if (config.depth) this.onDepth({ ...config.depth, snapshot: true, channel: this.channel });
  }

  initAccount() {
    const wallet = new BrowserWallet({ ethersUrl: this.config.ethersUrl, storageKey: `dex:wallet:${this.user.traderId}` });
    this.wallet = wallet;
    this.account = new AccountPanel($('#account-panel'), {
      toaster: this.toaster,
      onCancelled: (o) => this.orderEvent(o),
      onChange: () => this.drawLines(),
      onTpsl: (position, current, opener) => this.tpsl.open(position, this.mode, current, opener),
      onCloseLimit: (position, opener) => this.closeLimit.open(position, this.mode, opener),
    });
    this.closeLimit = new CloseLimitModal($('#close-limit-modal'), { toaster: this.toaster });
    this.tpsl = new TpslModal($('#tpsl-modal'), { toaster: this.toaster });
    new WalletConnectButton($('#wallet-connect'), { wallet, toaster: this.toaster });
    this.faucet = new FaucetButton([$('#faucet-button'), $('#faucet-button-balances')], {
      toaster: this.toaster,
      traderId: this.user.traderId,
      cooldownSeconds: this.config.faucetCooldown,
    });
    this.linker = new WalletLinker($('#wallet-linker'), { wallet, traderId: this.user.traderId, toaster: this.toaster });
    this.linker.addEventListener('linked', (e) => {
      if (!this.linkedWallets.includes(e.detail.address)) this.linkedWallets.push(e.detail.address);
    });
    this.deposit = new DepositModal($('#deposit-modal'), { toaster: this.toaster, wallet, traderId: this.user.traderId });
    this.withdraw = new WithdrawModal($('#withdraw-modal'), {
      toaster: this.toaster,
      balances: () => this.realBalances || [],
      wallets: () => this.linkedWallets,
      onLinkWallet: (opener) => this.linker.open(opener),
    });
    $('[data-action=deposit]').addEventListener('click', (e) => this.deposit.open(e.currentTarget));
    this.entry.addEventListener('fund', (e) => {
      if (e.detail.mode === 'REAL') this.deposit.open(e.detail.opener);
      else $('#faucet-button')?.click();
    });
    $('[data-action=withdraw]').addEventListener('click', async (e) => {
      const opener = e.currentTarget;
      try {
        this.realBalances = await get('balances', { mode: 'REAL' });
      } catch {
        this.realBalances = this.realBalances || [];
      }
      this.withdraw.open(opener);
    });
    $('[data-action=link-wallet]').addEventListener('click', (e) => this.linker.open(e.currentTarget));
    this.entry.addEventListener('leverage', (e) => {
      this.toaster.show({ title: `Leverage ${format(e.detail.leverage)}×`, message: `${e.detail.market} (${e.detail.mode})`, kind: 'info' });
    });
  }

  marketOf(symbol) {
    return this.markets.find((m) => m.symbol === symbol) || null;
  }

  async switchTo(symbol, mode, { push = true, first = false } = {}) {
    if (!this.marketOf(symbol)) return;
    const modeChanged = mode !== this.mode || first;
    if (!first && symbol === this.market?.symbol && !modeChanged) return;
    if (this.channel) this.socket.unsubscribe(this.channel);
    if (modeChanged && !first) {
      try {
        this.markets = await get('markets', { mode });
        registerMarkets(this.markets);
        this.selector.markets = this.markets;
      } catch {
        // Keep the previous figures; the ticker will bring fresh ones.
      }
    }
    this.mode = mode;
    this.market = { ...this.marketOf(symbol) };
    this.channel = channelFor(symbol, mode);
    this.book.reset();
    clearTimeout(this.gapTimer);
    this.modeSwitcher.set(mode);
    this.selector.set(symbol);
    this.info.setMarket(this.market);
    this.orderBook.setMarket(this.market);
    this.trades.setMarket(this.market);
    this.chart.setMarket(this.market, mode);
    this.drawLines();
    this.entry.setMarket(this.market, mode);
    document.body.dataset.mode = mode;
    for (const el of document.querySelectorAll('[data-mode-only]')) el.hidden = el.dataset.modeOnly !== mode;
    document.title = `${symbol} ${mode === 'PAPER' ? '(paper) ' : ''}· dexsite`;
    if (push) history.pushState({}, '', `/trade/${encodeURIComponent(symbol)}/?mode=${mode}`);
    // Subscribe first, then read the REST history: a trade printed in between arrives
    // on the socket and the merge drops the duplicate by id.
    this.socket.subscribe(this.channel);
    get(`markets/${encodeURIComponent(symbol)}/trades`, { mode, limit: 50 })
      .then((rows) => this.channel === channelFor(symbol, mode) && this.trades.load(rows))
      .catch(() => this.trades.load([]));
    if (this.account && modeChanged) this.loadAccount();
    else if (this.account) this.syncLeverage();
  }

  async loadAccount() {
    try {
      const data = await this.account.load(this.mode);
      if (!data) return;
      this.entry.setBalances(this.account.balances.rows);
      if (this.mode === 'REAL') this.realBalances = data.balances;
      this.syncLeverage();
      this.refreshPoints();
    } catch (err) {
      this.toaster.show({ title: 'Account data unavailable', message: err.message, kind: 'error' });
    }
  }

  syncLeverage() {
    const p = this.account.positions.rows.find((r) => r.market === this.market.symbol);
    this.entry.setLeverage(p ? p.leverage : null);
  }

  async refreshPoints() {
    if (this.mode !== 'PAPER') return;
    try {
      const me = await get('me');
      setText($('[data-field=paperPoints]'), money(me.paperPoints, { plus: true }));
      this.linkedWallets = me.linkedWallets;
    } catch {
      // paperPoints is a nicety; the balances still show.
    }
  }

  onStatus({ status, restored, delay }) {
    this.connection.set(status, { delay });
    if (status === 'reconnecting' && this.wasOpen) {
      this.wasOpen = false;
      this.toaster.show({ title: 'Connection lost', message: 'Reconnecting… prices may be stale.', kind: 'warning', timeout: 5000 });
    }
    if (status === 'open') {
      this.wasOpen = true;
      if (restored) {
        this.toaster.show({ title: 'Connection restored', message: 'Live again; the book resumed where it left off.', kind: 'success', timeout: 4000 });
        // Private events are not replayed: read the account again.
        if (this.account) this.loadAccount();
      }
    }
  }

  onMessage(msg) {
    const { type, channel } = msg;
    if (channel && channel.startsWith('trader.')) return this.onTraderMessage(msg);
    if (type === 'error') {
      if (msg.code !== 'UNKNOWN_CHANNEL') console.warn('socket error', msg);
      return;
    }
    if (channel !== this.channel) return;
    switch (type) {
      case 'depth':
        return this.onDepth(msg);
      case 'trade':
        this.trades.add(msg);
        this.chart.addTrade(msg);
        this.info.update({ lastPrice: msg.px });
        return;
      case 'ticker': {
        const { type: _t, channel: _c, ts: _ts, symbol: _s, mode: _m, ...patch } = msg;
        this.info.update(patch);
        Object.assign(this.market, patch);
        if (this.account && patch.markPrice) this.account.mark(this.market.symbol, patch.markPrice);
        return;
      }
      case 'funding':
        this.info.update({ fundingRate: msg.rate, nextFundingTs: msg.nextFundingTs });
        return;
      case 'optionIv':
        this.info.update({ markIv: msg.markIv, delta: msg.delta, gamma: msg.gamma, vega: msg.vega, theta: msg.theta });
        return;
      case 'marketState':
        this.market.status = msg.status;
        this.info.update({ status: msg.status });
        this.toaster.show({ title: `${msg.symbol} is ${msg.status.toLowerCase()}`, kind: msg.status === 'ACTIVE' ? 'info' : 'warning' });
        return;
      default:
    }
  }

  onDepth(msg) {
    const result = this.book.apply(msg);
    if (result === 'snapshot') this.stats.snapshots += 1;
    if (result === 'applied') this.stats.deltas += 1;
    if (result === 'stale') this.stats.stale += 1;
    if (result === 'gap') {
      this.stats.gaps += 1;
      if (!this.gapTimer) {
        // Ask for the deltas after the last good one; if none come, a fresh snapshot.
        this.stats.resubscribes += 1;
        this.socket.resubscribe(this.channel, this.book.seq);
        this.orderBook.setStatus('Resyncing…');
        this.gapTimer = setTimeout(() => {
          this.gapTimer = null;
          if (this.book.gap) {
            this.stats.resubscribes += 1;
            this.socket.resubscribe(this.channel);
          }
        }, GAP_RETRY_MS);
      }
      return;
    }
    if (result === 'snapshot' || result === 'applied') {
      if (this.gapTimer) {
        clearTimeout(this.gapTimer);
        this.gapTimer = null;
      }
      this.orderBook.setStatus('');
      this.orderBook.schedule();
      if (!this.meaningful && result === 'snapshot') {
        this.meaningful = true;
        // Two frames: the first paints the book, the second starts after that paint.
        requestAnimationFrame(() => requestAnimationFrame(() => performance.mark('dex:meaningful')));
      }
    }
  }

  onTraderMessage(msg) {
    if (!this.account) return;
    switch (msg.type) {
      case 'orderUpdate':
        this.account.orderUpdate(msg);
        if (msg.mode === this.mode) this.orderEvent(msg);
        return;
      case 'fill':
        this.account.fill(msg);
        if (msg.mode === this.mode) this.fillEvent(msg);
        return;
      case 'positionUpdate':
        this.account.positionUpdate(msg);
        if (msg.mode === this.mode) {
          if (msg.market === this.market.symbol && msg.leverage) this.entry.setLeverage(msg.leverage);
          this.liquidationWarning(msg);
        }
        return;
      case 'balanceUpdate':
        this.account.balanceUpdate(msg);
        if (msg.mode === this.mode) this.entry.setBalances(this.account.balances.rows);
        if (msg.mode === 'PAPER' && this.mode === 'PAPER') {
          // paperPoints move with every PAPER cash change; read them once things settle.
          clearTimeout(this.pointsTimer);
          this.pointsTimer = setTimeout(() => this.refreshPoints(), 1000);
        }
        if (msg.mode === 'REAL') {
          this.realBalances = (this.realBalances || []).filter((b) => b.asset !== msg.asset).concat([msg]);
        }
        return;
      case 'accountUpdate':
        this.account.accountUpdate(msg);
        return;
      case 'liquidation':
        this.toaster.show({
          title: `Liquidated: ${msg.market || 'position'}`,
          message: `${msg.mode || ''} position closed by the risk engine.`,
          kind: 'error',
          timeout: 12000,
        });
        return;
      case 'funding':
        if (msg.mode && msg.mode !== this.mode) return;
        this.toaster.show({ title: `Funding ${msg.market}`, message: `${money(msg.amount, { plus: true, dp: 4 })} USDC at rate ${rate(msg.rate)}`, kind: 'info' });
        return;
      default:
    }
  }

  /** The chart's lines: this market's open orders and triggers, the position's entry
   * and liquidation price. */
  drawLines() {
    if (!this.account || !this.market) return;
    const symbol = this.market.symbol;
    const lines = [];
    for (const o of this.account.orders.rows) {
      if (o.market !== symbol) continue;
      const type = o.orderType ?? o.type;
      if (o.triggerPrice) {
        const name = o.attached || (type.startsWith('STOP') ? 'Stop' : 'Take profit');
        lines.push({ key: `t${o.id}`, price: o.triggerPrice, title: `${name} ${size(o.qty, symbol)}`, kind: 'trigger' });
      } else if (o.price) {
        lines.push({ key: `o${o.id}`, price: o.price, title: `${o.side} ${size(o.qty, symbol)}`, kind: o.side === 'BUY' ? 'buy' : 'sell' });
      }
    }
    const p = this.account.positions.rows.find((x) => x.market === symbol);
    if (p && p.entryPrice) lines.push({ key: 'entry', price: p.entryPrice, title: `Entry ${p.side} ${size(p.size, symbol)}`, kind: 'entry' });
    if (p && p.liquidationPrice) lines.push({ key: 'liq', price: p.liquidationPrice, title: 'Liquidation', kind: 'liquidation' });
    this.chart.setLines(lines);
  }

  orderPlaced(order) {
    this.account?.orderUpdate(order);
    this.orderEvent(order);
    for (const f of order.fills || []) {
      this.account?.fill({ ...f, market: order.market, mode: order.mode });
      this.fillEvent({ ...f, market: order.market, mode: order.mode });
    }
  }

  orderEvent(o) {
    const what = `${o.side} ${size(o.qty, o.market)} ${o.market}${o.price ? ` @ ${price(o.price, o.market)}` : ''}`;
    // On the socket the message's `type` is the event's; the order's own is `orderType`.
    const type = o.orderType ?? o.type;
    if (o.status === 'UNTRIGGERED') {
      const rising = triggerRises(type, o.side);
      const by = o.triggerBy === 'LAST' ? 'the last trade' : 'the mark';
      const when = `when ${by} ${rising ? 'rises to' : 'falls to'} ${price(o.triggerPrice, o.market)}`;
      this.toaster.show({ key: `order:${o.id}:held`, title: `${type.replaceAll('_', ' ').toLowerCase()} placed`, message: `${what}, sent ${when}`, kind: 'success' });
    } else if (o.status === 'NEW') {
      this.toaster.show({ key: `order:${o.id}:accepted`, title: 'Order accepted', message: what, kind: 'success' });
    } else if (o.status === 'CANCELED') {
      const reason = o.cancelReason && o.cancelReason !== 'USER' ? ` (${o.cancelReason.toLowerCase().replace('_', ' ')})` : '';
      this.toaster.show({ key: `order:${o.id}:canceled`, title: 'Order cancelled', message: what + reason, kind: 'info' });
    } else if (o.status === 'REJECTED') {
      const why = o.cancelReason ? ` (${o.cancelReason.toLowerCase().replaceAll('_', ' ')})` : '';
      this.toaster.show({ key: `order:${o.id}:rejected`, title: 'Order rejected', message: what + why, kind: 'error' });
    }
  }

  fillEvent(f) {
    this.toaster.show({
      key: `fill:${f.id}`,
      title: 'Order filled',
      message: `${f.side} ${size(f.qty, f.market)} ${f.market} @ ${price(f.px, f.market)} (${(f.liquidity || '').toLowerCase()})`,
      kind: 'success',
    });
  }

  /** Warn once per position when the mark comes within 5 % of the liquidation price. */
  liquidationWarning(p) {
    if (!p.liquidationPrice || !p.markPrice || p.side === 'FLAT') return;
    const distance = divFloor(abs(sub(p.markPrice, p.liquidationPrice)), p.markPrice, 6);
    if (cmp(distance, '0.05') <= 0) {
      this.toaster.show({
        key: `liq:${p.mode}:${p.market}:${p.size}`,
        title: `Liquidation risk: ${p.market}`,
        message: `Mark ${price(p.markPrice, p.market)} is within ${percent(mul(distance, '100'), { dp: 1 })} of liquidation at ${price(p.liquidationPrice, p.market)}.`,
        kind: 'warning',
        timeout: 12000,
      });
    }
  }
}

const config = readJson('dex-config');
window.dex = new TradeDashboard(config);
