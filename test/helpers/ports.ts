/** Loopback ports for tests. */
import net from 'node:net';

/** A port on 127.0.0.1 that nothing listens on (a port the kernel just handed out and took back): free to listen on. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A port on 127.0.0.1 with nothing listening: a connection there is refused, so delivery to it defers. */
export const closedPort = freePort;
