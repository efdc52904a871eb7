// A start-up failure an operator can act on: which component failed, what it tried, and which
// setting to change. The entry points print the message as it is; it carries no secrets.

export class StartupError extends Error {
  override name = 'StartupError';
  constructor(
    readonly component: string,
    readonly setting: string,
    message: string,
  ) {
    super(message);
  }
}

/** Pure: the listen failure `err` of `component` on host:port, phrased with the setting that fixes it. */
export function listenFailure(err: unknown, component: string, host: string, port: number, settings: { port: string; host: string }): Error {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const at = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  switch (code) {
    case 'EADDRINUSE':
      return new StartupError(component, settings.port, `${component} could not listen on ${at}: port in use; set ${settings.port} to a free port`);
    case 'EACCES':
      return new StartupError(component, settings.port, `${component} could not listen on ${at}: permission denied (ports below 1024 need privileges); set ${settings.port}`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new StartupError(component, settings.host, `${component} could not listen on ${at}: no such address on this machine; set ${settings.host}`);
    default:
      return err instanceof Error ? err : new Error(String(err));
  }
}

/** Whether listening on `host` keeps the server off the network. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
