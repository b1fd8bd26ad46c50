// @medplum/core reads WebSocket.CLOSING while it loads; Node 20 has no global WebSocket.
// This module must be imported before anything that imports @medplum/core.
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = class WebSocketUnavailable {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor() {
      throw new Error('WebSocket is not available in the reference FHIR server');
    }
  };
}
