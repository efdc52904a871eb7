import { readConfig } from '../../scripts/config.ts';
import { startStack, type Stack, type StackOptions } from '../../scripts/stack.ts';
import { tempDir, TEST_NATS_URL, type TempDir } from './services.ts';

export interface TestStack extends Stack {
  url: string;
  dir: TempDir;
  /** A dev-IdP access token. */
  login(username: string, tenant: string): Promise<string>;
  stop(): Promise<void>;
}

/** The whole of Ferry in this process, on embedded defaults in a temp dir, on free ports. */
export async function startTestStack(opts: StackOptions & { env?: Record<string, string> } = {}): Promise<TestStack> {
  const dir = tempDir('ferry-stack-');
  const config = readConfig({
    FERRY_DATA_DIR: dir.path,
    FERRY_PORT: '0',
    FERRY_HOST: '127.0.0.1',
    FERRY_REGISTRATION_PORT: '0',
    NATS_URL: TEST_NATS_URL,
    ...opts.env,
  });
  let stack: Stack;
  try {
    stack = await startStack(config, opts);
  } catch (err) {
    dir.remove();
    throw err;
  }
  const url = stack.url!;
  return {
    ...stack,
    url,
    dir,
    async login(username, tenant) {
      const res = await fetch(`${url}/auth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password: 'ferry-dev', tenant }),
      });
      if (res.status !== 200) throw new Error(`login failed: ${res.status}`);
      return ((await res.json()) as { access_token: string }).access_token;
    },
    async stop() {
      await stack.close();
      dir.remove();
    },
  };
}
