// The one error type the device library throws. Expected outcomes (validation failures, conflicts,
// "there are unsynced mutations") are returned as tagged unions instead; this is for misuse and
// for states the caller has to handle before going on (wrong passphrase, locked store).

export type ClientErrorCode =
  | 'WRONG_PASSPHRASE'
  | 'LOCKED'
  | 'CLOSED'
  | 'INVALID_ARGUMENT'
  | 'KEYRING_CORRUPT';

const MESSAGES: Record<ClientErrorCode, string> = {
  WRONG_PASSPHRASE: 'The passphrase does not unlock this device store. Nothing was changed.',
  LOCKED: 'The device store is locked; unlock it with the passphrase first.',
  CLOSED: 'The session is closed.',
  INVALID_ARGUMENT: 'An argument is not valid for this call.',
  KEYRING_CORRUPT: 'The device keyring is unreadable. Nothing was changed.',
};

export class ClientError extends Error {
  readonly code: ClientErrorCode;

  constructor(code: ClientErrorCode, message?: string) {
    super(message ?? MESSAGES[code]);
    this.name = 'ClientError';
    this.code = code;
  }
}

export function isClientError(err: unknown, code?: ClientErrorCode): err is ClientError {
  return err instanceof ClientError && (code === undefined || err.code === code);
}
