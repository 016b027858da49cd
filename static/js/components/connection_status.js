// The connection-status dot: live, connecting, reconnecting (with the wait), offline.
import { setText } from '../lib/dom.js';

const LABEL = { idle: 'Offline', connecting: 'Connecting…', open: 'Live', reconnecting: 'Reconnecting…', closed: 'Offline' };

export class ConnectionStatus {
  constructor(root) {
    this.root = root;
    this.label = root.querySelector('.label');
  }

  set(status, { delay = null } = {}) {
    this.root.dataset.status = status;
    const text = status === 'reconnecting' && delay ? `Reconnecting in ${Math.ceil(delay / 1000)}s` : LABEL[status] || status;
    setText(this.label, text);
    this.root.title = `Realtime connection: ${text}`;
  }
}
