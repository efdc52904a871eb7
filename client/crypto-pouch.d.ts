// crypto-pouch 4.0.2 ships no types, and @types/crypto-pouch types the options argument wrongly
// (STACK-NOTES trap 1). Only the object form is declared, so the `ignore` list cannot be left out
// by accident.
declare module 'crypto-pouch' {
  interface CryptoPouchOptions {
    password: string;
    /** Top-level fields stored in clear next to the ciphertext. Always `['_revisions']` here. */
    ignore: string[];
  }
  const plugin: {
    crypto(this: PouchDB.Database, options: CryptoPouchOptions): Promise<void>;
    removeCrypto(this: PouchDB.Database): void;
  };
  export default plugin;
}
