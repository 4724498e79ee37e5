// Policy: what the client does after its connection ends.
//
// docs/protocol.md section 7 gives a close-code table; this module is that table in
// code, plus the same decision for `error` replies to `connect`. Everything the
// table does not name (1006 after a network drop, codes from newer servers) is
// treated as transient: reconnect with backoff and recover.

import { ErrorCode } from './errors.js';

/** What to do after a connection ends. */
export type ReconnectAction =
  /** Stay disconnected until the application calls `connect()` again. */
  | 'stop'
  /** Reconnect after the normal backoff, resubscribing with recovery. */
  | 'reconnect'
  /** Reconnect after the longer ("throttled") backoff. */
  | 'reconnect-throttled'
  /** Fetch a new connection token through `getToken`, then reconnect. */
  | 'refresh-token';

/** Close codes of docs/protocol.md section 7. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  MessageTooBig: 1009,
  ProtocolViolation: 4000,
  InvalidToken: 4001,
  TokenExpired: 4002,
  ConnectTimeout: 4004,
  PongTimeout: 4005,
  SlowConsumer: 4008,
  RateLimited: 4009,
  ConnectionLimit: 4010,
  DisconnectedByApi: 4011,
  BackendUnavailable: 4012,
} as const;

/**
 * Codes this client uses for endings it detects itself (3000-3999 is the
 * range RFC 6455 leaves to libraries). They appear in `connecting` and
 * `disconnected` events, never on the wire from the server.
 */
export const ClientCloseCode = {
  /** No `ping` from the server within ping_interval + pong_timeout. */
  NoPing: 3001,
  /** No `connected` reply within the request timeout. */
  ConnectTimeout: 3002,
  /** The server sent a frame this client could not decode. */
  BadFrame: 3003,
  /** The browser reported that the network went offline. */
  Offline: 3004,
  /** `getToken` returned no token: the application says the user is signed out. */
  Unauthorized: 3005,
  /** The server answered `connect` with an error other than 101 and 109. */
  ConnectRejected: 3006,
  /** The transport closed without a close frame (the 1006 of browsers). */
  TransportClosed: 1006,
} as const;

/**
 * The action after a close with `code`. `serverReconnect` is the `reconnect`
 * flag of a `disconnect` message received just before, if any: the server's
 * word wins over the table (the server sets it from the same table, and
 * `POST /api/disconnect` may say otherwise for any code). `false` stops;
 * `true` turns a stop into a reconnect and keeps the table's kind of
 * reconnect (token refresh, longer backoff) otherwise.
 */
export function actionForClose(code: number, serverReconnect?: boolean): ReconnectAction {
  const byTable = actionForCode(code);
  if (serverReconnect === false) return 'stop';
  if (serverReconnect === true && byTable === 'stop') return 'reconnect';
  return byTable;
}

/** The close-code table alone (no `disconnect` message, e.g. a lost close frame). */
function actionForCode(code: number): ReconnectAction {
  switch (code) {
    case CloseCode.Normal:
    case CloseCode.MessageTooBig:
    case CloseCode.ProtocolViolation:
    case CloseCode.InvalidToken:
    case ClientCloseCode.Unauthorized:
      return 'stop';
    case CloseCode.TokenExpired:
      return 'refresh-token';
    case CloseCode.RateLimited:
    case CloseCode.ConnectionLimit:
    case CloseCode.BackendUnavailable:
      return 'reconnect-throttled';
    case CloseCode.GoingAway:
    case CloseCode.DisconnectedByApi:
    case CloseCode.ConnectTimeout:
    case CloseCode.PongTimeout:
    case CloseCode.SlowConsumer:
      return 'reconnect';
    default:
      // Codes outside the table (network drops, newer servers): transient.
      return 'reconnect';
  }
}

/** The action after the server answered `connect` with `error` {code}. */
export function actionForConnectError(code: number): ReconnectAction {
  switch (code) {
    case ErrorCode.TokenExpired:
      return 'refresh-token';
    case ErrorCode.Unauthorized:
    case ErrorCode.PermissionDenied:
    case ErrorCode.BadRequest:
    case ErrorCode.UnknownOp:
      return 'stop';
    case ErrorCode.TooManyRequests:
    case ErrorCode.LimitExceeded:
      return 'reconnect-throttled';
    default:
      return 'reconnect';
  }
}

/** The close code reported for a connect that failed with `error` {code}. */
export function closeCodeForConnectError(code: number): number {
  switch (code) {
    case ErrorCode.TokenExpired:
      return CloseCode.TokenExpired;
    case ErrorCode.Unauthorized:
      return CloseCode.InvalidToken;
    default:
      return ClientCloseCode.ConnectRejected;
  }
}
