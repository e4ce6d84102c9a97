/** Loopback ports for tests. */
import net from 'node:net';

/** A port on 127.0.0.1 with nothing listening: a connection there is refused, so delivery to it defers. */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
