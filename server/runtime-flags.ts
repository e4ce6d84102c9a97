/**
 * Node.js flags the relay runs with in production (the bundle's #! line applies
 * them). A smaller young generation keeps the peak memory of a busy relay down:
 * messages stream through in short-lived buffers, and V8's default 16 MiB
 * semi-spaces let tens of MiB of them wait for a collection.
 */
export const RELAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8'];
