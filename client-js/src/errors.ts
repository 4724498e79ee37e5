// Errors: what the promises returned by the client reject with.
//
// A request can fail three ways, and each has its own class so callers can
// branch with `instanceof`: the server answered `error` (ServerError, carrying
// the docs/protocol.md section 6 code), no answer came in time (TimeoutError), or
// the connection went away first (ConnectionClosedError).

/** Error codes carried by the server's `error` replies (docs/protocol.md section 6). */
export const ErrorCode = {
  Internal: 100,
  Unauthorized: 101,
  UnknownChannel: 102,
  PermissionDenied: 103,
  UnknownOp: 104,
  AlreadySubscribed: 105,
  LimitExceeded: 106,
  BadRequest: 107,
  NotAvailable: 108,
  TokenExpired: 109,
  TooManyRequests: 110,
} as const;

/** One of the values of `ErrorCode` (or a code a newer server added). */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode] | number;

/** Base class of every error the client produces. */
export class PushwireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
    // Keep `instanceof` working when compiled to ES5-style classes.
    Object.setPrototypeOf(this, new.target.prototype);
  }
}

/** The server answered a request with `error` {code, message}. */
export class ServerError extends PushwireError {
  /** The docs/protocol.md error code, e.g. `ErrorCode.PermissionDenied` (103). */
  readonly code: ErrorCodeValue;

  constructor(code: number, message: string) {
    super(message === '' ? `server error ${code}` : message);
    this.code = code;
  }

  /** Internal errors and rate limiting are worth retrying later; the rest are not. */
  get temporary(): boolean {
    return this.code === ErrorCode.Internal || this.code === ErrorCode.TooManyRequests;
  }
}

/** No reply arrived within the request timeout (`ClientOptions.timeout`). */
export class TimeoutError extends PushwireError {
  readonly timeoutMs: number;

  constructor(operation: string, timeoutMs: number) {
    super(`${operation} timed out after ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
  }
}

/** The connection closed (or `disconnect()` was called) before the reply arrived. */
export class ConnectionClosedError extends PushwireError {
  /** The close code that ended the connection, when known. */
  readonly closeCode: number | undefined;

  constructor(reason: string, closeCode?: number) {
    super(reason === '' ? 'connection closed' : reason);
    this.closeCode = closeCode;
  }
}
